"""Tracking and model cards on one tiny run: the shipped demo pre-training recipe (shrunk by overrides) logs its loss
curve into an MLflow file store and writes a model card into its export; ``recgpt evaluate ... mlflow=`` logs the
metrics, config and report into that run and updates the card. Read back with MLflow's and the hub's own clients.
The fast checks of the same code (bad values, new runs, refused runs) are in tests/evaluation/test_tracking.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from mlflow import MlflowClient

from recgpt.config import load_config
from recgpt.evaluation.runner import EvalConfig, evaluate
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e  # a composer run (~60 s) and an evaluation of its export (~25 s)
BIN = Path(sys.executable).parent
BATCHES = 3


@pytest.fixture(scope="module")
def tracked(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path, Path]:
    """configs/demo/pre-training.yaml for 3 batches, tracked into a tmp store: (store URI, run folder, log)."""
    root = tmp_path_factory.mktemp("tracked")
    store = (root / "mlruns").as_uri()
    train(
        "configs/demo/pre-training.yaml",
        f"variables.data_dir={prepared}",
        f"variables.run_dir={root / 'pt'}",
        f"variables.mlflow_uri={store}",
        "variables.max_seq_len=128",
        "model.vocab_size=512",
        f"max_duration={BATCHES}ba",
        "global_train_batch_size=8",
        "device_train_microbatch_size=8",
    )
    return store, root / "pt", root


def training_run(store: str):
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("recgpt-demo")
    assert experiment is not None
    [run] = client.search_runs([experiment.experiment_id], "attributes.run_name = 'recgpt-demo-pre-training'")
    return client, run


def test_the_training_loss_curve_is_in_the_store(tracked):
    store, _, _ = tracked
    client, run = training_run(store)
    history = client.get_metric_history(run.info.run_id, "loss/train/total")
    assert [m.step for m in history] == list(range(BATCHES))  # composer logs batch i at step i
    assert all(0 < m.value < 20 for m in history)
    assert run.info.status == "FINISHED"
    assert run.data.params  # the recipe, logged by llm-foundry


def test_the_export_has_a_model_card_the_hub_parses(tracked, prepared: Path):
    _, run_folder, _ = tracked
    card = ModelCard.load(run_folder / "hf" / "huggingface" / "final" / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert card.data.datasets == ["ml-100k"] and "pre-training" in card.data.tags
    assert card.data.license == "other" and card.data.base_model is None  # from random weights
    assert card.data.eval_results is None  # not evaluated yet
    manifest = json.loads((prepared / "manifest.json").read_text())
    counts = manifest["sources"]["ml-100k"]
    assert f"| ml-100k | recbole | movies/shows | {counts['users']} | {counts['items']} |" in card.text
    assert "### Instruction:\n{instruction}\n\n### Response:" in card.text
    assert "Predict the next item.\nGiven the interaction history of a user with movies/shows" in card.text
    assert "Title: Example Item B; Rating:" in card.text  # the rating example, rendered by recgpt.data.render
    assert "may not be redistributed" in card.text
    assert "| global_train_batch_size | `8` |" in card.text and "mlflow_uri" in card.text  # the resolved recipe
    assert "tracking_uri" not in card.text  # the loggers section is left out


@pytest.fixture(scope="module")
def evaluated(tracked, prepared: Path) -> tuple[str, str, Path]:
    """``recgpt evaluate`` of the tiny export on 3 users, logged into the training run: (store, run id, output)."""
    store, run_folder, root = tracked
    _, run = training_run(store)
    config = eval_config(run_folder, prepared, root / "eval", f"mlflow=runs:/{run.info.run_id}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", store)
        evaluate(config)
    return store, run.info.run_id, root / "eval"


def eval_config(run_folder: Path, prepared: Path, output: Path, *extra: str) -> EvalConfig:
    return load_config(
        EvalConfig,
        ROOT / "configs" / "eval" / "demo.yaml",
        [
            f"model={run_folder / 'hf' / 'huggingface' / 'final'}",
            f"data={prepared}",
            f"output={output}",
            "max_users=3",
            "batch_size=3",
            "next_item.num_beams=2",
            "next_item.max_new_tokens=6",
            "rating.max_new_tokens=4",
            "bootstrap=50",
            *extra,
        ],
    )


def test_evaluate_logs_metrics_intervals_config_and_report_into_the_training_run(evaluated):
    store, run_id, output = evaluated
    client = MlflowClient(store)
    run = client.get_run(run_id)
    report = json.loads((output / "report.json").read_text())
    metrics = run.data.metrics
    hits = report["next_item"]["model: beam_grounded"]
    assert metrics["next_item/beam_grounded/hr_at_10"] == pytest.approx(hits["HR@10"])
    assert metrics["next_item/beam_grounded/hr_at_10_low"] == pytest.approx(hits["HR@10_ci"][0])
    assert metrics["next_item/beam_grounded/hr_at_10_high"] == pytest.approx(hits["HR@10_ci"][1])
    assert metrics["rating/sampled/rmse"] == pytest.approx(report["rating"]["model: sampled"]["RMSE"])
    assert metrics["next_item/most_popular/ndcg_at_5"] == pytest.approx(report["next_item"]["most popular"]["NDCG@5"])
    paired = report["paired"]["next_item"]["model: beam_grounded"]["most popular"]["HR@10"]
    assert metrics["paired/next_item/beam_grounded-vs-most_popular/hr_at_10"] == pytest.approx(paired["difference"])
    assert metrics["evaluation/users"] == 3
    assert run.data.params["eval/split"] == "test" and run.data.params["eval/next_item/num_beams"] == "2"
    assert "loss/train/total" in metrics  # the same run as the training
    artifacts = {Path(a.path).name for a in client.list_artifacts(run_id, "evaluation")}
    assert {"report.md", "report.json", "hr_at_k.png"} <= artifacts


def test_evaluate_puts_its_results_into_the_model_card(evaluated, tracked):
    _, _, output = evaluated
    _, run_folder, _ = tracked
    path = run_folder / "hf" / "huggingface" / "final" / "README.md"
    card = ModelCard.load(path)
    report = json.loads((output / "report.json").read_text())
    results = {(r.metric_type, r.metric_config): r for r in card.data.eval_results}
    hr = results[("hr@10", "beam_grounded")]
    assert hr.metric_value == pytest.approx(report["next_item"]["model: beam_grounded"]["HR@10"])
    assert (hr.dataset_type, hr.dataset_split, hr.task_name) == ("ml-100k", "test", "Next-item recommendation")
    assert ("rmse", "sampled") in results and not any(c == "most_popular" for _, c in results)
    assert "| most popular |" in card.text and "3 users of the `test` split" in card.text
    assert "Not evaluated yet" not in card.text and "may not be redistributed" in card.text  # the rest is kept
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".README")]  # no temporary file left


def test_a_tracking_uri_logs_into_a_new_run_of_the_experiment(evaluated, tracked, prepared: Path):
    store, run_id, _ = evaluated
    _, _, root = tracked
    config = load_config(
        EvalConfig,
        None,
        [f"data={prepared}", f"output={root / 'baselines'}", "max_users=3", "bootstrap=20", f"mlflow={store}"],
    )
    evaluate(config)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("recgpt-evaluate")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_id != run_id and run.info.status == "FINISHED"
    assert "next_item/most_popular/hr_at_10" in run.data.metrics


def train(recipe: str, *overrides: str) -> None:
    command = ["composer", "-n", "1", "scripts/train.py", recipe, *overrides]
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-6000:]


def test_fine_tuning_tracks_the_in_training_evaluation_and_cards_its_export(tracked, prepared: Path):
    """The demo fine-tuning recipe, tracked: recgpt_rec_eval's metrics reach MLflow (no "@" in their names)."""
    store, run_folder, root = tracked
    train(
        "configs/demo/fine-tuning.yaml",
        f"variables.data_dir={prepared}",
        f"variables.run_dir={root / 'ft'}",
        f"variables.pretrained={run_folder / 'hf' / 'huggingface' / 'final'}",
        f"variables.mlflow_uri={store}",
        "max_duration=2ba",
        "eval_interval=0",
        "global_train_batch_size=4",
        "device_train_microbatch_size=4",
        "callbacks.recgpt_rec_eval.max_users=2",
        "callbacks.recgpt_rec_eval.num_beams=2",
    )
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("recgpt-demo")
    [run] = client.search_runs([experiment.experiment_id], "attributes.run_name = 'recgpt-demo-fine-tuning'")
    assert {"metrics/rec_eval/HR_at_10", "metrics/rec_eval/RMSE", "loss/train/total"} <= set(run.data.metrics)
    card = ModelCard.load(root / "ft" / "hf" / "huggingface" / "final" / "README.md")
    assert "instruction-tuning" in card.data.tags and card.data.base_model is None  # the chain began at random
    assert f"starting from `{run_folder / 'hf' / 'huggingface' / 'final'}`" in card.text


def test_a_lora_adapter_export_carries_its_card(tracked, tmp_path: Path):
    _, run_folder, _ = tracked
    train(
        "configs/fine-tuning-lora.yaml",
        f"variables.model={run_folder / 'hf' / 'huggingface' / 'final'}",
        f"variables.data={ROOT / 'sample_instruction_following_dataset'}",
        f"variables.save_folder={tmp_path / 'lora'}",
        "variables.max_seq_len=128",
        "precision=fp32",
        "model.config_overrides.attn_config.attn_impl=torch",
        "train_loader.num_workers=0",
        "max_duration=1ba",
        "global_train_batch_size=2",
        "device_train_microbatch_size=2",
        "callbacks.memory_monitor=null",
        "callbacks.recgpt_model_card.base_model=null",
    )
    card = ModelCard.load(tmp_path / "lora" / "adapter" / "README.md")
    assert card.data.library_name == "peft" and "lora" in card.data.tags
    assert "LoRA adapter" in card.text and "| peft_config | `" in card.text
