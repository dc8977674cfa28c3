"""Crash and resume: a run killed with SIGKILL mid-epoch and restarted with the same command ends like one that
was never interrupted (same losses after the resume point, same final weights)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
LOSS = re.compile(r"\[batch=(\d+)/\d+\]:.*?Train loss/train/total: ([0-9.]+)", re.S)


SMALL = ["variables.max_seq_len=128", "model.vocab_size=512"]  # the `prepared` data's length and vocabulary
RESUMABLE = [
    "max_duration=12ba",
    "save_interval=3ba",
    "console_log_interval=1ba",
    "global_train_batch_size=8",
    "device_train_microbatch_size=8",
]


def command(recipe: str, run: Path, data: Path, *overrides: str) -> list[str]:
    return [
        "composer",
        "-n",
        "1",
        "scripts/train.py",
        recipe,
        f"variables.data_dir={data}",
        f"variables.run_dir={run}",
        *overrides,
    ]


def environment() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def losses(log: str) -> dict[int, float]:
    return {int(batch): float(loss) for batch, loss in LOSS.findall(log)}


def run_to_end(cmd: list[str], log: Path) -> dict[int, float]:
    with log.open("w") as handle:
        subprocess.run(
            cmd, cwd=ROOT, env=environment(), stdout=handle, stderr=subprocess.STDOUT, check=True, timeout=900
        )
    return losses(log.read_text())


def weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run / "hf" / "huggingface" / "final" / "model.safetensors"))


def kill_after_a_checkpoint(cmd: list[str], run: Path, log: Path) -> int:
    """Start the run, SIGKILL it once its latest checkpoint is past batch 3 and before the end; the batch saved."""
    latest = run / "checkpoints" / "latest-rank0.pt"
    with log.open("w") as handle:
        process = subprocess.Popen(
            cmd, cwd=ROOT, env=environment(), stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 600
        while time.time() < deadline and process.poll() is None:
            if latest.is_symlink() and "ba3-" in os.readlink(latest):
                os.killpg(process.pid, signal.SIGKILL)  # the launcher and its training process
                process.wait()
                return 3
            time.sleep(0.05)
    pytest.fail(f"the run ended before a checkpoint could be interrupted:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def pretrained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pt")
    run_to_end(command("configs/demo/pre-training.yaml", run, prepared, "max_duration=2ba", *SMALL), run / "log.txt")
    return run / "hf" / "huggingface" / "final"


@pytest.mark.parametrize("recipe", ["configs/demo/pre-training.yaml", "configs/demo/fine-tuning.yaml"])
def test_a_killed_run_resumes_to_the_same_result(recipe: str, prepared: Path, pretrained: Path, tmp_path: Path):
    extra = SMALL if "pre-training" in recipe else [f"variables.pretrained={pretrained}", "eval_interval=0"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    reference = run_to_end(command(recipe, whole, prepared, *RESUMABLE, *extra), tmp_path / "whole.log")
    assert max(reference) == 12
    cmd = command(recipe, broken, prepared, *RESUMABLE, *extra)
    saved = kill_after_a_checkpoint(cmd, broken, tmp_path / "first.log")
    resumed = run_to_end(cmd, tmp_path / "second.log")
    after = sorted(batch for batch in resumed if batch > saved)
    assert after and after[-1] == 12 and min(resumed) > saved  # it continued, it did not start over
    for batch in after:
        assert resumed[batch] == pytest.approx(reference[batch], abs=1e-4), batch
    expected, actual = weights(whole), weights(broken)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4)


def test_a_checkpoint_cut_off_while_saving_is_never_resumed_from(prepared: Path, tmp_path: Path):
    """Composer writes a checkpoint file, then points ``latest`` at it: a kill mid-write leaves the previous one as
    latest, and the launcher moves the partial file aside so the restart is not refused."""
    run = tmp_path / "run"
    cmd = command("configs/demo/pre-training.yaml", run, prepared, *RESUMABLE, *SMALL)
    saved = kill_after_a_checkpoint(cmd, run, tmp_path / "first.log")
    good = run / "checkpoints" / os.readlink(run / "checkpoints" / "latest-rank0.pt")
    half = run / "checkpoints" / "ep0-ba6-rank0.pt"
    half.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # what a kill during the next save leaves
    resumed = run_to_end(cmd, tmp_path / "second.log")
    assert min(resumed) == saved + 1 and max(resumed) == 12
    assert (run / "checkpoints" / "interrupted" / "ep0-ba6-rank0.pt").stat().st_size == good.stat().st_size // 2
