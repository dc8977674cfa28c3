"""Tier 4: the demo pipeline (data -> CPT -> IFT -> evaluate -> recommend) on CPU, shrunk by overrides.

These run the shipped scripts and recipes (scripts/demo.sh, configs/demo/*.yaml) through composer, as users do.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str], env: dict[str, str] | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", **(env or {})}
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """scripts/demo.sh on 40 users, 6 batches of each training stage and 6 evaluated users."""
    folder = tmp_path_factory.mktemp("demo")
    result = run(
        ["bash", "scripts/demo.sh"],
        env={
            "DEMO_DIR": str(folder),
            "PREPARE_ARGS": "max_users=40",
            "PT_ARGS": "max_duration=6ba console_log_interval=2ba",
            "FT_ARGS": "max_duration=6ba eval_subset_num_batches=1",
            "EVAL_ARGS": "max_users=6 batch_size=6",
        },
    )
    return folder, result


def test_demo_runs_every_stage_and_ends_with_the_report_path(demo):
    folder, result = demo
    report_path = Path(result.stdout.strip().splitlines()[-1])
    assert report_path == folder / "eval" / "report.json"
    report = json.loads(report_path.read_text())
    assert report["users"] == 6
    assert set(report["next_item"]) == {"model: beam_grounded", "model: likelihood", "most popular"}
    assert set(report["rating"]) == {"model: sampled", "model: expected", "global mean"}
    for method in ("model: beam_grounded", "model: likelihood", "most popular"):
        assert {"HR@5", "NDCG@5", "HR@10", "NDCG@10", "HR@10_ci"} <= set(report["next_item"][method])
    assert 0.0 <= report["rating"]["model: sampled"]["parse_failure_rate"] <= 1.0
    assert (folder / "eval" / "report.md").is_file() and (folder / "eval" / "hr_at_k.png").is_file()
    assert "rec_eval at" in result.stderr  # the in-training evaluation callback of the fine-tuning recipe ran
    assert "Top-10 for user" in result.stderr and "Held-out next item" in result.stderr
    assert "/v1/recommend" in result.stderr and "/v1/rating: predicted" in result.stderr  # over the HTTP service
    assert "serving on http://127.0.0.1:" in (folder / "serve.log").read_text()
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert "==> [" in result.stderr and stage in result.stderr
    assert f"mlflow ui --backend-store-uri {folder.resolve() / 'mlruns'}" in result.stderr


def test_the_demo_tracks_every_stage_and_documents_its_model(demo):
    from huggingface_hub import ModelCard
    from mlflow.tracking import MlflowClient

    folder, _ = demo
    client = MlflowClient(tracking_uri=f"file:{folder.resolve() / 'mlruns'}")
    runs = {
        run.info.run_name: run
        for run in client.search_runs([client.get_experiment_by_name("recgpt-demo").experiment_id])
    }
    assert {"recgpt-demo-pre-training", "recgpt-demo-fine-tuning"} <= set(runs)
    assert client.get_metric_history(runs["recgpt-demo-pre-training"].info.run_id, "loss/train/total")
    card = ModelCard.load(str(folder / "fine-tuning" / "hf" / "huggingface" / "final" / "README.md"))
    results = card.data.eval_results or []
    assert {result.metric_config for result in results} >= {"beam_grounded", "likelihood", "expected"}


def test_exports_load_offline_with_their_code(demo):
    from transformers import AutoModelForCausalLM

    folder, _ = demo
    for stage in ("pre-training", "fine-tuning"):
        export = folder / stage / "hf" / "huggingface" / "final"
        assert (export / "modeling_mpt.py").is_file()
        model = AutoModelForCausalLM.from_pretrained(str(export), trust_remote_code=True)
        assert model.config.attn_config["alibi"]


def test_released_format_trains_by_changing_only_the_data_path(demo, tmp_path: Path):
    folder, _ = demo
    released = tmp_path / "released"
    released.mkdir()
    shutil.copy(
        ROOT / "sample_instruction_following_dataset" / "train.jsonl", released / "sample_prompt_response_pairs.jsonl"
    )  # the authors' file name, one split
    result = run(
        [
            "composer",
            "-n",
            "1",
            "scripts/train.py",
            "configs/demo/fine-tuning.yaml",
            f"train_loader.dataset.hf_name={released}",
            f"variables.data_dir={folder / 'data'}",
            f"variables.run_dir={tmp_path / 'run'}",
            f"variables.pretrained={folder / 'pre-training' / 'hf' / 'huggingface' / 'final'}",
            "max_duration=3ba",
            "eval_interval=0",
            "eval_subset_num_batches=1",
        ]
    )
    assert "recgpt_finetuning: 120 examples" in result.stdout + result.stderr
    assert (tmp_path / "run" / "hf" / "huggingface" / "final" / "model.safetensors").is_file()


def test_two_processes_train_with_ddp_over_gloo(demo, tmp_path: Path):
    folder, _ = demo
    result = run(
        [
            "composer",
            "-n",
            "2",
            "scripts/train.py",
            "configs/demo/pre-training.yaml",
            f"variables.data_dir={folder / 'data'}",
            f"variables.run_dir={tmp_path / 'pt'}",
            "max_duration=4ba",
            "global_train_batch_size=8",
            "device_train_microbatch_size=4",
        ]
    )
    log = result.stdout + result.stderr
    assert "n_gpus: 2" in log and "device_train_batch_size: 4" in log  # two processes share the batch of 8
    assert (tmp_path / "pt" / "hf" / "huggingface" / "final" / "model.safetensors").is_file()
    run(
        [
            "composer",
            "-n",
            "2",
            "scripts/train.py",
            "configs/demo/fine-tuning.yaml",
            f"variables.data_dir={folder / 'data'}",
            f"variables.run_dir={tmp_path / 'ft'}",
            f"variables.pretrained={tmp_path / 'pt' / 'hf' / 'huggingface' / 'final'}",
            "max_duration=3ba",
            "global_train_batch_size=4",
            "device_train_microbatch_size=2",
            "eval_subset_num_batches=1",
        ]
    )
    assert (tmp_path / "ft" / "hf" / "huggingface" / "final" / "modeling_mpt.py").is_file()


def test_lora_recipe_trains_adapters_and_exports_them(demo, tmp_path: Path):
    """configs/fine-tuning-lora.yaml shrunk to CPU: only the adapters train; the export loads merged."""
    from recgpt.inference.generate import generate, load_model

    folder, _ = demo
    base = folder / "fine-tuning" / "hf" / "huggingface" / "final"
    run(
        [
            "composer",
            "-n",
            "1",
            "scripts/train.py",
            "configs/fine-tuning-lora.yaml",
            f"variables.model={base}",
            f"variables.data={ROOT / 'sample_instruction_following_dataset'}",
            f"variables.save_folder={tmp_path / 'lora'}",
            "variables.max_seq_len=256",
            "precision=fp32",
            "model.config_overrides.attn_config.attn_impl=torch",
            "train_loader.num_workers=0",
            "max_duration=2ba",
            "global_train_batch_size=4",
            "device_train_microbatch_size=2",
            "callbacks.memory_monitor=null",
        ]
    )
    export = tmp_path / "lora" / "adapter"
    assert (export / "adapter_config.json").is_file()
    model, tokenizer = load_model(export)
    prompt = json.loads((ROOT / "sample_instruction_following_dataset" / "train.jsonl").open().readline())["prompt"]
    [candidates] = generate(model, tokenizer, [prompt], max_new_tokens=4)
    assert isinstance(candidates[0].text, str)
