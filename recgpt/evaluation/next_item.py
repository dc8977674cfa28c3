"""Next-item prediction by a language model, three ways, each giving a ranked list of catalogue items per user.

- ``beam_grounded`` (RecGPT's protocol): free beam search; each beam's text is mapped to its most similar
  catalogue item (sentence embeddings, FAISS inner product); beams that map to one item count once.
- ``constrained_beam``: beam search restricted by a prefix trie of the catalogue's item lines, so every beam is a
  real item, and seen items are never completed.
- ``likelihood``: candidate items' lines (the full catalogue, or the target and sampled items) are ranked by
  their log-probability after the prompt (an exact top-K search over the catalogue's token tree).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from recgpt.encoding import encode_response, fit_prompt
from recgpt.evaluation.grounding import CatalogIndex
from recgpt.inference.decoding import Allowed, Barred, Beam, beam_search, score_candidates
from recgpt.inference.generate import context_length
from recgpt.inference.tree import CandidateTree, top_k_tree, tree_supported
from recgpt.inference.trie import ItemTrie

METHODS = ("beam_grounded", "constrained_beam", "likelihood")


@dataclass
class Ranking:
    """One user's ranked items and what it took to get them.

    Attributes:
        items: Catalogue item ids, best first, without repeats.
        generated: The decoded beams (empty for likelihood ranking).
        ungrounded: Beams whose text is not exactly an item's line (they needed embedding search, or, when
            constrained, ran out of tokens before ending an item).
        duplicates: Beams that landed on an item already in the list.
    """

    items: list[str]
    generated: list[str] = field(default_factory=list)
    ungrounded: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class Catalogue:
    """The items a benchmark ranks: ids, identifying lines, and those lines as response token ids."""

    item_ids: list[str]
    texts: list[str]
    tokens: list[list[int]]

    @classmethod
    def build(cls, item_ids: Sequence[str], texts: Sequence[str], tokenizer: Any) -> Catalogue:
        """Tokenize every item line as a response is tokenized (no special tokens, EOS excluded)."""
        tokens = [ids[:-1] for ids in (encode_response(tokenizer, text) for text in texts)]
        return cls(list(item_ids), list(texts), tokens)

    def with_eos(self, eos_id: int) -> list[list[int]]:
        """Each item line's ids followed by EOS: the continuations likelihood ranking scores."""
        return [[*tokens, eos_id] for tokens in self.tokens]

    def trie(self, eos_id: int) -> ItemTrie:
        """The prefix trie of the item lines, for constrained decoding."""
        return ItemTrie(list(zip(self.item_ids, self.tokens, strict=True)), eos_id)


def _prompts(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], max_new_tokens: int) -> list[list[int]]:
    budget = context_length(model) - max_new_tokens
    return [fit_prompt(tokenizer, row["prompt"], budget)[0] for row in rows]


def _batches(count: int, size: int) -> Sequence[range]:
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def ground_beams(texts: Sequence[str], index: CatalogIndex, exclude: set[str]) -> Ranking:
    """Map beam texts (best first) to their nearest allowed items; an item reached twice counts once, at its
    better rank, so a list may hold fewer items than beams.

    Example:
        Beams ``["Title: Heat (1995)", "Title: Heat", "Title: Fargo (1996)"]`` ground to ``[heat, heat, fargo]``
        and rank ``[heat, fargo]``, with one ungrounded beam (``Title: Heat`` needed a search) and one duplicate.
    """
    grounded = index.ground(texts, exclude=exclude) if texts else []
    items = list(dict.fromkeys(item for item, _ in grounded))
    return Ranking(items, list(texts), sum(text not in index.exact for text in texts), len(grounded) - len(items))


def _beam_batches(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    *,
    num_beams: int,
    max_new_tokens: int,
    batch_size: int,
    allowed_for: Callable[[range], Allowed] | None = None,
    barred_for: Callable[[range], Barred] | None = None,
    use_tree: bool | None = None,
) -> Iterator[tuple[range, list[list[Beam]]]]:
    """Beam search over the rows' prompts in batches: each batch's row indices and its prompts' beams."""
    prompts = _prompts(model, tokenizer, rows, max_new_tokens)
    for batch in _batches(len(rows), batch_size):
        yield (
            batch,
            beam_search(
                model,
                [prompts[i] for i in batch],
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                eos_id=tokenizer.eos_token_id,
                pad_id=tokenizer.pad_token_id,
                allowed=allowed_for(batch) if allowed_for is not None else None,
                barred=barred_for(batch) if barred_for is not None else None,
                use_tree=use_tree,
            ),
        )


def beam_grounded(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    index: CatalogIndex,
    excluded: Sequence[set[str]],
    *,
    num_beams: int,
    max_new_tokens: int,
    batch_size: int,
    catalogue: Catalogue | None = None,
    progress: Callable[[int], None] | None = None,
    use_tree: bool | None = None,
) -> list[Ranking]:
    """RecGPT's protocol: free beams, each grounded to its nearest allowed catalogue item.

    ``use_tree`` is ``beam_search``'s (None: beams grow as a token tree where the model allows it).

    With ``catalogue``, a beam may not spell its way into one of the row's excluded items (its seen items under
    ``exclude_seen``): a token that only excluded items' lines continue is barred (``ItemTrie.barred``). Such a
    beam would only be thrown away after the search, and a model that repeats its history loses much of its
    width to them (about 4 of 10 beams on the demo's model). The beams stay free text otherwise.
    """
    barred_for: Callable[[range], Barred] | None = None
    if catalogue is not None:
        trie = catalogue.trie(tokenizer.eos_token_id)

        def bar_seen(batch: range) -> Barred:
            exclusions = [trie.exclude(excluded[i]) for i in batch]
            return lambda row, prefix: trie.barred(prefix, exclusions[row])

        barred_for = bar_seen

    rankings: list[Ranking] = []
    decoded = _beam_batches(
        model,
        tokenizer,
        rows,
        num_beams=num_beams,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        barred_for=barred_for,
        use_tree=use_tree,
    )
    for batch, beams in decoded:
        for row, found in zip(batch, beams, strict=True):
            texts = [tokenizer.decode(beam.tokens, skip_special_tokens=True).strip() for beam in found]
            rankings.append(ground_beams(texts, index, excluded[row]))
        if progress is not None:
            progress(len(rankings))
    return rankings


def constrained_beam(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    trie: ItemTrie,
    excluded: Sequence[set[str]],
    *,
    num_beams: int,
    max_new_tokens: int,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> list[Ranking]:
    """Beam search that can only spell catalogue items (and never completes an excluded one).

    ``max_new_tokens`` is raised to the longest item line plus EOS: a constrained beam can only be cut off, never
    finish as something else, before then.
    """

    def allowed_for(batch: range) -> Allowed:
        exclusions = [trie.exclude(excluded[i]) for i in batch]
        return lambda row, prefix: trie.allowed(prefix, exclusions[row])

    rankings: list[Ranking] = []
    decoded = _beam_batches(
        model,
        tokenizer,
        rows,
        num_beams=num_beams,
        max_new_tokens=max(max_new_tokens, trie.depth + 1),
        batch_size=batch_size,
        allowed_for=allowed_for,
    )
    for _, beams in decoded:
        for found in beams:
            named = [trie.item(beam.tokens) for beam in found]
            items = list(dict.fromkeys(item for item in named if item is not None))
            texts = [tokenizer.decode(beam.tokens, skip_special_tokens=True).strip() for beam in found]
            ungrounded = sum(item is None for item in named)
            rankings.append(Ranking(items, texts, ungrounded, len(named) - ungrounded - len(items)))
        if progress is not None:
            progress(len(rankings))
    return rankings


def likelihood(
    model: Any,
    tokenizer: Any,
    rows: Sequence[dict[str, Any]],
    catalogue: Catalogue,
    excluded: Sequence[set[str]],
    *,
    candidates: int | None,
    depth: int,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> list[Ranking]:
    """Rank items by the summed log-probability of their line plus EOS after the prompt (the most probable first).

    On MPT models the catalogue's lines form one token tree (``recgpt.inference.tree``): shared prefixes are
    computed once, and an exact best-first search runs only the branches that can still reach the top
    ``depth``; other models score every candidate on the prompt's cache (``score_candidates``). Both give the
    same ranking.

    Args:
        candidates: None ranks the full catalogue; N ranks the target and N - 1 items sampled (seeded) from the
            rest, a cheaper and easier metric, reported under its own name.
        depth: How many items of each ranking to keep (the largest K).
    """
    prompts = _prompts(model, tokenizer, rows, max(len(t) for t in catalogue.tokens) + 1)
    position = {item_id: index for index, item_id in enumerate(catalogue.item_ids)}
    lines = catalogue.with_eos(tokenizer.eos_token_id)
    fallback = tree_supported(model)
    full_tree = CandidateTree.build(lines) if fallback is None and candidates is None else None
    rng = random.Random(seed)
    rankings = []
    for number, (row, prompt) in enumerate(zip(rows, prompts, strict=True), start=1):
        allowed = [i for i, item_id in enumerate(catalogue.item_ids) if item_id not in excluded[number - 1]]
        if candidates is not None:
            target = position.get(row["target_item_id"])
            others = [i for i in allowed if i != target]
            allowed = ([target] if target is not None else []) + rng.sample(others, min(len(others), candidates - 1))
        if full_tree is not None:
            mask = torch.zeros(len(lines), dtype=torch.bool)
            mask[allowed] = True
            order = [i for i, _ in top_k_tree(model, prompt, full_tree, depth, mask)]
        elif fallback is None:
            found = top_k_tree(model, prompt, CandidateTree.build([lines[i] for i in allowed]), depth)
            order = [allowed[j] for j, _ in found]
        else:
            scores = score_candidates(model, prompt, [lines[i] for i in allowed], pad_id=tokenizer.pad_token_id)
            order = [allowed[j] for j in sorted(range(len(allowed)), key=lambda j: -scores[j])[:depth]]
        rankings.append(Ranking([catalogue.item_ids[i] for i in order]))
        if progress is not None:
            progress(number)
    return rankings
