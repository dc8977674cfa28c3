"""``recgpt evaluate``: every next-item and rating method side by side with baselines, on one prepared split.

Protocol (RECGPT.md section 5, configurable): full-catalogue ranking for next item, seen items excluded for every
method alike; RMSE / MAE for ratings; a 95% bootstrap interval over users for every metric; per-user predictions
saved. Methods are chosen in ``configs/eval/*.yaml``; see ``next_item.py``, ``rating.py`` and ``classic.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recgpt.evaluation.baselines import MostPopular, global_mean
from recgpt.evaluation.levels import rating_levels
from recgpt.evaluation.metrics import hit_at_k, ndcg_at_k
from recgpt.evaluation.report import write_report
from recgpt.evaluation.stats import PairKey, bootstrap_interval, paired_comparisons, rmse_of_squares

if TYPE_CHECKING:
    from recgpt.evaluation.next_item import Ranking
    from recgpt.evaluation.tracking import TrackingTarget

log = logging.getLogger(__name__)


@dataclass
class NextItemConfig:
    """Next-item methods of the model.

    Attributes:
        methods: Any of ``beam_grounded`` (RecGPT's), ``constrained_beam``, ``likelihood``.
        num_beams: Beams of both beam searches (RecGPT: 10).
        max_new_tokens: Longest generated item line.
        embedding_model: Grounding encoder folder; null uses the packaged all-MiniLM-L6-v2.
        candidates: Likelihood ranking over the full catalogue (null) or the target plus N - 1 sampled items.
    """

    methods: list[str] = field(default_factory=lambda: ["beam_grounded"])
    num_beams: int = 10
    max_new_tokens: int = 32
    embedding_model: str | None = None
    candidates: int | None = None


@dataclass
class RatingConfig:
    """Rating methods of the model.

    Attributes:
        methods: Any of ``sampled`` (RecGPT's), ``greedy``, ``expected``.
        prompts: Any of ``with_review`` (RecGPT's) and ``without_review``; the second is skipped when no target
            line has a review (it would be the same prompt).
        temperature, top_p, top_k: Sampling settings (RecGPT: 1.0, 0.9, 50).
        max_new_tokens: Longest generated rating.
    """

    methods: list[str] = field(default_factory=lambda: ["sampled"])
    prompts: list[str] = field(default_factory=lambda: ["with_review"])
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 50
    max_new_tokens: int = 8


@dataclass
class BaselineConfig:
    """Baselines on the same split: most popular and the global mean always; classic models on request.

    Attributes:
        sasrec: Train Cornac's SASRec for next item.
        sasrec_epochs: Its epochs.
        mf: Train Cornac's matrix factorisation for rating.
        mf_epochs: Its epochs.
    """

    sasrec: bool = False
    sasrec_epochs: int = 3
    mf: bool = False
    mf_epochs: int = 50


@dataclass
class EvalConfig:
    """``recgpt evaluate`` settings (see configs/eval/*.yaml).

    Attributes:
        model: A Hugging Face causal LM folder (or a LoRA adapter folder); null evaluates the baselines only.
        data: A folder written by ``recgpt data prepare``.
        benchmark: The benchmark source (``benchmark/<name>``); null picks the only one.
        split: ``test`` or ``validation``.
        output: Where ``report.json``, ``report.md``, plots and ``predictions.jsonl`` go.
        max_users: Evaluate the first N users of the split only (null: all).
        ks: Cut-offs of HR@K and NDCG@K.
        exclude_seen: Never rank an item from the user's history (every method alike).
        next_item, rating, baselines: The methods.
        bootstrap: Resamples of users for the 95% intervals.
        batch_size: Prompts per model call.
        seed: Seeds sampling, candidate sampling, bootstrap and the classic models.
        mlflow: Track the evaluation in MLflow (``recgpt.evaluation.tracking``): a tracking URI
            (``file:/abs/path/mlruns``, ``http(s)://host:port``) for a new run, or ``runs:/RUN_ID`` / a RUN_ID for an
            existing (training) run in the store of ``MLFLOW_TRACKING_URI``; null: no tracking.
        mlflow_experiment: The experiment of a new run.
        training_curve: The JSONL curve the training run's ``recgpt_rec_eval`` callback wrote (its ``curve``):
            the report then plots HR@K and RMSE on the validation sample against training tokens.
    """

    model: str | None = None
    data: str = "artifacts/demo/data"
    benchmark: str | None = None
    split: str = "test"
    output: str = "artifacts/demo/eval"
    max_users: int | None = None
    ks: list[int] = field(default_factory=lambda: [5, 10])
    exclude_seen: bool = True
    next_item: NextItemConfig = field(default_factory=NextItemConfig)
    rating: RatingConfig = field(default_factory=RatingConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    bootstrap: int = 1000
    batch_size: int = 16
    seed: int = 17
    mlflow: str | None = None
    mlflow_experiment: str = "recgpt-evaluate"
    training_curve: str | None = None


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
    if name is None or name not in names:
        raise ValueError(f"benchmark: choose one of {names} in {data}, got {name!r}")
    scale = float(manifest["sources"][name]["domain"]["rating_scale"])
    return Benchmark(name, data / "benchmark" / name, scale)


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


def progress(task: str, total: int) -> Callable[[int], None]:
    """A callback that logs ``done/total`` each time another tenth of the rows is done."""
    logged = [0]

    def report(done: int) -> None:
        if done * 10 // max(1, total) > logged[0] or done == total:
            logged[0] = done * 10 // max(1, total)
            log.info("%s: %d/%d", task, done, total)

    return report


def ranking_summary(
    rankings: list[list[str]],
    targets: list[str],
    ks: list[int],
    samples: int,
    seed: int,
    extra: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Mean HR@K / NDCG@K with bootstrap intervals (``"HR@10_ci": [low, high]``), plus ``extra`` diagnostics."""
    summary: dict[str, Any] = {}
    for k in ks:
        for name, metric in (("HR", hit_at_k), ("NDCG", ndcg_at_k)):
            values = [metric(r, t, k) for r, t in zip(rankings, targets, strict=True)]
            summary[f"{name}@{k}"] = float(np.mean(values))
            summary[f"{name}@{k}_ci"] = list(bootstrap_interval(values, samples=samples, seed=seed))
    summary["curve"] = {
        k: float(np.mean([hit_at_k(r, t, k) for r, t in zip(rankings, targets, strict=True)]))
        for k in range(1, max(ks) + 1)
    }
    return {**summary, **(extra or {})}


def rating_summary(
    predictions: list[float], targets: list[float], samples: int, seed: int, failures: int | None = None
) -> dict[str, Any]:
    """RMSE / MAE with bootstrap intervals, the errors (for the plot) and the parse-failure rate."""
    errors = np.asarray(predictions) - np.asarray(targets)
    summary: dict[str, Any] = {
        "RMSE": rmse_of_squares(errors**2),
        "RMSE_ci": list(bootstrap_interval(errors**2, rmse_of_squares, samples, seed)),
        "MAE": float(np.mean(np.abs(errors))),
        "MAE_ci": list(bootstrap_interval(np.abs(errors), samples=samples, seed=seed)),
        "errors": [round(float(e), 4) for e in errors],
    }
    if failures is not None:
        summary["parse_failure_rate"] = failures / max(1, len(predictions))
    return summary


def read_training_curve(path: Path) -> list[dict[str, float]]:
    """The points of a ``recgpt_rec_eval`` curve file, in training order.

    Raises:
        ValueError: Naming the file and line of a point that is not a JSON object with ``batch`` and ``tokens``.
    """
    if not path.is_file():
        raise ValueError(f"training_curve: {path} is not a file (the `curve` of the recipe's recgpt_rec_eval)")
    points = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            point = json.loads(line)
            if not isinstance(point, dict) or not all(
                isinstance(point.get(k), int | float) for k in ("batch", "tokens")
            ):
                raise ValueError("not an object with numeric batch and tokens")
        except ValueError as error:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"training_curve: {path}:{number}: not a recgpt_rec_eval point ({error})") from error
        points.append(point)
    if not points:
        raise ValueError(f"training_curve: {path} has no points")
    return sorted(points, key=lambda point: point["batch"])


def row_keys(rows: Sequence[dict[str, Any]], where: str) -> list[PairKey]:
    """Each split row's ``(user_id, target_item_id)``: what pairs two methods' values for the same row.

    Raises:
        ValueError: If two rows share a key (a split file written twice into one, or edited by hand).
    """
    keys = [(str(row["user_id"]), str(row["target_item_id"])) for row in rows]
    if len(set(keys)) != len(keys):
        repeated = sorted({key for key in keys if keys.count(key) > 1})[:3]
        raise ValueError(f"{where}: rows repeat (user_id, target_item_id) {repeated}; each row must be unique")
    return keys


def ranking_values(
    rankings: Sequence[Sequence[str]], targets: Sequence[str], keys: Sequence[PairKey], ks: Sequence[int]
) -> dict[str, dict[PairKey, float]]:
    """Per-row HR@K and NDCG@K of one method, ``{"HR@10": {(user, target): 1.0, ...}, ...}``, for pairing."""
    return {
        f"{name}@{k}": {key: metric(r, t, k) for key, r, t in zip(keys, rankings, targets, strict=True)}
        for k in ks
        for name, metric in (("HR", hit_at_k), ("NDCG", ndcg_at_k))
    }


def rating_values(
    predictions: Sequence[float], targets: Sequence[float], keys: Sequence[PairKey]
) -> dict[str, dict[PairKey, float]]:
    """Per-row squared (``RMSE``) and absolute (``MAE``) errors of one method, for pairing."""
    errors = [p - t for p, t in zip(predictions, targets, strict=True)]
    return {
        "RMSE": {key: e * e for key, e in zip(keys, errors, strict=True)},
        "MAE": {key: abs(e) for key, e in zip(keys, errors, strict=True)},
    }


def ranking_diagnostics(rankings: Sequence[Ranking], seconds: float) -> dict[str, float]:
    """Invalid / ungrounded and duplicate rates over every decoded beam, items per list, users per second."""
    beams = sum(len(r.generated) for r in rankings)
    diagnostics = {"items_per_list": float(np.mean([len(r.items) for r in rankings]))}
    if beams:
        diagnostics["ungrounded_rate"] = sum(r.ungrounded for r in rankings) / beams
        diagnostics["duplicate_rate"] = sum(r.duplicates for r in rankings) / beams
    diagnostics["users_per_second"] = len(rankings) / max(seconds, 1e-9)
    return diagnostics


def evaluate(config: EvalConfig) -> Path:
    """Evaluate every configured method and write the report; returns ``report.json``'s path."""
    started = time.time()
    data = Path(config.data)
    if config.split not in {"test", "validation"}:
        raise ValueError(f"split: must be 'test' or 'validation', got {config.split!r}")
    benchmark = find_benchmark(data, config.benchmark)
    tracking = check_tracking(config)
    curve = read_training_curve(Path(config.training_curve)) if config.training_curve is not None else None
    rows = read_rows(benchmark.folder / f"{config.split}.jsonl")
    users = set(list(dict.fromkeys(row["user_id"] for row in rows))[: config.max_users])
    next_rows = [r for r in rows if r["task"] == "next_item" and r["user_id"] in users]
    rating_rows = [r for r in rows if r["task"] == "rating" and r["user_id"] in users]
    train = read_rows(benchmark.folder / "train.jsonl")
    training_ratings = [rating for row in train for rating in row["ratings"] if rating is not None]
    mean_rating = global_mean(training_ratings)
    excluded = [set(row["history_item_ids"]) if config.exclude_seen else set() for row in next_rows]
    targets = [row["target_item_id"] for row in next_rows]
    rating_targets = [float(row["target_rating"]) for row in rating_rows]
    depth, samples, seed = max(config.ks), config.bootstrap, config.seed
    ranked: dict[str, list[list[str]]] = {}
    rated: dict[str, list[float]] = {}
    next_item: dict[str, Any] = {}
    rating: dict[str, Any] = {}
    texts: dict[str, dict[str, Any]] = {"next_item": {}, "rating": {}}

    if config.model is not None:
        from recgpt.evaluation.model_methods import evaluate_model

        model_next, model_rating, seconds = evaluate_model(
            config, benchmark, next_rows, excluded, rating_rows, sorted(set(training_ratings))
        )
        for name, rankings in model_next.items():
            ranked[name] = [r.items for r in rankings]
            next_item[name] = ranking_summary(
                ranked[name], targets, config.ks, samples, seed, ranking_diagnostics(rankings, seconds[name])
            )
            texts["next_item"][name] = [r.generated for r in rankings]
        for name, predictions in model_rating.items():
            rated[name] = [p.value if p.value is not None else mean_rating for p in predictions]
            failures = sum(p.value is None for p in predictions)
            rating[name] = rating_summary(rated[name], rating_targets, samples, seed, failures)
            texts["rating"][name] = [p.text for p in predictions]

    popular = MostPopular(row["item_ids"] for row in train)
    ranked["most popular"] = [popular.recommend(depth, ex) for ex in excluded]
    if config.baselines.sasrec and next_rows:
        from recgpt.evaluation.classic import sasrec_rankings

        ranked["SASRec (cornac)"] = sasrec_rankings(
            train, next_rows, excluded, depth=depth, epochs=config.baselines.sasrec_epochs, seed=seed
        )
    for name in ("most popular", "SASRec (cornac)"):
        if name in ranked:
            next_item[name] = ranking_summary(ranked[name], targets, config.ks, samples, seed)
    rated["global mean"] = [mean_rating] * len(rating_rows)
    if config.baselines.mf and rating_rows:
        from recgpt.evaluation.classic import mf_predictions

        rated["MF (cornac)"] = mf_predictions(
            train, rating_rows, scale=benchmark.rating_scale, epochs=config.baselines.mf_epochs, seed=seed
        )
    for name in ("global mean", "MF (cornac)"):
        if name in rated:
            rating[name] = rating_summary(rated[name], rating_targets, samples, seed)

    split_file = benchmark.folder / f"{config.split}.jsonl"
    next_keys, rating_keys = (
        row_keys(next_rows, f"{split_file} (next_item)"),
        row_keys(rating_rows, f"{split_file} (rating)"),
    )
    paired = {
        "next_item": paired_comparisons(
            {name: ranking_values(lists, targets, next_keys, config.ks) for name, lists in ranked.items()},
            samples=samples,
            seed=seed,
        ),
        "rating": paired_comparisons(
            {name: rating_values(values, rating_targets, rating_keys) for name, values in rated.items()},
            samples=samples,
            seed=seed,
        ),
    }
    items = sum(1 for _ in (benchmark.folder / "items.jsonl").open(encoding="utf-8"))
    report = {
        "model": config.model,
        "data": str(data),
        "benchmark": benchmark.name,
        "split": config.split,
        "users": len(users),
        "next_item": next_item,
        "rating": rating,
        "paired": paired,
        "rating_levels": rating_levels(rated, rating_targets, rating_rows, train),
        "protocol": {
            "next_item": f"full catalogue of {items} items; seen items {'excluded' if config.exclude_seen else 'kept'}"
            f"; {config.next_item.num_beams} beams; 95% bootstrap intervals over users ({samples} resamples)",
            "rating": f"unparseable responses counted and scored as the training global mean {mean_rating:.4f}; "
            f"sampling at temperature {config.rating.temperature}, top-p {config.rating.top_p}, "
            f"top-k {config.rating.top_k}",
            "paired": "each model method minus each baseline on the same users: one set of user resamples "
            f"({samples}) is shared by both methods, so the 95% interval is of the difference itself (RMSE: the "
            "difference of the two RMSEs on each resample); above zero for HR/NDCG, below zero for RMSE/MAE, means "
            "the model beats that baseline",
        },
        **({"training_curve": curve} if curve is not None else {}),
        "config": dataclasses.asdict(config),
        "wall_seconds": round(time.time() - started, 1),
    }
    predictions = [
        {
            "user_id": row["user_id"],
            "task": "next_item",
            "target": row["target_item_id"],
            "methods": {
                name: {
                    "ranked": lists[i],
                    **({"generated": texts["next_item"][name][i]} if name in texts["next_item"] else {}),
                }
                for name, lists in ranked.items()
            },
        }
        for i, row in enumerate(next_rows)
    ] + [
        {
            "user_id": row["user_id"],
            "task": "rating",
            "target": row["target_rating"],
            "methods": {
                name: {
                    "predicted": values[i],
                    **({"generated": texts["rating"][name][i]} if name in texts["rating"] else {}),
                }
                for name, values in rated.items()
            },
        }
        for i, row in enumerate(rating_rows)
    ]
    path = write_report(Path(config.output), report, predictions)
    log.info("wrote %s (%.0f s)", path, report["wall_seconds"])
    publish(config, report, tracking)
    return path


def check_tracking(config: EvalConfig) -> TrackingTarget | None:
    """The MLflow target of ``config.mlflow``, checked before any work (None without tracking)."""
    if config.mlflow is None:
        return None
    from recgpt.evaluation.tracking import check_target, config_params

    return check_target(config.mlflow, config_params(dataclasses.asdict(config)))


def publish(config: EvalConfig, report: dict[str, Any], tracking: TrackingTarget | None) -> None:
    """Put the results where they are read: the evaluated model's card, and MLflow when asked."""
    if config.model is not None and Path(config.model).is_dir():
        from recgpt.model_card import update_card

        try:
            log.info("updated the model card %s", update_card(Path(config.model), report))
        except (OSError, ValueError) as error:  # a read-only folder, a README.md whose front matter is not YAML
            log.warning("could not update the model card %s/README.md: %s", config.model, error)
    if tracking is not None:
        from recgpt.evaluation.tracking import log_evaluation

        log_evaluation(tracking, config.mlflow_experiment, report, Path(config.output))
