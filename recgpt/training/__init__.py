"""llm-foundry components registered by entry points, and the launcher behind scripts/train.py."""
