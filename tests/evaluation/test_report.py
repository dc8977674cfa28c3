"""The evaluation runner without a model (baselines only) on real prepared data, and the report files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recgpt.evaluation.report import format_table
from recgpt.evaluation.runner import EvalConfig, evaluate


def test_baselines_only_report_and_table(prepared: Path, tmp_path: Path):
    path = evaluate(EvalConfig(model=None, data=str(prepared), output=str(tmp_path / "eval")))
    report = json.loads(path.read_text())
    assert report["users"] == 40
    assert set(report["next_item"]) == {"most popular"}
    assert {"HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@10_ci", "curve"} <= set(report["next_item"]["most popular"])
    assert 0.0 <= report["next_item"]["most popular"]["NDCG@10"] <= report["next_item"]["most popular"]["HR@10"] <= 1.0
    assert report["rating"]["global mean"]["RMSE"] >= report["rating"]["global mean"]["MAE"] > 0
    table = format_table(report)
    assert table.splitlines()[0].split() == ["method", "HR@5", "NDCG@5", "HR@10", "NDCG@10", "RMSE", "MAE"]
    assert table.splitlines()[1].startswith("most popular")
    assert (tmp_path / "eval" / "predictions.jsonl").exists()


def test_every_method_side_by_side_with_intervals_plots_and_predictions(prepared: Path, tmp_path: Path, monkeypatch):
    """A tiny untrained MPT stands in for a trained folder (loading is the only thing replaced); every method runs."""
    from transformers import AutoTokenizer

    from recgpt.config import load_config
    from tests.training.test_tiny_model import tiny_mpt

    tokenizer = AutoTokenizer.from_pretrained(str(prepared / "tokenizer"))
    tokenizer.padding_side = "left"
    monkeypatch.setattr(
        "recgpt.inference.generate.load_model", lambda folder: (tiny_mpt(len(tokenizer)).eval(), tokenizer)
    )
    root = Path(__file__).resolve().parents[2]
    config = load_config(
        EvalConfig,
        root / "configs" / "eval" / "full.yaml",
        [
            "model=tiny",
            f"data={prepared}",
            f"output={tmp_path / 'eval'}",
            "max_users=5",
            "next_item.num_beams=3",
            "next_item.max_new_tokens=10",
            "baselines.sasrec_epochs=1",
            "baselines.mf_epochs=5",
            "bootstrap=200",
        ],
    )
    report = json.loads(evaluate(config).read_text())
    assert list(report["next_item"]) == [
        "model: beam_grounded",
        "model: constrained_beam",
        "model: likelihood",
        "most popular",
        "SASRec (cornac)",
    ]
    # MovieLens has no reviews: the without_review prompts would repeat the with_review ones, so they are skipped
    assert list(report["rating"]) == [
        "model: sampled",
        "model: greedy",
        "model: expected",
        "global mean",
        "MF (cornac)",
    ]
    for part in ("next_item", "rating"):
        for method, values in report[part].items():
            for metric in ("HR@10", "NDCG@5") if part == "next_item" else ("RMSE", "MAE"):
                low, high = values[f"{metric}_ci"]
                assert low <= values[metric] <= high, (method, metric)
    curve = report["next_item"]["most popular"]["curve"]
    assert list(curve.values()) == sorted(curve.values()) and len(curve) == 10
    assert report["next_item"]["model: constrained_beam"]["ungrounded_rate"] <= 1.0
    assert 0.0 <= report["rating"]["model: sampled"]["parse_failure_rate"] <= 1.0
    assert report["rating"]["model: expected"]["parse_failure_rate"] == 0.0
    assert report["rating"]["model: expected"]["RMSE"] < 4.0  # an expectation over 1..5 is never far off

    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").open()]
    assert [r["task"] for r in rows] == ["next_item"] * 5 + ["rating"] * 5
    split = {
        (r["user_id"], r["task"]): r
        for r in map(json.loads, (prepared / "benchmark" / "ml-100k" / "test.jsonl").open())
    }
    for row in rows[:5]:
        assert set(row["methods"]) == set(report["next_item"])
        seen = set(split[(row["user_id"], "next_item")]["history_item_ids"])
        for method, output in row["methods"].items():
            assert not seen & set(output["ranked"]), method  # seen items excluded for every method
            assert len(output["ranked"]) == len(set(output["ranked"]))
        assert len(row["methods"]["model: likelihood"]["ranked"]) == 10
        assert len(row["methods"]["model: beam_grounded"]["generated"]) == 3
    assert all(isinstance(r["methods"]["MF (cornac)"]["predicted"], float) for r in rows[5:])

    markdown = (tmp_path / "eval" / "report.md").read_text()
    assert "| model: constrained_beam | " in markdown and "## Decoding diagnostics" in markdown
    for name in ("hr_at_k.png", "rating_errors.png", "failure_rates.png"):
        assert (tmp_path / "eval" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name})" in markdown
    table = format_table(report).splitlines()
    assert table[1].startswith("model: beam_grounded") and "[" in table[1]


def test_unknown_method_is_named_before_anything_loads(prepared: Path, tmp_path: Path):
    config = EvalConfig(model="missing-folder", data=str(prepared), output=str(tmp_path))
    config.next_item.methods = ["beam_grounded", "nearest"]
    with pytest.raises(ValueError, match=r"next_item.methods: unknown 'nearest'"):
        evaluate(config)
