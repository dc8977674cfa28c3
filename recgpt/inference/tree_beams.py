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

from collections.abc import Callable, Sequence
from typing import Any

import torch

from recgpt.inference.decoding import Beam, bar, beam_options, restrict, step_beams
from recgpt.inference.tree import PromptState, next_logprobs, node_pass

# allowed(generated) / barred(generated): one prompt's token ids allowed (None: any) / forbidden next.
Permit = Callable[[list[int]], list[int] | None]
Bar = Callable[[list[int]], list[int]]


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
        tree = PromptState(model, prompt, max(1, num_beams * max_new_tokens), max(1, max_new_tokens))
        logprobs, size = tree.first[None], 0
        live: list[tuple[list[int], list[int], float]] = [([], [], 0.0)]  # (node path, tokens, summed log-prob)
        for depth in range(max_new_tokens):
            if allowed is not None:
                logprobs = restrict(logprobs, [allowed(tokens) for _, tokens, _ in live])
            if barred is not None:
                logprobs = bar(logprobs, [barred(tokens) for _, tokens, _ in live])
            options = [o for found in beam_options(logprobs, [t for _, _, t in live], num_beams) for o in found]
            kept = step_beams(options, live, finished, num_beams, eos_id)
            if not kept:  # every beam finished, or none can go on
                live = []
                break
            nodes = torch.arange(size, size + len(kept))
            size += len(kept)
            paths = [[*live[row][0], int(node)] for (_, _, row), node in zip(kept, nodes, strict=True)]
            path = torch.tensor(paths, dtype=torch.long)
            tokens = torch.tensor([generated[-1] for generated, _, _ in kept], dtype=torch.long)
            positions = torch.full((len(kept),), tree.offset + depth, dtype=torch.long)
            hidden = node_pass(model, tree, tokens, positions, nodes, path, torch.ones_like(path, dtype=torch.bool))
            logprobs = next_logprobs(model, hidden)
            live = [(paths[i], generated, total) for i, (generated, total, _) in enumerate(kept)]
    return _best(finished, live, num_beams)


def _best(finished: list[Beam], live: Sequence[tuple[list[int], list[int], float]], num_beams: int) -> list[Beam]:
    """Out of steps: unfinished beams count as they are."""
    beams = [*finished, *(Beam(tokens, total, len(tokens)) for _, tokens, total in live)]
    return sorted(beams, key=lambda beam: -beam.score)[:num_beams]
