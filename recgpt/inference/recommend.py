"""Recommendations from generated text: beams grounded to catalogue items, de-duplicated, best first."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from recgpt.evaluation.grounding import CatalogIndex
from recgpt.inference.generate import Candidate


@dataclass(frozen=True)
class Recommendation:
    """A catalogue item recommended from a generated string.

    Attributes:
        item_id: The catalogue item.
        generated: The beam text it was grounded from.
        beam_score: That beam's length-normalised log-probability.
        similarity: Cosine similarity between the beam text and the item's line (1.0 for an exact match).
    """

    item_id: str
    generated: str
    beam_score: float
    similarity: float


def rank_catalog_items(
    candidates: Sequence[Candidate], index: CatalogIndex, exclude: Collection[str] = ()
) -> list[Recommendation]:
    """Ground beams (best first) to catalogue items and keep each item's best-ranked occurrence.

    This is RecGPT's next-item protocol: every generated string is mapped to its most similar catalogue item;
    when two beams map to one item it counts once, at its better rank, so a list may hold fewer items than beams.

    Example:
        Beams ``["Title: Heat (1995)", "Title: Heat", "Title: Fargo (1996)"]`` with scores ``[-0.1, -0.3, -0.4]``
        ground to ``[heat, heat, fargo]`` and give ``[heat (-0.1), fargo (-0.4)]``.
    """
    grounded = index.ground([candidate.text for candidate in candidates], exclude=exclude)
    seen: set[str] = set()
    ranked = []
    for candidate, (item_id, similarity) in zip(candidates, grounded, strict=True):
        if item_id not in seen:
            seen.add(item_id)
            ranked.append(Recommendation(item_id, candidate.text, candidate.score, similarity))
    return ranked
