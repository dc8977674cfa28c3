"""A prefix trie over the catalogue's tokenized item lines, for decoding that can only produce real items."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field


@dataclass
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    item: str | None = None  # the item whose line ends here


class ItemTrie:
    """Token sequences of item lines; ``allowed(prefix)`` says which tokens keep a prefix inside the catalogue.

    Args:
        items: ``(item_id, token_ids)`` pairs, the ids of each item's line as a response (no EOS).
        eos_id: The end-of-sequence token, allowed where an item's line is complete.

    Example:
        >>> trie = ItemTrie([("a", [5, 6]), ("b", [5, 7]), ("c", [5, 6, 8])], eos_id=0)
        >>> trie.allowed([]), trie.allowed([5]), sorted(trie.allowed([5, 6])), trie.allowed([9])
        ([5], [6, 7], [0, 8], [])
        >>> trie.item([5, 6]), trie.allowed([5, 6], exclude={"a"})
        ('a', [8])
    """

    def __init__(self, items: Sequence[tuple[str, Sequence[int]]], eos_id: int) -> None:
        self.root = _Node()
        self.eos_id = eos_id
        for item_id, tokens in items:
            node = self.root
            for token in tokens:
                node = node.children.setdefault(token, _Node())
            if node.item is None:  # identical lines were merged at data preparation; keep the first
                node.item = item_id

    def _walk(self, prefix: Sequence[int]) -> _Node | None:
        node: _Node | None = self.root
        for token in prefix:
            node = node.children.get(token) if node is not None else None
            if node is None:
                return None
        return node

    def allowed(self, prefix: Sequence[int], exclude: Collection[str] = ()) -> list[int]:
        """Tokens that continue ``prefix`` toward some item; EOS where an item not in ``exclude`` ends."""
        node = self._walk(prefix)
        if node is None:
            return []
        tokens = list(node.children)
        if node.item is not None and node.item not in exclude:
            tokens.append(self.eos_id)
        return tokens

    def item(self, tokens: Sequence[int]) -> str | None:
        """The item whose line is exactly ``tokens``, if any."""
        node = self._walk(tokens)
        return node.item if node is not None else None
