"""Evaluation reports: the JSON report, per-user predictions, and the metric table printed for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recgpt.files import write_text_atomic

RATING_COLUMNS = ("RMSE", "MAE")


def write_report(output: Path, report: dict[str, Any], predictions: Sequence[dict[str, Any]]) -> Path:
    """Write ``report.json`` and ``predictions.jsonl`` under ``output`` atomically; returns the report path."""
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in predictions)
    write_text_atomic(output / "predictions.jsonl", lines)
    path = output / "report.json"
    write_text_atomic(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return path


def format_table(report: dict[str, Any]) -> str:
    """One table of every method: ranking metrics, then rating metrics, blank where a method has none.

    Example::

        method         HR@5    NDCG@5  HR@10   NDCG@10  RMSE    MAE
        recgpt         0.0212  0.0131  0.0392  0.0189   1.2004  0.9141
        most popular   0.0318  0.0201  0.0530  0.0270
        global mean                                     1.1257  0.9452
    """
    ks = [key for key in report["next_item"][next(iter(report["next_item"]))] if key.startswith(("HR@", "NDCG@"))]
    columns = [*ks, *RATING_COLUMNS]
    methods = list(dict.fromkeys([*report["next_item"], *report["rating"]]))
    width = max(len("method"), *(len(m) for m in methods)) + 2
    lines = ["method".ljust(width) + "".join(c.ljust(9) for c in columns)]
    for method in methods:
        values = {**report["next_item"].get(method, {}), **report["rating"].get(method, {})}
        cells = "".join((f"{values[c]:.4f}" if c in values else "").ljust(9) for c in columns)
        lines.append((method.ljust(width) + cells).rstrip())
    lines.append(f"({report['users']} users of the {report['split']} split; {report['protocol']['next_item']})")
    return "\n".join(lines)
