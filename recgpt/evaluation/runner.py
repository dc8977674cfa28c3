"""``recgpt evaluate``: next-item HR/NDCG and rating RMSE/MAE of a model, beside baselines on the same split.

Protocol (RECGPT.md section 5): next item by beam search (10 beams), each beam grounded to its nearest catalogue
item, ranked by beam score over the full catalogue; rating by sampling (temperature 1.0, top-p 0.9, top-k 50)
and ``parse_rating``. A rating that cannot be parsed is counted and scored as the training global mean.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recgpt.data.render import parse_rating
from recgpt.evaluation.baselines import MostPopular, global_mean
from recgpt.evaluation.metrics import mae, ranking_metrics, rmse
from recgpt.evaluation.report import write_report

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """``recgpt evaluate`` settings (see configs/eval/*.yaml).

    Attributes:
        model: A Hugging Face causal LM folder (e.g. the fine-tuning run's ``hf/huggingface/final``); null
            evaluates the baselines only.
        data: A folder written by ``recgpt data prepare``.
        benchmark: The benchmark source to evaluate on (a ``sources[].name`` with ``benchmark`` protocols); null
            picks the only one.
        split: ``test`` or ``validation``.
        output: Where ``report.json`` and ``predictions.jsonl`` go.
        max_users: Evaluate the first N users of the split only (null: all).
        ks: Cut-offs of HR@K and NDCG@K.
        num_beams: Beams of next-item search (RecGPT: 10).
        max_new_tokens: Longest generated item line.
        exclude_seen: Never rank an item from the user's history (for the model and the baselines alike).
        rating_sampling: Sample ratings (RecGPT's setting) rather than decode greedily.
        temperature, top_p, top_k: Rating sampling settings (RecGPT: 1.0, 0.9, 50).
        rating_max_new_tokens: Longest generated rating.
        batch_size: Prompts per model call.
        embedding_model: Grounding encoder folder; null uses the packaged all-MiniLM-L6-v2.
        seed: Seeds rating sampling.
    """

    model: str | None = None
    data: str = "artifacts/demo/data"
    benchmark: str | None = None
    split: str = "test"
    output: str = "artifacts/demo/eval"
    max_users: int | None = None
    ks: list[int] = field(default_factory=lambda: [5, 10])
    num_beams: int = 10
    max_new_tokens: int = 32
    exclude_seen: bool = True
    rating_sampling: bool = True
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    rating_max_new_tokens: int = 8
    batch_size: int = 8
    embedding_model: str | None = None
    seed: int = 17


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file, with the file and line named on a parse error."""
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not valid JSON ({error.msg})") from error
    return rows


@dataclass(frozen=True)
class Benchmark:
    """A prepared benchmark: its folder (``items.jsonl``, ``train.jsonl``, split files) and rating scale."""

    name: str
    folder: Path
    rating_scale: float


def find_benchmark(data: Path, name: str | None) -> Benchmark:
    """The benchmark ``name`` of a prepared folder, or its only benchmark when ``name`` is None.

    Raises:
        ValueError: If the folder has no such benchmark, naming the ones it has.
    """
    manifest_path = data / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"data: {data} has no manifest.json; write it with `recgpt data prepare`")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    names = [s["name"] for s in manifest["config"]["sources"] if s.get("benchmark")]
    if name is None and len(names) == 1:
        name = names[0]
    if name not in names:
        raise ValueError(f"benchmark: choose one of {names} in {data}, got {name!r}")
    scale = float(manifest["sources"][name]["domain"]["rating_scale"])
    return Benchmark(name, data / "benchmark" / name, scale)


def _progress(task: str, total: int) -> Callable[[int], None]:
    """A callback that logs ``done/total`` each time another tenth of the users is done."""
    logged = [0]

    def report(done: int) -> None:
        if done * 10 // max(1, total) > logged[0] or done == total:
            logged[0] = done * 10 // max(1, total)
            log.info("%s: %d/%d users", task, done, total)

    return report


def evaluate(config: EvalConfig) -> Path:
    """Evaluate and write ``report.json`` and ``predictions.jsonl``; returns the report's path."""
    started = time.time()
    data = Path(config.data)
    if config.split not in {"test", "validation"}:
        raise ValueError(f"split: must be 'test' or 'validation', got {config.split!r}")
    benchmark = find_benchmark(data, config.benchmark)
    scale = benchmark.rating_scale
    rows = read_rows(benchmark.folder / f"{config.split}.jsonl")
    users = list(dict.fromkeys(row["user_id"] for row in rows))[: config.max_users]
    chosen = set(users)
    next_rows = [r for r in rows if r["task"] == "next_item" and r["user_id"] in chosen]
    rating_rows = [r for r in rows if r["task"] == "rating" and r["user_id"] in chosen]
    train = read_rows(benchmark.folder / "train.jsonl")
    popular = MostPopular(row["item_ids"] for row in train)
    mean_rating = global_mean(rating for row in train for rating in row["ratings"])

    max_k = max(config.ks)
    targets = [row["target_item_id"] for row in next_rows]
    exclusions = [set(row["history_item_ids"]) if config.exclude_seen else set() for row in next_rows]
    next_item = {
        "most popular": ranking_metrics([popular.recommend(max_k, ex) for ex in exclusions], targets, config.ks)
    }
    rating_targets = [float(row["target_rating"]) for row in rating_rows]
    rating = {"global mean": _rating_metrics([mean_rating] * len(rating_rows), rating_targets)}
    predictions: list[dict[str, Any]] = []
    if config.model is not None:
        model_next, model_rating, predictions = _evaluate_model(
            config, benchmark.folder, next_rows, exclusions, rating_rows, scale, mean_rating
        )
        next_item = {"recgpt": model_next, **next_item}
        rating = {"recgpt": model_rating, **rating}
    report = {
        "model": config.model,
        "data": str(data),
        "benchmark": benchmark.name,
        "split": config.split,
        "users": len(users),
        "next_item": next_item,
        "rating": rating,
        "protocol": {
            "next_item": f"{config.num_beams}-beam search, beams grounded to the nearest catalogue item, de-duplicated;"
            f" full catalogue of {_count_lines(benchmark.folder / 'items.jsonl')} items;"
            f" seen items {'excluded' if config.exclude_seen else 'kept'}",
            "rating": (
                f"sampled (temperature {config.temperature}, top-p {config.top_p}, top-k {config.top_k})"
                if config.rating_sampling
                else "greedy"
            )
            + f"; unparseable ratings scored as the training global mean {mean_rating:.4f}",
        },
        "config": dataclasses.asdict(config),
        "wall_seconds": round(time.time() - started, 1),
    }
    path = write_report(Path(config.output), report, predictions)
    log.info("wrote %s (%.0f s)", path, report["wall_seconds"])
    return path


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for _ in handle)


def _rating_metrics(predictions: Sequence[float], targets: Sequence[float]) -> dict[str, float]:
    return {"RMSE": rmse(predictions, targets), "MAE": mae(predictions, targets)}


def _evaluate_model(
    config: EvalConfig,
    folder: Path,
    next_rows: list[dict[str, Any]],
    exclusions: list[set[str]],
    rating_rows: list[dict[str, Any]],
    scale: float,
    fallback: float,
) -> tuple[dict[str, float], dict[str, float], list[dict[str, Any]]]:
    from recgpt.evaluation.grounding import CatalogIndex, TextEmbedder, load_catalog
    from recgpt.inference.generate import generate, load_model
    from recgpt.inference.recommend import rank_catalog_items

    model, tokenizer = load_model(config.model)  # type: ignore[arg-type]
    log.info("embedding the catalogue for grounding")
    index = CatalogIndex(*load_catalog(folder / "items.jsonl"), TextEmbedder(config.embedding_model))
    log.info("next item: %d-beam search for %d users", config.num_beams, len(next_rows))
    beams = generate(
        model,
        tokenizer,
        [r["prompt"] for r in next_rows],
        max_new_tokens=config.max_new_tokens,
        num_beams=config.num_beams,
        num_return_sequences=config.num_beams,
        batch_size=config.batch_size,
        progress=_progress("next item", len(next_rows)),
    )
    ranked = [rank_catalog_items(c, index, ex) for c, ex in zip(beams, exclusions, strict=True)]
    next_metrics = ranking_metrics(
        [[r.item_id for r in items] for items in ranked], [row["target_item_id"] for row in next_rows], config.ks
    )
    all_beams = [candidate.text for candidates in beams for candidate in candidates]
    next_metrics["beams_naming_an_item"] = sum(text in index.exact for text in all_beams) / max(1, len(all_beams))
    next_metrics["unique_items_per_list"] = sum(len(items) for items in ranked) / len(ranked)
    log.info("rating: %s decoding for %d users", "sampled" if config.rating_sampling else "greedy", len(rating_rows))
    outputs = generate(
        model,
        tokenizer,
        [r["prompt"] for r in rating_rows],
        max_new_tokens=config.rating_max_new_tokens,
        do_sample=config.rating_sampling,
        temperature=config.temperature,
        top_p=config.top_p,
        top_k=config.top_k,
        batch_size=config.batch_size,
        seed=config.seed,
        progress=_progress("rating", len(rating_rows)),
    )
    parsed = [parse_rating(c[0].text, scale) for c in outputs]
    scored = [value if value is not None else fallback for value in parsed]
    rating_metrics = _rating_metrics(scored, [float(r["target_rating"]) for r in rating_rows])
    rating_metrics["parse_failure_rate"] = sum(value is None for value in parsed) / max(1, len(parsed))
    predictions = [
        {
            "user_id": row["user_id"],
            "task": "next_item",
            "target": row["target_item_id"],
            "ranked": [r.item_id for r in items],
            "generated": [c.text for c in cands],
        }
        for row, items, cands in zip(next_rows, ranked, beams, strict=True)
    ] + [
        {
            "user_id": row["user_id"],
            "task": "rating",
            "target": row["target_rating"],
            "generated": c[0].text,
            "parsed": value,
            "scored": score,
        }
        for row, c, value, score in zip(rating_rows, outputs, parsed, scored, strict=True)
    ]
    return next_metrics, rating_metrics, predictions
