"""Classic baselines on the same split, from Cornac (an established recommender library that installs on the
pinned stack): SASRec for the next item, matrix factorisation for the rating."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def sasrec_rankings(
    train: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    excluded: Sequence[set[str]],
    *,
    depth: int,
    epochs: int,
    seed: int,
) -> list[list[str]]:
    """Train Cornac's SASRec on the training histories; rank the catalogue for each row's history.

    Each user's training events, in order, are one sequence. A row is scored from its history (training and, for
    the test split, validation events); items never seen in training cannot be scored and rank last.
    """
    from cornac.data import SequentialDataset
    from cornac.models import SASRec

    triples = [(row["user_id"], item, float(t)) for row in train for t, item in enumerate(row["item_ids"])]
    dataset = SequentialDataset.build(triples, fmt="SIT", seed=seed)
    model = SASRec(
        embedding_dim=64,
        n_epochs=epochs,
        max_len=50,
        batch_size=512,
        n_sample=256,
        seed=seed,
        device="cpu",
        verbose=False,
    )
    log.info("training SASRec (cornac) for %d epochs on %d events", epochs, len(triples))
    model.fit(dataset)
    index_to_item = {index: item for item, index in dataset.iid_map.items()}
    rankings = []
    for row, exclude in zip(rows, excluded, strict=True):
        history = [dataset.iid_map[i] for i in row["history_item_ids"] if i in dataset.iid_map]
        scores = np.asarray(model.score(0, history), dtype=float)
        order = np.argsort(-scores, kind="stable")
        ranked = [index_to_item[int(i)] for i in order if index_to_item[int(i)] not in exclude]
        rankings.append(ranked[:depth])
    return rankings


def mf_predictions(
    train: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]], *, scale: float, epochs: int, seed: int
) -> list[float]:
    """Train Cornac's biased matrix factorisation on the training ratings; predict each row's target rating.

    A user's repeated item (re-rated, or two catalogue ids merged for an identical line) counts once, with its
    last rating. Users or items without training ratings get the training mean; predictions are clipped to
    ``[0, scale]``.
    """
    from cornac.data import Dataset
    from cornac.models import MF

    latest = {
        (row["user_id"], item): float(rating)
        for row in train  # a re-rated (or merged) item: the last
        for item, rating in zip(row["item_ids"], row["ratings"], strict=True)
        if rating is not None
    }
    triples = [(user, item, rating) for (user, item), rating in latest.items()]
    dataset = Dataset.from_uir(triples, seed=seed)
    model = MF(k=10, max_iter=epochs, learning_rate=0.01, lambda_reg=0.02, use_bias=True, seed=seed)
    log.info("training MF (cornac) for %d epochs on %d ratings", epochs, len(triples))
    model.fit(dataset)
    mean = float(np.mean([rating for _, _, rating in triples]))
    predictions = []
    for row in rows:
        user, item = dataset.uid_map.get(row["user_id"]), dataset.iid_map.get(row["target_item_id"])
        value = float(model.score(user, item)) if user is not None and item is not None else mean
        predictions.append(min(max(value, 0.0), scale))
    return predictions
