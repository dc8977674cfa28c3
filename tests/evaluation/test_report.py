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
    assert report["paired"] == {"next_item": {}, "rating": {}}  # no model method, nothing to pair
    assert "paired" not in table and "## Paired" not in (tmp_path / "eval" / "report.md").read_text()
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
    levels = report["rating_levels"]
    assert set(levels["methods"]) == set(report["rating"]) and sum(levels["buckets"].values()) == 5
    assert abs(levels["methods"]["global mean"]["item"]) < 1e-9  # a constant follows no level
    for method, fit in levels["methods"].items():
        known = [v for v in fit["RMSE_by_item_ratings"].values() if v is not None]
        assert max(known) >= report["rating"][method]["RMSE"] - 1e-9 >= min(known) - 2e-9, method
    assert "## Rating levels" in (tmp_path / "eval" / "report.md").read_text()

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
    check_paired(report, rows, table, markdown)


def check_paired(report: dict, predictions: list[dict], table: list[str], markdown: str) -> None:
    """Every model method against every baseline, recomputed from the saved per-user predictions."""
    from recgpt.evaluation.metrics import hit_at_k

    paired = report["paired"]
    models = {part: [m for m in report[part] if m.startswith("model: ")] for part in ("next_item", "rating")}
    assert list(paired["next_item"]) == models["next_item"] and list(paired["rating"]) == models["rating"]
    for model in models["next_item"]:
        assert list(paired["next_item"][model]) == ["most popular", "SASRec (cornac)"]
        for baseline, metrics in paired["next_item"][model].items():
            assert list(metrics) == ["HR@5", "NDCG@5", "HR@10", "NDCG@10"]
            for metric, values in metrics.items():
                expected = report["next_item"][model][metric] - report["next_item"][baseline][metric]
                assert values["difference"] == pytest.approx(expected, abs=1e-12)
                assert values["ci"][0] <= values["ci"][1]
            hits = [
                hit_at_k(row["methods"][model]["ranked"], row["target"], 10)
                - hit_at_k(row["methods"][baseline]["ranked"], row["target"], 10)
                for row in predictions
                if row["task"] == "next_item"
            ]
            assert metrics["HR@10"]["difference"] == pytest.approx(sum(hits) / len(hits), abs=1e-12)
    for model in models["rating"]:
        assert list(paired["rating"][model]) == ["global mean", "MF (cornac)"]
        for baseline, metrics in paired["rating"][model].items():
            assert list(metrics) == ["RMSE", "MAE"]
            for metric, values in metrics.items():
                expected = report["rating"][model][metric] - report["rating"][baseline][metric]
                assert values["difference"] == pytest.approx(expected, abs=1e-9)
    block = table[table.index("paired differences on the same users (model - baseline), 95% bootstrap interval:") :]
    assert len(block) == 1 + 2 * len(models["next_item"]) + 2 * len(models["rating"])
    assert block[1].startswith("model: beam_grounded - most popular") and "  HR@5 " in block[1]
    assert any(line.startswith("model: expected - MF (cornac)") and "  RMSE " in line for line in block)
    assert "## Paired differences from the baselines" in markdown
    assert "| model: likelihood - SASRec (cornac) | " in markdown


def test_paired_block_of_the_printed_table_and_markdown():
    """The printed block and the Markdown section, from a hand-written report."""
    from recgpt.evaluation.report import format_markdown

    hr = {"difference": 0.007, "ci": [-0.0181, 0.0312]}
    ndcg = {"difference": -0.004, "ci": [-0.02, 0.011]}
    rmse = {"difference": -0.183, "ci": [-0.241, -0.127]}
    report = {
        "model": "m",
        "data": "d",
        "benchmark": "ml-100k",
        "split": "test",
        "users": 943,
        "config": {"ks": [10]},
        "next_item": {"model: x": {"HR@10": 0.088, "NDCG@10": 0.04}, "most popular": {"HR@10": 0.081}},
        "rating": {"model: expected": {"RMSE": 1.03}, "global mean": {"RMSE": 1.213}},
        "paired": {
            "next_item": {"model: x": {"most popular": {"HR@10": hr, "NDCG@10": ndcg}}},
            "rating": {"model: expected": {"global mean": {"RMSE": rmse}}},
        },
        "protocol": {"next_item": "full catalogue"},
        "wall_seconds": 1.0,
    }
    lines = format_table(report).splitlines()
    start = lines.index("paired differences on the same users (model - baseline), 95% bootstrap interval:")
    assert lines[start - 1] == "" and lines[start - 2].startswith("(943 users of the test split")
    assert lines[start + 1 :] == [
        "model: x - most popular        HR@10 +0.0070 [-0.018, +0.031]  NDCG@10 -0.0040 [-0.020, +0.011]",
        "model: expected - global mean  RMSE -0.1830 [-0.241, -0.127]",
    ]
    assert format_table(report, intervals=False).splitlines()[-1] == "model: expected - global mean  RMSE -0.1830"
    markdown = format_markdown(report, [])
    assert "| model - baseline | HR@10 | NDCG@10 | RMSE | MAE |" not in markdown  # only measured columns
    assert "| model - baseline | HR@10 | NDCG@10 | RMSE |" in markdown
    assert "| model: x - most popular | +0.0070 [-0.018, +0.031] | -0.0040 [-0.020, +0.011] |  |" in markdown
    del report["paired"]  # a report written before paired intervals still prints
    assert "paired" not in format_table(report) and "## Paired" not in format_markdown(report, [])


def test_unknown_method_is_named_before_anything_loads(prepared: Path, tmp_path: Path):
    config = EvalConfig(model="missing-folder", data=str(prepared), output=str(tmp_path))
    config.next_item.methods = ["beam_grounded", "nearest"]
    with pytest.raises(ValueError, match=r"next_item.methods: unknown 'nearest'"):
        evaluate(config)


def test_training_curve_is_tabled_and_plotted_in_the_report(prepared: Path, tmp_path: Path):
    curve = tmp_path / "rec_eval.jsonl"
    points = [
        {"batch": 200, "tokens": 90000, "target_tokens": 7000, "HR@10": 0.09, "NDCG@10": 0.04, "RMSE": 1.01},
        {"batch": 100, "tokens": 45000, "target_tokens": 3500, "HR@10": 0.05, "NDCG@10": 0.02, "RMSE": 1.2},
    ]
    curve.write_text("".join(json.dumps(point) + "\n" for point in points))
    output = tmp_path / "eval"
    report = json.loads(
        evaluate(EvalConfig(data=str(prepared), output=str(output), training_curve=str(curve))).read_text()
    )
    assert report["training_curve"] == points[::-1]  # in training order
    markdown = (output / "report.md").read_text()
    assert "| 100 | 45000 | 3500 | 0.0500 | 0.0200 | 1.2000 |" in markdown
    assert "![training_curve](training_curve.png)" in markdown
    assert (output / "training_curve.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"batch": 1, "tokens": 10}\nnot json\n', r"rec_eval\.jsonl:2: not a recgpt_rec_eval point"),
        ('{"batch": 1}\n', r"rec_eval\.jsonl:1: not a recgpt_rec_eval point"),
        ("", r"rec_eval\.jsonl has no points"),
    ],
)
def test_a_bad_training_curve_is_refused_by_file_and_line(prepared: Path, tmp_path: Path, text: str, match: str):
    curve = tmp_path / "rec_eval.jsonl"
    curve.write_text(text)
    with pytest.raises(ValueError, match=match):
        evaluate(EvalConfig(data=str(prepared), output=str(tmp_path / "eval"), training_curve=str(curve)))
    assert not (tmp_path / "eval").exists()  # refused before anything is written
