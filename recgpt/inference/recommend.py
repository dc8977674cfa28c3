"""Recommendations from generated text: beams grounded to catalogue items, de-duplicated, best first."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def recommend_for_user(
    model_dir: Path,
    data_dir: Path,
    user_id: str,
    k: int = 10,
    split: str = "test",
    num_beams: int | None = None,
    benchmark: str | None = None,
) -> dict[str, Any]:
    """Top-``k`` recommendations for a user of a prepared benchmark split, from their history before ``split``.

    The prompt is the split's next-item prompt (the data pipeline's rendering), items the user has seen are
    excluded, and ``num_beams`` (default ``2 * k``) beams leave room for beams that ground to the same item.

    Returns:
        ``{"user_id", "history_length", "held_out_item_id", "held_out_text", "recommendations": [...]}`` where
        each recommendation holds ``item_id``, ``text``, ``beam_score``, ``similarity`` and ``generated``.

    Raises:
        ValueError: If the user has no next-item row in the split.
    """
    from recgpt.evaluation.grounding import TextEmbedder, load_catalog
    from recgpt.evaluation.runner import find_benchmark, read_rows
    from recgpt.inference.generate import generate, load_model

    folder = find_benchmark(data_dir, benchmark).folder
    rows = [r for r in read_rows(folder / f"{split}.jsonl") if r["user_id"] == user_id and r["task"] == "next_item"]
    if not rows:
        raise ValueError(f"--user {user_id}: no next-item row in {folder / (split + '.jsonl')}")
    row = rows[0]
    item_ids, texts = load_catalog(folder / "items.jsonl")
    index = CatalogIndex(item_ids, texts, TextEmbedder())
    model, tokenizer = load_model(model_dir)
    beams = num_beams or 2 * k
    candidates = generate(
        model, tokenizer, [row["prompt"]], max_new_tokens=32, num_beams=beams, num_return_sequences=beams
    )[0]
    ranked = rank_catalog_items(candidates, index, exclude=set(row["history_item_ids"]))[:k]
    text_of = dict(zip(item_ids, texts, strict=True))
    return {
        "user_id": user_id,
        "history_length": len(row["history_item_ids"]),
        "held_out_item_id": row["target_item_id"],
        "held_out_text": row["response"],
        "recommendations": [
            {
                "item_id": r.item_id,
                "text": text_of[r.item_id],
                "beam_score": r.beam_score,
                "similarity": r.similarity,
                "generated": r.generated,
            }
            for r in ranked
        ],
    }
