"""MLflow tracking of ``recgpt evaluate``: the report's metrics with their intervals, the config as params, and
``report.md``, ``report.json`` and the plots as artifacts, into a training run or a new run.

``mlflow=`` takes a tracking URI (``file:/abs/mlruns``, ``http(s)://host:port``, ``databricks``): a new run in the
experiment ``mlflow_experiment``; or ``runs:/RUN_ID`` / a bare 32-hex RUN_ID: that existing run (e.g. the
training run), looked up in the store MLflow's ``MLFLOW_TRACKING_URI`` names. MLflow metric names may not hold
``@``, so ``HR@10`` is logged as ``hr_at_10``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
FORMS = "a tracking URI (file:/abs/path/mlruns, http(s)://host:port, databricks), runs:/RUN_ID or a 32-hex RUN_ID"
ARTIFACTS = ("report.md", "report.json", "*.png")
NOT_PARAMS = {"mlflow", "mlflow_experiment", "output"}  # where results go, not how they were made (a tag)
PER_USER = {"curve", "errors"}  # per-K and per-user lists of report.json, not summary numbers


@dataclass(frozen=True)
class TrackingTarget:
    """Where evaluation results go: a store (None: MLflow's default) and an existing run, or None for a new one."""

    tracking_uri: str | None
    run_id: str | None


def parse_target(value: str) -> TrackingTarget:
    """Read an ``mlflow=`` value strictly.

    Example:
        >>> parse_target("runs:/0123456789abcdef0123456789abcdef")
        TrackingTarget(tracking_uri=None, run_id='0123456789abcdef0123456789abcdef')
        >>> parse_target("file:///tmp/mlruns")
        TrackingTarget(tracking_uri='file:///tmp/mlruns', run_id=None)
        >>> parse_target("mlruns")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: mlflow: 'mlruns' is not a tracking URI (file:/abs/path/mlruns, ...; for a local store write ...

    Raises:
        ValueError: Naming the key and the accepted forms.
    """
    problem = f"mlflow: {value!r} is not {FORMS}; for a local store write mlflow=file:/absolute/path/mlruns"
    if not value or value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(problem)
    run = value.removeprefix("runs:/").rstrip("/") if value.startswith("runs:/") else value
    if RUN_ID.match(run):
        return TrackingTarget(None, run)
    if value.startswith("runs:/"):
        raise ValueError(f"mlflow: {value!r}: a run id is 32 hexadecimal characters (runs:/RUN_ID)")
    parsed = urlparse(value)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not Path(parsed.path).is_absolute() or parsed.query:
            raise ValueError(f"mlflow: {value!r}: a file store is file:/absolute/path (or file:///absolute/path)")
        return TrackingTarget(Path(parsed.path).as_uri(), None)
    if parsed.scheme in ("http", "https") and parsed.hostname and " " not in value:
        return TrackingTarget(value, None)
    if parsed.scheme == "databricks" or value == "databricks":
        return TrackingTarget(value, None)
    raise ValueError(problem)


def metric_name(name: str) -> str:
    """A metric or method name as an MLflow key part.

    Example:
        >>> metric_name("HR@10"), metric_name("model: beam_grounded"), metric_name("SASRec (cornac)")
        ('hr_at_10', 'beam_grounded', 'sasrec_cornac')
    """
    name = name.removeprefix("model: ").replace("@", "_at_").lower()
    return re.sub(r"[^a-z0-9_.-]+", "_", name).strip("_")


def report_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """Every number of ``report.json`` as MLflow metrics: ``<task>/<method>/<metric>`` with ``_low``/``_high``
    interval bounds, paired differences as ``paired/<task>/<model>-vs-<baseline>/<metric>``, and the user count.

    Example:
        >>> report = {"users": 3, "next_item": {"model: beam": {"HR@10": 0.5, "HR@10_ci": [0.1, 0.9], "curve": {}}},
        ...           "rating": {}, "paired": {"next_item": {"model: beam": {"most popular": {
        ...               "HR@10": {"difference": 0.2, "ci": [-0.1, 0.4]}}}}}}
        >>> sorted(report_metrics(report).items())  # doctest: +NORMALIZE_WHITESPACE
        [('evaluation/users', 3.0), ('next_item/beam/hr_at_10', 0.5), ('next_item/beam/hr_at_10_high', 0.9),
         ('next_item/beam/hr_at_10_low', 0.1), ('paired/next_item/beam-vs-most_popular/hr_at_10', 0.2),
         ('paired/next_item/beam-vs-most_popular/hr_at_10_high', 0.4),
         ('paired/next_item/beam-vs-most_popular/hr_at_10_low', -0.1)]
    """
    metrics = {"evaluation/users": float(report["users"])}
    for part in ("next_item", "rating"):
        for method, values in report[part].items():
            for key, value in values.items():
                if key in PER_USER:
                    continue
                metrics.update(_numbers(f"{part}/{metric_name(method)}/{metric_name(key.removesuffix('_ci'))}", value))
        for model, against in report.get("paired", {}).get(part, {}).items():
            for baseline, by_metric in against.items():
                prefix = f"paired/{part}/{metric_name(model)}-vs-{metric_name(baseline)}"
                for metric, result in by_metric.items():
                    metrics.update(_numbers(f"{prefix}/{metric_name(metric)}", result["difference"]))
                    metrics.update(_numbers(f"{prefix}/{metric_name(metric)}", result["ci"]))
    return metrics


def _numbers(key: str, value: Any) -> dict[str, float]:
    """``{key: value}`` for a finite number, ``{key_low, key_high}`` for an interval, nothing otherwise."""
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return {k: float(v) for k, v in zip((f"{key}_low", f"{key}_high"), value, strict=True) if math.isfinite(v)}
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return {key: float(value)}
    return {}


def config_params(config: Mapping[str, Any], prefix: str = "eval") -> dict[str, str]:
    """The evaluation config flattened to MLflow params (``eval/next_item/num_beams``), the mlflow keys left out.

    Example:
        >>> config_params({"split": "test", "ks": [5, 10], "rating": {"top_k": 50}, "mlflow": "x"})
        {'eval/split': 'test', 'eval/ks': '[5, 10]', 'eval/rating/top_k': '50'}
    """
    params: dict[str, str] = {}
    for key, value in config.items():
        if key in NOT_PARAMS:
            continue
        if isinstance(value, Mapping):
            params.update(config_params(value, f"{prefix}/{key}"))
        else:
            params[f"{prefix}/{key}"] = str(value)
    return params


def check_target(value: str, params: Mapping[str, str]) -> TrackingTarget:
    """Parse ``mlflow=`` and, for an existing run, check now (before evaluating) that it exists and that none of
    its parameters would change (MLflow parameters are write-once)."""
    target = parse_target(value)
    if target.run_id is None:
        return target
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(target.tracking_uri)
    try:
        run = client.get_run(target.run_id)
    except MlflowException as error:
        raise ValueError(
            f"mlflow: run {target.run_id} is not in the tracking store {client.tracking_uri} (set "
            "MLFLOW_TRACKING_URI to the store holding it, or give mlflow=<tracking URI> for a new run)"
        ) from error
    for key, new in params.items():
        if key in run.data.params and run.data.params[key] != new:
            raise ValueError(
                f"mlflow: run {target.run_id} already holds {key}={run.data.params[key]!r} and this evaluation has "
                f"{new!r} (MLflow parameters cannot change); evaluate with the same settings or log into a new run "
                "with mlflow=<tracking URI>"
            )
    return target


def log_evaluation(target: TrackingTarget, experiment: str, report: Mapping[str, Any], output: Path) -> str:
    """Log the report's metrics, the config and the report files into the target run; returns the run id.

    A new run is created in ``experiment`` (made if missing), named after the evaluated model, and ended FINISHED
    (FAILED if logging fails); an existing run keeps its status.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(target.tracking_uri)
    run_id = target.run_id or _new_run(client, experiment, report)
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in report_metrics(report).items()]
        params = [Param(k, v) for k, v in config_params(report["config"]).items()]
        existing = client.get_run(run_id).data.params
        params = [p for p in params if p.key not in existing]
        tags = [
            RunTag("recgpt.evaluated_model", str(report["model"])),
            RunTag("recgpt.benchmark", report["benchmark"]),
            RunTag("recgpt.evaluation_output", str(output)),
        ]
        for chunk in _chunks(metrics, 1000):
            client.log_batch(run_id, metrics=chunk)
        for chunk in _chunks(params, 100):
            client.log_batch(run_id, params=chunk)
        client.log_batch(run_id, tags=tags)
        for path in sorted({p for pattern in ARTIFACTS for p in output.glob(pattern)}):
            client.log_artifact(run_id, str(path), artifact_path="evaluation")
    except BaseException:
        if target.run_id is None:
            client.set_terminated(run_id, status="FAILED")
        raise
    if target.run_id is None:
        client.set_terminated(run_id)
    log.info("logged %d metrics and the report to MLflow run %s (%s)", len(metrics), run_id, client.tracking_uri)
    return run_id


def _new_run(client: Any, experiment: str, report: Mapping[str, Any]) -> str:
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    name = f"evaluate {Path(str(report['model'])).name if report['model'] else 'baselines'} {report['split']}"
    return client.create_run(experiment_id, run_name=name).info.run_id


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
