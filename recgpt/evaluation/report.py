"""Evaluation reports: ``report.json``, ``report.md`` with its plots, per-user ``predictions.jsonl``, and the
table printed for people."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recgpt.data.render import json_line
from recgpt.files import write_bytes_atomic, write_text_atomic

RATING_COLUMNS = ("RMSE", "MAE")
DIAGNOSTICS = {
    "ungrounded_rate": "ungrounded / invalid beams",
    "duplicate_rate": "duplicate items among beams",
    "parse_failure_rate": "unparseable ratings",
}


def write_report(output: Path, report: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> Path:
    """Write ``report.json``, ``report.md``, its plots and ``predictions.jsonl`` under ``output``, each atomically.

    Returns:
        The path of ``report.json``.
    """
    lines = "".join(json_line(row) for row in predictions)
    write_text_atomic(output / "predictions.jsonl", lines)
    plots = write_plots(output, report)
    write_text_atomic(output / "report.md", format_markdown(report, plots))
    path = output / "report.json"
    write_text_atomic(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path


def _columns(report: dict[str, Any]) -> list[str]:
    ks = report["config"]["ks"]
    return [*(f"{name}@{k}" for k in ks for name in ("HR", "NDCG")), *RATING_COLUMNS]


def _methods(report: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys([*report["next_item"], *report["rating"]]))


def _cell(values: dict[str, Any], column: str, intervals: bool) -> str:
    if column not in values or (isinstance(values[column], float) and math.isnan(values[column])):
        return ""
    low, high = values.get(f"{column}_ci", (math.nan, math.nan))
    return f"{values[column]:.4f} [{low:.3f}, {high:.3f}]" if intervals else f"{values[column]:.4f}"


def _difference(values: dict[str, Any], intervals: bool) -> str:
    low, high = values["ci"]
    return f"{values['difference']:+.4f} [{low:+.3f}, {high:+.3f}]" if intervals else f"{values['difference']:+.4f}"


def _pairs(report: dict[str, Any]) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """``("model: x - most popular", {metric: {"difference", "ci"}})`` for every paired comparison, in order."""
    paired = report.get("paired", {})  # reports written before paired intervals have none
    return [
        (f"{model} - {baseline}", metrics)
        for part in ("next_item", "rating")
        for model, against in paired.get(part, {}).items()
        for baseline, metrics in against.items()
        if metrics
    ]


def format_paired(report: dict[str, Any], intervals: bool = True) -> str:
    """The paired differences (model minus baseline on the same users), one line per pair; empty if none.

    Example::

        paired differences on the same users (model - baseline), 95% bootstrap interval:
        model: likelihood - most popular  HR@5 +0.0040 [-0.021, +0.029]  NDCG@5 ...  HR@10 +0.0070 [-0.018, +0.031]
        model: expected - global mean     RMSE -0.1830 [-0.241, -0.127]  MAE -0.1460 [-0.190, -0.101]
    """
    pairs = _pairs(report)
    if not pairs:
        return ""
    width = max(len(name) for name, _ in pairs) + 2
    lines = [
        "paired differences on the same users (model - baseline)" + (", 95% bootstrap interval:" if intervals else ":")
    ]
    for name, metrics in pairs:
        cells = "  ".join(f"{metric} {_difference(values, intervals)}" for metric, values in metrics.items())
        lines.append(name.ljust(width) + cells)
    return "\n".join(lines)


def format_table(report: dict[str, Any], intervals: bool = True) -> str:
    """One table of every method: ranking metrics, then rating metrics, blank where a method has none; then the
    paired differences of each model method from each baseline (``format_paired``).

    Each cell is the mean over users and, with ``intervals``, its 95% bootstrap interval. Example::

        method               HR@5                    NDCG@5                  ...  RMSE
        model: beam_grounded 0.0212 [0.012, 0.031]   0.0131 [0.007, 0.020]   ...
        most popular         0.0318 [0.021, 0.043]   0.0201 [0.013, 0.028]   ...
        global mean                                                          ...  1.1257 [1.071, 1.183]
    """
    columns = _columns(report)
    methods = _methods(report)
    width = max(len("method"), *(len(m) for m in methods)) + 2
    cell_width = 25 if intervals else 9
    lines = ["method".ljust(width) + "".join(c.ljust(cell_width) for c in columns)]
    for method in methods:
        values = {**report["next_item"].get(method, {}), **report["rating"].get(method, {})}
        cells = "".join(_cell(values, c, intervals).ljust(cell_width) for c in columns)
        lines.append((method.ljust(width) + cells).rstrip())
    lines.append(f"({report['users']} users of the {report['split']} split; {report['protocol']['next_item']})")
    paired = format_paired(report, intervals)
    return "\n".join([*lines, *(["", paired] if paired else [])])


def format_markdown(report: dict[str, Any], plots: Sequence[str]) -> str:
    """The report as Markdown: the metric table with intervals, the paired differences from the baselines,
    diagnostics, the protocol and the plots."""
    lines = [
        f"# Evaluation of `{report['model'] or 'baselines only'}`",
        "",
        f"{report['users']} users of the `{report['split']}` split of `{report['benchmark']}` "
        f"(data `{report['data']}`); mean over users with a 95% bootstrap interval.",
        "",
        *markdown_table(report),
    ]
    lines += _paired_markdown(report)
    diagnosed = [
        (m, v)
        for part in ("next_item", "rating")
        for m, v in report[part].items()
        if any(key in v for key in (*DIAGNOSTICS, "items_per_list"))
    ]
    if diagnosed:
        keys = [*DIAGNOSTICS, "items_per_list", "users_per_second"]
        lines += [
            "",
            "## Decoding diagnostics",
            "",
            "| method | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for method, values in diagnosed:
            lines.append(f"| {method} | " + " | ".join(f"{values[k]:.4f}" if k in values else "" for k in keys) + " |")
    lines += _levels_markdown(report)
    lines += _curve_markdown(report)
    lines += ["", "## Protocol", "", *(f"- {part}: {text}" for part, text in report["protocol"].items())]
    if plots:
        lines += ["", "## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots)]
    lines += ["", f"Wall time: {report['wall_seconds']} s.", ""]
    return "\n".join(lines)


def markdown_table(report: dict[str, Any]) -> list[str]:
    """The metric table as Markdown lines: one row per method, each cell the mean and its 95% interval."""
    columns = _columns(report)
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for method in _methods(report):
        values = {**report["next_item"].get(method, {}), **report["rating"].get(method, {})}
        lines.append(f"| {method} | " + " | ".join(_cell(values, c, True) for c in columns) + " |")
    return lines


def _paired_markdown(report: dict[str, Any]) -> list[str]:
    """The paired differences as a Markdown table (model - baseline rows, one column per metric)."""
    pairs = _pairs(report)
    if not pairs:
        return []
    columns = [c for c in _columns(report) if any(c in metrics for _, metrics in pairs)]
    lines = [
        "",
        "## Paired differences from the baselines",
        "",
        "Model minus baseline on the same users, with the 95% interval of the difference from shared resamples of "
        "users. An interval above zero (HR, NDCG) or below zero (RMSE, MAE) means the model beats that baseline.",
        "",
        "| model - baseline | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, metrics in pairs:
        cells = [_difference(metrics[c], True) if c in metrics else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _levels_markdown(report: dict[str, Any]) -> list[str]:
    """How each rating method follows the item's and the user's mean training rating (``recgpt.evaluation.levels``)."""
    levels = report.get("rating_levels") or {}
    if not levels:
        return []
    buckets = levels["buckets"]
    lines = [
        "",
        "## Rating levels",
        "",
        "Least-squares response of each method's predictions to the target item's and the user's mean training "
        "rating (minus the global mean); the targets' own response is what an ideal predictor follows. Then RMSE "
        "by the target item's number of training ratings (rows in brackets).",
        "",
        "| method | item | user | " + " | ".join(f"RMSE, item {b} ({n})" for b, n in buckets.items()) + " |",
        "|---" * (len(buckets) + 3) + "|",
        f"| (targets) | {levels['targets']['item']:.3f} | {levels['targets']['user']:.3f} |" + " |" * len(buckets),
    ]
    for method, fit in levels["methods"].items():
        cells = ["" if v is None else f"{v:.4f}" for v in fit["RMSE_by_item_ratings"].values()]
        lines.append(f"| {method} | {fit['item']:.3f} | {fit['user']:.3f} | " + " | ".join(cells) + " |")
    return lines


def _curve_markdown(report: dict[str, Any]) -> list[str]:
    """The training run's ``recgpt_rec_eval`` points as a Markdown table (validation sample, during training)."""
    points = report.get("training_curve") or []
    if not points:
        return []
    metrics = list(dict.fromkeys(k for p in points for k in p if k not in ("batch", "tokens", "target_tokens")))
    lines = [
        "",
        "## During training",
        "",
        f"`recgpt_rec_eval` on its validation sample ({report['config']['training_curve']}), against the tokens "
        "the run trained on (target tokens: those that carried loss).",
        "",
        "| batch | tokens | target tokens | " + " | ".join(metrics) + " |",
        "|---" * (len(metrics) + 3) + "|",
    ]
    for point in points:
        cells = [f"{point[m]:.4f}" if m in point else "" for m in metrics]
        lines.append(
            f"| {point['batch']} | {point['tokens']} | {point.get('target_tokens', '')} | " + " | ".join(cells) + " |"
        )
    return lines


def _plot_training_curve(plt: Any, points: Sequence[dict[str, Any]]) -> Any:
    """HR@K (left axis) and RMSE (right axis) of the validation sample against training tokens."""
    figure, axes = plt.subplots(figsize=(6, 4))
    tokens = [point["tokens"] / 1e6 for point in points]
    hits = sorted({key for point in points for key in point if key.startswith("HR@")}, key=lambda k: int(k[3:]))
    for key in hits:
        axes.plot(tokens, [point.get(key, math.nan) for point in points], marker="o", label=key)
    axes.set(xlabel="training tokens (millions)", ylabel="HR@K", title="Validation sample during training")
    axes.grid(alpha=0.3)
    if any("RMSE" in point for point in points):
        right = axes.twinx()
        right.plot(tokens, [point.get("RMSE", math.nan) for point in points], color="tab:red", marker="s", label="RMSE")
        right.set_ylabel("RMSE")
        right.legend(fontsize=8, loc="upper right")
    axes.legend(fontsize=8, loc="upper left")
    return figure


def write_plots(output: Path, report: dict[str, Any]) -> list[str]:
    """HR@K against K per method, the rating error distribution, the invalid / parse-failure rates, and the training
    run's curve when the report has one (PNG).

    Returns:
        The written files' names, relative to ``output``.
    """
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(figure: Any, name: str) -> None:
        buffer = io.BytesIO()
        figure.tight_layout()
        figure.savefig(buffer, format="png", dpi=110)
        plt.close(figure)
        write_bytes_atomic(output / name, buffer.getvalue())
        written.append(name)

    curves = {m: v["curve"] for m, v in report["next_item"].items() if v.get("curve")}
    if curves:
        figure, axes = plt.subplots(figsize=(6, 4))
        for method, curve in curves.items():
            ks = sorted(int(k) for k in curve)
            axes.plot(ks, [curve[k] if k in curve else curve[str(k)] for k in ks], marker="o", label=method)
        axes.set(xlabel="K", ylabel="HR@K", title=f"Next item: hit rate at K ({report['users']} users)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        save(figure, "hr_at_k.png")
    errors = {m: v["errors"] for m, v in report["rating"].items() if v.get("errors")}
    if errors:
        figure, axes = plt.subplots(figsize=(6, 4))
        axes.hist(list(errors.values()), bins=16, label=list(errors), alpha=0.8)
        axes.set(xlabel="predicted - true rating", ylabel="users", title="Rating error distribution")
        axes.legend(fontsize=8)
        save(figure, "rating_errors.png")
    rates = [
        (f"{m}\n{DIAGNOSTICS[k]}", v[k])
        for part in ("next_item", "rating")
        for m, v in report[part].items()
        for k in DIAGNOSTICS
        if k in v
    ]
    if rates:
        figure, axes = plt.subplots(figsize=(6, 0.6 * len(rates) + 1.2))
        axes.barh([label for label, _ in rates], [rate for _, rate in rates])
        axes.set(xlabel="rate", xlim=(0, 1), title="Invalid, duplicate and unparseable outputs")
        axes.tick_params(axis="y", labelsize=7)
        axes.invert_yaxis()
        save(figure, "failure_rates.png")
    if report.get("training_curve"):
        save(_plot_training_curve(plt, report["training_curve"]), "training_curve.png")
    return written
