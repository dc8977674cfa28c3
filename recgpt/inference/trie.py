"""A prefix trie over the catalogue's tokenized item lines, for decoding that can only produce real items."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    item: str | None = None  # the item whose line ends here
    count: int = 0  # items whose line ends at or below this node


@dataclass(frozen=True)
class Exclusion:
    """Items a decoder must not produce, with how many of them end below each trie node (``ItemTrie.exclude``)."""

    items: frozenset[str]
    below: Counter[int]


class ItemTrie:
    """Token sequences of item lines; ``allowed(prefix)`` says which tokens keep a prefix inside the catalogue.

    Excluded items prune their branches: a token is allowed only where some item that is not excluded lies
    below it, so a constrained beam never walks into a dead end (a prefix only seen items continue).

    Args:
        items: ``(item_id, token_ids)`` pairs, the ids of each item's line as a response (no EOS).
        eos_id: The end-of-sequence token, allowed where an item's line is complete.

    Example:
        >>> trie = ItemTrie([("a", [5, 6]), ("b", [5, 7]), ("c", [5, 6, 8])], eos_id=0)
        >>> trie.allowed([]), trie.allowed([5]), sorted(trie.allowed([5, 6])), trie.allowed([9])
        ([5], [6, 7], [0, 8], [])
        >>> trie.item([5, 6]), trie.allowed([5, 6], exclude={"a"}), trie.allowed([5], exclude={"a", "c"})
        ('a', [8], [7])
    """

    def __init__(self, items: Sequence[tuple[str, Sequence[int]]], eos_id: int) -> None:
        self.root = _Node()
        self.eos_id = eos_id
        self.paths: dict[str, list[_Node]] = {}
        self.depth = max((len(tokens) for _, tokens in items), default=0)  # the longest item line, in tokens
        for item_id, tokens in items:
            path = [self.root]
            for token in tokens:
                path.append(path[-1].children.setdefault(token, _Node()))
            if path[-1].item is None and item_id not in self.paths:  # identical lines were merged; keep the first
                path[-1].item = item_id
                self.paths[item_id] = path
                for node in path:
                    node.count += 1

    def __len__(self) -> int:
        return len(self.paths)

    def exclude(self, item_ids: Collection[str]) -> Exclusion:
        """Precompute an exclusion once per user; ``allowed`` then costs no more than without one."""
        below: Counter[int] = Counter()
        known = frozenset(item for item in item_ids if item in self.paths)
        for item in known:
            below.update(id(node) for node in self.paths[item])
        return Exclusion(known, below)

    def _walk(self, prefix: Sequence[int]) -> _Node | None:
        node: _Node | None = self.root
        for token in prefix:
            node = node.children.get(token) if node is not None else None
            if node is None:
                return None
        return node

    def allowed(self, prefix: Sequence[int], exclude: Exclusion | Collection[str] = ()) -> list[int]:
        """Tokens that continue ``prefix`` toward an item not excluded; EOS where such an item ends."""
        node = self._walk(prefix)
        if node is None:
            return []
        exclusion = exclude if isinstance(exclude, Exclusion) else self.exclude(exclude)
        below = exclusion.below
        tokens = [token for token, child in node.children.items() if child.count > below[id(child)]]
        if node.item is not None and node.item not in exclusion.items:
            tokens.append(self.eos_id)
        return tokens

    def barred(self, prefix: Sequence[int], exclude: Exclusion) -> list[int]:
        """Tokens that would take ``prefix`` only toward excluded items (EOS where an excluded item ends).

        What free decoding bars to stay off the excluded items while staying free elsewhere; a prefix outside
        the catalogue bars nothing.

        Example:
            >>> trie = ItemTrie([("a", [5, 6]), ("b", [5, 7]), ("c", [5, 6, 8])], eos_id=0)
            >>> seen = trie.exclude({"a", "c"})
            >>> trie.barred([5], seen), trie.barred([5, 6], seen), trie.barred([9], seen)
            ([6], [8, 0], [])
        """
        node = self._walk(prefix)
        if node is None:
            return []
        below = exclude.below
        tokens = [token for token, child in node.children.items() if child.count == below[id(child)]]
        if node.item is not None and node.item in exclude.items:
            tokens.append(self.eos_id)
        return tokens

    def item(self, tokens: Sequence[int]) -> str | None:
        """The item whose line is exactly ``tokens``, if any."""
        node = self._walk(tokens)
        return node.item if node is not None else None
