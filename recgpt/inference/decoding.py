"""Batched decoding on a shared prompt cache: beam search (free or catalogue-constrained) and candidate scoring.

Each prompt is run through the model once; its key/value cache is then copied to every beam or candidate that
continues it, so ten beams or a thousand candidate items cost their own tokens only, never the prompt again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# allowed(row, generated) -> token ids allowed next, or None for any; row indexes the prompt batch.
Allowed = Callable[[int, list[int]], list[int] | None]
# barred(row, generated) -> token ids forbidden next.
Barred = Callable[[int, list[int]], list[int]]


@dataclass(frozen=True)
class Beam:
    """A finished hypothesis: its tokens (EOS excluded), summed log-probability and length (EOS included), which
    is how Hugging Face's beam scorer normalises (its scores and ours agree on the same hypotheses)."""

    tokens: list[int]
    logprob: float
    length: int

    @property
    def score(self) -> float:
        """Length-normalised log-probability, how beams are ranked (Hugging Face's default, length penalty 1)."""
        return self.logprob / max(1, self.length)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token rows into ``input_ids`` and ``attention_mask``."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(list(row), dtype=torch.long)
        mask[index, width - len(row) :] = 1
    return ids, mask


def select_cache(past: Any, index: torch.Tensor) -> Any:
    """The cache rows ``index`` (repeats allowed): how beams and candidates copy their prompt's cache."""
    if hasattr(past, "reorder_cache"):  # a transformers Cache object
        past.reorder_cache(index)
        return past
    return [tuple(tensor.index_select(0, index.to(tensor.device)) for tensor in layer) for layer in past]


def forward(model: Any, ids: torch.Tensor, mask: torch.Tensor, past: Any = None) -> tuple[torch.Tensor, Any]:
    """Last-position log-probabilities and the updated cache."""
    output = model(
        input_ids=ids.to(model.device), attention_mask=mask.to(model.device), past_key_values=past, use_cache=True
    )
    return torch.log_softmax(output.logits[:, -1, :].float(), dim=-1), output.past_key_values


def restrict(logprobs: torch.Tensor, permitted: Sequence[list[int] | None]) -> torch.Tensor:
    """``logprobs`` with every token outside each row's permitted list set to -inf (None permits all)."""
    masked = torch.full_like(logprobs, -math.inf)
    rows = [r for r, tokens in enumerate(permitted) for _ in (tokens if tokens is not None else ())]
    columns = [t for tokens in permitted if tokens is not None for t in tokens]
    if rows:
        r = torch.tensor(rows, dtype=torch.long, device=logprobs.device)
        c = torch.tensor(columns, dtype=torch.long, device=logprobs.device)
        masked[r, c] = logprobs[r, c]
    free = [r for r, tokens in enumerate(permitted) if tokens is None]
    if free:
        masked[free] = logprobs[free]
    return masked


def bar(logprobs: torch.Tensor, forbidden: Sequence[list[int]]) -> torch.Tensor:
    """``logprobs`` with each row's ``forbidden`` tokens set to -inf (in place)."""
    rows = [row for row, tokens in enumerate(forbidden) for _ in tokens]
    if rows:
        logprobs[rows, [token for tokens in forbidden for token in tokens]] = -math.inf
    return logprobs


def beam_options(logprobs: torch.Tensor, totals: Sequence[float], num_beams: int) -> list[list[tuple[float, int, int]]]:
    """Each live beam's ``2 * num_beams`` best continuations as ``(summed log-prob, token, live position)``, best
    first; tokens masked to -inf (not allowed, barred) are left out."""
    values, indices = torch.topk(logprobs, min(logprobs.shape[-1], 2 * num_beams), dim=-1)
    return [
        [
            (total + value, token, position)
            for value, token in zip(row_values, row_indices, strict=True)
            if value != -math.inf
        ]
        for position, (total, row_values, row_indices) in enumerate(
            zip(totals, values.tolist(), indices.tolist(), strict=True)
        )
    ]


def beam_search(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    allowed: Allowed | None = None,
    barred: Barred | None = None,
    use_tree: bool | None = None,
) -> list[list[Beam]]:
    """Beam search for a batch of prompts; returns each prompt's finished beams, best first (at most ``num_beams``).

    Each step extends every live beam by its best next tokens (only ``allowed`` ones when given: a catalogue trie
    keeps every beam a prefix of a real item) and keeps a prompt's ``num_beams`` best continuations; a beam that
    emits EOS is finished. ``barred`` names tokens a beam may not take (free beams use it to stay off the user's
    seen items, which ``exclude_seen`` would only throw away after the search). A prompt stops once it has
    ``num_beams`` finished beams (Hugging Face's ``early_stopping=True``); beams still live after
    ``max_new_tokens`` finish as they are.

    On models that ``recgpt.inference.tree`` runs (MPT, float32, CPU) the beams of each prompt grow as a token tree
    (``tree_beams``) instead of a batched cache: no cache is copied per step. ``use_tree`` forces either path
    (None: the tree where the model allows it); both give the same beams.
    """
    from recgpt.inference.tree import tree_supported

    if use_tree is None:
        use_tree = tree_supported(model) is None
    if use_tree:
        from recgpt.inference.tree_beams import tree_beam_search

        return [
            tree_beam_search(
                model,
                prompt,
                num_beams=num_beams,
                max_new_tokens=max_new_tokens,
                eos_id=eos_id,
                allowed=functools.partial(allowed, row) if allowed is not None else None,
                barred=functools.partial(barred, row) if barred is not None else None,
            )
            for row, prompt in enumerate(prompt_ids)
        ]
    batch = len(prompt_ids)
    ids, mask = left_pad(prompt_ids, pad_id)
    finished: list[list[Beam]] = [[] for _ in range(batch)]
    with torch.no_grad():
        logprobs, past = forward(model, ids, mask)
        live: list[tuple[int, list[int], float]] = [(row, [], 0.0) for row in range(batch)]
        for _ in range(max_new_tokens):
            options: list[list[tuple[float, int, int]]] = [[] for _ in range(batch)]
            if allowed is not None:  # one masked matrix, then one top-k for every beam
                logprobs = restrict(logprobs, [allowed(row, tokens) for row, tokens, _ in live])
            if barred is not None:
                logprobs = bar(logprobs, [barred(row, tokens) for row, tokens, _ in live])
            for position, found in enumerate(beam_options(logprobs, [total for _, _, total in live], num_beams)):
                options[live[position][0]].extend(found)
            next_live, sources = [], []
            for row in range(batch):
                if len(finished[row]) >= num_beams:
                    continue  # this prompt is done
                for tokens, total, position in step_beams(options[row], live, finished[row], num_beams, eos_id):
                    next_live.append((row, tokens, total))
                    sources.append(position)
            if not next_live:
                live = []
                break
            index = torch.tensor(sources, dtype=torch.long)
            if sources != list(range(len(live))):  # each beam went on from itself: the cache is already in order
                past = select_cache(past, index)
                mask = mask.index_select(0, index)
            mask = torch.cat([mask, torch.ones((len(index), 1), dtype=torch.long)], dim=1)
            step = torch.tensor([[tokens[-1]] for _, tokens, _ in next_live], dtype=torch.long)
            logprobs, past = forward(model, step, mask, past)
            live = next_live
        for row, tokens, total in live:  # out of steps: unfinished beams count as they are
            finished[row].append(Beam(tokens, total, len(tokens)))
    return [sorted(beams, key=lambda beam: -beam.score)[:num_beams] for beams in finished]


def step_beams(
    options: list[tuple[float, int, int]],
    live: Sequence[tuple[Any, list[int], float]],
    finished: list[Beam],
    num_beams: int,
    eos_id: int,
) -> list[tuple[list[int], float, int]]:
    """One prompt's beam step: from ``(total, token, live position)`` options, finish the beams that end (EOS) and
    keep the best ``num_beams`` that go on, as ``(tokens, total, live position)``.

    As in Hugging Face's beam scorer, an ending counts only among the top ``num_beams`` options. ``finished`` is
    extended in place; once it holds ``num_beams`` beams it keeps the best of them and nothing goes on.
    """
    kept: list[tuple[list[int], float, int]] = []
    for rank, (total, token, position) in enumerate(sorted(options, key=lambda option: -option[0])):
        tokens = live[position][1]
        if token == eos_id:
            if rank < num_beams:
                finished.append(Beam(tokens, total, len(tokens) + 1))
        elif len(kept) < num_beams:
            kept.append(([*tokens, token], total, position))
    if len(finished) >= num_beams:  # done: keep the best, drop this prompt's live beams
        finished[:] = sorted(finished, key=lambda beam: -beam.score)[:num_beams]
        return []
    return kept


def score_candidates(
    model: Any, prompt: Sequence[int], candidates: Sequence[Sequence[int]], *, pad_id: int, batch_size: int = 256
) -> list[float]:
    """Summed log-probability of each candidate continuation (e.g. an item's line plus EOS) after ``prompt``.

    The prompt is run once; its cache is copied to each batch of candidates, so the cost is the candidates' own
    tokens. Candidates are batched shortest first, so a batch pads to lengths close to its own.
    """
    ids, mask = left_pad([prompt], pad_id)
    order = sorted(range(len(candidates)), key=lambda i: len(candidates[i]))
    scores = [0.0] * len(candidates)
    with torch.no_grad():
        first, past = forward(model, ids, mask)
        for start in range(0, len(order), batch_size):
            members = order[start : start + batch_size]
            chunk = [list(candidates[i]) for i in members]
            width = max(len(c) for c in chunk)
            index = torch.zeros(len(chunk), dtype=torch.long)
            cache = select_cache(past, index) if not hasattr(past, "reorder_cache") else _copy_cache(past, len(chunk))
            tokens = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            real = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, candidate in enumerate(chunk):
                tokens[row, : len(candidate)] = torch.tensor(candidate)
                real[row, : len(candidate)] = True
            full_mask = torch.cat([mask.expand(len(chunk), -1), real.long()], dim=1)
            output = model(
                input_ids=tokens.to(model.device),
                attention_mask=full_mask.to(model.device),
                past_key_values=cache,
                use_cache=True,
            )
            logprobs = torch.log_softmax(output.logits.float(), dim=-1)
            # token t of a candidate is predicted by the prompt's last position (t = 0) or by token t - 1
            chosen = logprobs[:, :-1, :].gather(-1, tokens[:, 1:, None].to(logprobs.device)).squeeze(-1)
            head = first[0, tokens[:, 0]]
            totals = head + (chosen * real[:, 1:].to(chosen.device)).sum(dim=1)
            for position, total in zip(members, totals.tolist(), strict=True):
                scores[position] = float(total)
    return scores


def score_continuations(
    model: Any, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], *, pad_id: int
) -> list[list[float]]:
    """Summed log-probability of each of a few candidates (e.g. the rating strings) after each of a batch of prompts.

    The prompts run once, left-padded together; each prompt's cache is copied to its candidates, and every
    prompt-candidate pair is scored in one more forward pass. Returns one row of candidate scores per prompt.
    """
    count = len(candidates)
    ids, mask = left_pad(prompts, pad_id)
    with torch.no_grad():
        first, past = forward(model, ids, mask)
        index = torch.arange(len(prompts)).repeat_interleave(count)
        cache = select_cache(past, index) if not hasattr(past, "reorder_cache") else _copy_cache(past, count)
        width = max(len(c) for c in candidates)
        tokens = torch.full((count, width), pad_id, dtype=torch.long)
        real = torch.zeros((count, width), dtype=torch.bool)
        for row, candidate in enumerate(candidates):
            tokens[row, : len(candidate)] = torch.tensor(list(candidate), dtype=torch.long)
            real[row, : len(candidate)] = True
        tokens, real = tokens.repeat(len(prompts), 1), real.repeat(len(prompts), 1)
        full_mask = torch.cat([mask.index_select(0, index), real.long()], dim=1)
        output = model(
            input_ids=tokens.to(model.device),
            attention_mask=full_mask.to(model.device),
            past_key_values=cache,
            use_cache=True,
        )
        logprobs = torch.log_softmax(output.logits.float(), dim=-1)
        chosen = logprobs[:, :-1, :].gather(-1, tokens[:, 1:, None].to(logprobs.device)).squeeze(-1)
        head = first.index_select(0, index.to(first.device)).gather(-1, tokens[:, :1].to(first.device)).squeeze(-1)
        totals = head + (chosen * real[:, 1:].to(chosen.device)).sum(dim=1)
    return totals.view(len(prompts), count).tolist()


def _copy_cache(past: Any, copies: int) -> Any:
    import copy

    cache = copy.deepcopy(past)
    cache.batch_repeat_interleave(copies)
    return cache
