"""``recgpt evaluate ... mlflow=``: baselines-only evaluations logged into a real local MLflow store, read back with
MLflow's client; bad values and runs refused before any work. (tests/training/test_tracking.py runs the same path
on a tiny trained model, e2e.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from recgpt.config import load_config
from recgpt.evaluation.runner import EvalConfig, evaluate
from recgpt.evaluation.tracking import parse_target
from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def baselines(prepared: Path, output: Path, *extra: str) -> EvalConfig:
    return load_config(
        EvalConfig, None, [f"data={prepared}", f"output={output}", "max_users=5", "bootstrap=20", *extra]
    )


def test_a_tracking_uri_gets_a_new_finished_run_with_metrics_params_and_report(prepared: Path, tmp_path: Path):
    store = (tmp_path / "mlruns").as_uri()
    evaluate(baselines(prepared, tmp_path / "eval", f"mlflow={store}", "mlflow_experiment=team-evals"))
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("team-evals")
    [run] = client.search_runs([experiment.experiment_id])
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    popular = report["next_item"]["most popular"]
    assert run.info.status == "FINISHED" and run.info.run_name == "evaluate baselines test"
    assert run.data.metrics["next_item/most_popular/hr_at_10"] == pytest.approx(popular["HR@10"])
    assert run.data.metrics["next_item/most_popular/hr_at_10_low"] == pytest.approx(popular["HR@10_ci"][0])
    assert run.data.metrics["rating/global_mean/mae_high"] == pytest.approx(
        report["rating"]["global mean"]["MAE_ci"][1]
    )
    assert run.data.metrics["evaluation/users"] == 5
    assert run.data.params["eval/max_users"] == "5" and "eval/mlflow" not in run.data.params
    assert {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "evaluation")} >= {
        "report.md",
        "report.json",
        "hr_at_k.png",
    }


def test_a_run_id_logs_into_that_run_of_the_store_mlflow_tracking_uri_names(prepared, tmp_path, monkeypatch):
    store = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment("training"), run_name="a training run")
    client.log_metric(run.info.run_id, "loss/train/total", 3.0, step=7)
    client.set_terminated(run.info.run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    evaluate(baselines(prepared, tmp_path / "eval", f"mlflow={run.info.run_id}"))
    logged = client.get_run(run.info.run_id)
    assert "next_item/most_popular/ndcg_at_5" in logged.data.metrics and "loss/train/total" in logged.data.metrics
    assert logged.info.status == "FINISHED"  # an existing run keeps its status
    evaluate(baselines(prepared, tmp_path / "eval", f"mlflow=runs:/{run.info.run_id}"))  # same settings: allowed
    with pytest.raises(ValueError, match=r"already holds eval/max_users='5' and this evaluation has '6'"):
        evaluate(baselines(prepared, tmp_path / "other", f"mlflow={run.info.run_id}", "max_users=6"))
    with pytest.raises(ValueError, match=r"mlflow: run f{32} is not in the tracking store file://"):
        evaluate(baselines(prepared, tmp_path / "other", f"mlflow=runs:/{'f' * 32}"))
    assert not (tmp_path / "other").exists()  # refused before any work


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("mlruns", r"mlflow: 'mlruns' is not a tracking URI .*; for a local store write mlflow=file:/absolute/path"),
        ("file:mlruns", r"mlflow: 'file:mlruns': a file store is file:/absolute/path"),
        ("file://server/mlruns", r"a file store is file:/absolute/path"),
        ("runs:/123", r"mlflow: 'runs:/123': a run id is 32 hexadecimal characters"),
        ("http://host/$(rm -rf ~)\n", r"is not a tracking URI"),
        ("s3://bucket/mlruns", r"is not a tracking URI"),
    ],
)
def test_a_bad_value_is_refused_naming_the_key(value: str, message: str, prepared: Path, tmp_path: Path):
    config = baselines(prepared, tmp_path / "eval")
    config.mlflow = value
    with pytest.raises(ValueError, match=message):
        evaluate(config)
    assert not (tmp_path / "eval").exists()


def test_accepted_forms():
    run = "0123456789abcdef0123456789abcdef"
    assert parse_target(f"runs:/{run}/") == parse_target(run) == parse_target(f"runs:/{run}")
    assert parse_target("file:/tmp/my runs").tracking_uri == "file:///tmp/my%20runs"
    assert parse_target("http://mlflow.team:5000").tracking_uri == "http://mlflow.team:5000"
    assert parse_target("databricks").run_id is None


def test_the_cli_says_it_in_one_line(prepared: Path):
    result = subprocess.run(
        [str(BIN / "recgpt"), "evaluate", "configs/eval/demo.yaml", "model=null", f"data={prepared}", "mlflow=no uri"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "ERROR recgpt: mlflow: 'no uri' is not a tracking URI" in errors[0]
