"""Beam search as a growing token tree: each beam's new token attends to the prompt and its own ancestors only.

``decoding.beam_search`` keeps a key/value cache per beam, so every step copies the whole cache (prompt included)
to reorder the beams and appends to it, which is most of a CPU decoding step. Beams of one prompt are paths of
one tree, though: here each prompt runs once, each generated token is a tree node run once (with the tree
attention of ``recgpt.inference.tree``), and a step costs the new nodes only, whatever the prompt's length and
the beam count. The search itself (``decoding.step_beams``) is the same, so the beams are the same; the scores
agree within float error (``tests/inference/test_decoding.py`` checks both against Hugging Face's generate).
MPT in float32 on CPU (``tree.tree_supported``); ``beam_search`` picks this path by itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from recgpt.inference.decoding import Beam, restrict, step_beams
from recgpt.inference.tree import _logits, _prompt_pass, _slopes, node_pass

# allowed(generated) / barred(generated): one prompt's token ids allowed (None: any) / forbidden next.
Permit = Callable[[list[int]], list[int] | None]
Bar = Callable[[list[int]], list[int]]


class _BeamTree:
    """One prompt's keys and values, and room for the nodes its beams generate (``node_pass``'s state)."""

    def __init__(self, model: Any, prompt: Sequence[int], capacity: int, width: int) -> None:
        self.offset = len(prompt)
        self.keys, self.values, last = _prompt_pass(model, torch.tensor(list(prompt), dtype=torch.long))
        self.first = torch.log_softmax(_logits(model, last[None]), dim=-1)
        self.node_keys = [torch.zeros((capacity, k.shape[0], k.shape[2])) for k in self.keys]
        self.node_values = [torch.zeros_like(k) for k in self.node_keys]
        slopes = _slopes(model)
        self.prompt_bias = slopes[:, None] * torch.arange(self.offset).float() if slopes is not None else None
        self.path_bias = slopes[:, None] * (self.offset + torch.arange(width)).float() if slopes is not None else None
        self.size = 0


def tree_beam_search(
    model: Any,
    prompt: Sequence[int],
    *,
    num_beams: int,
    max_new_tokens: int,
    eos_id: int,
    allowed: Permit | None = None,
    barred: Bar | None = None,
) -> list[Beam]:
    """``decoding.beam_search`` for one prompt on the tree (same arguments, for this prompt alone).

    Returns:
        The finished beams, best first (at most ``num_beams``).
    """
    finished: list[Beam] = []
    with torch.no_grad():
        tree = _BeamTree(model, prompt, max(1, num_beams * max_new_tokens), max(1, max_new_tokens))
        logprobs = tree.first
        live: list[tuple[list[int], list[int], float]] = [([], [], 0.0)]  # (node path, tokens, summed log-prob)
        for depth in range(max_new_tokens):
            if allowed is not None:
                logprobs = restrict(logprobs, [allowed(tokens) for _, tokens, _ in live])
            if barred is not None:
                pairs = [(row, token) for row, (_, tokens, _) in enumerate(live) for token in barred(tokens)]
                if pairs:
                    logprobs[[row for row, _ in pairs], [token for _, token in pairs]] = -math.inf
            values, indices = torch.topk(logprobs, min(logprobs.shape[-1], 2 * num_beams), dim=-1)
            options = [
                (total + value, token, row)
                for row, ((_, _, total), row_values, row_indices) in enumerate(
                    zip(live, values.tolist(), indices.tolist(), strict=True)
                )
                for value, token in zip(row_values, row_indices, strict=True)
                if value != -math.inf
            ]
            kept = step_beams(options, live, finished, num_beams, eos_id)
            if not kept:  # every beam finished, or none can go on
                live = []
                break
            nodes = torch.arange(tree.size, tree.size + len(kept))
            tree.size += len(kept)
            paths = [[*live[row][0], int(node)] for (_, _, row), node in zip(kept, nodes, strict=True)]
            path = torch.tensor(paths, dtype=torch.long)
            tokens = torch.tensor([generated[-1] for generated, _, _ in kept], dtype=torch.long)
            positions = torch.full((len(kept),), tree.offset + depth, dtype=torch.long)
            hidden = node_pass(model, tree, tokens, positions, nodes, path, torch.ones_like(path, dtype=torch.bool))
            logprobs = torch.log_softmax(_logits(model, hidden), dim=-1)
            live = [(paths[i], generated, total) for i, (generated, total, _) in enumerate(kept)]
    return _best(finished, live, num_beams)


def _best(finished: list[Beam], live: Sequence[tuple[list[int], list[int], float]], num_beams: int) -> list[Beam]:
    """Out of steps: unfinished beams count as they are."""
    beams = [*finished, *(Beam(tokens, total, len(tokens)) for _, tokens, total in live)]
    return sorted(beams, key=lambda beam: -beam.score)[:num_beams]
