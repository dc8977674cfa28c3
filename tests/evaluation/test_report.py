"""The evaluation runner without a model (baselines only) on real prepared data, and the report files."""

from __future__ import annotations

import json
from pathlib import Path

from recgpt.evaluation.report import format_table
from recgpt.evaluation.runner import EvalConfig, evaluate


def test_baselines_only_report_and_table(prepared: Path, tmp_path: Path):
    path = evaluate(EvalConfig(model=None, data=str(prepared), output=str(tmp_path / "eval")))
    report = json.loads(path.read_text())
    assert report["users"] == 40
    assert set(report["next_item"]) == {"most popular"}
    assert set(report["next_item"]["most popular"]) == {"HR@5", "NDCG@5", "HR@10", "NDCG@10"}
    assert 0.0 <= report["next_item"]["most popular"]["NDCG@10"] <= report["next_item"]["most popular"]["HR@10"] <= 1.0
    assert report["rating"]["global mean"]["RMSE"] >= report["rating"]["global mean"]["MAE"] > 0
    table = format_table(report)
    assert table.splitlines()[0].split() == ["method", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "RMSE", "MAE"]
    assert table.splitlines()[1].startswith("most popular")
    assert (tmp_path / "eval" / "predictions.jsonl").exists()
