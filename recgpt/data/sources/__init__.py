"""Source adapters: each reads one published dump format into canonical ``Item`` and ``Interaction`` records."""
