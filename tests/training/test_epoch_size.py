"""A loader whose epoch has no batch is refused at build time; drop_last discarding much data is logged."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, DistributedSampler

from recgpt.training.dataloader import EpochShape
from tests.conftest import ROOT

LOGGER = "recgpt.training.dataloader"
SAMPLE = ROOT / "sample_instruction_following_dataset" / "train.jsonl"


def write_rows(path: Path, count: int) -> Path:
    """The first ``count`` rows of the shipped sample dataset (RecGPT's prompt/response format)."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()[:count]
    assert len(lines) == count
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def loader_config(path: Path, drop_last: bool, packing: bool = False, split: str = "train", length: int = 256) -> dict:
    return {
        "name": "recgpt_finetuning",
        "dataset": {"hf_name": str(path), "split": split, "max_seq_len": length, "shuffle": False, "packing": packing},
        "drop_last": drop_last,
        "num_workers": 0,
        "pin_memory": False,
        "prefetch_factor": None,
        "persistent_workers": False,
    }


@pytest.mark.parametrize(
    ("sequences", "batch_size", "world_size", "drop_last"),
    list(itertools.product([1, 5, 12, 16, 17, 37], [1, 4, 16], [1, 2, 3], [True, False])),
)
def test_epoch_shape_matches_the_distributed_sampler_and_loader(sequences, batch_size, world_size, drop_last):
    shape = EpochShape(sequences, batch_size, world_size, drop_last)
    seen = set()
    lengths = []
    for rank in range(world_size):
        sampler = DistributedSampler(range(sequences), world_size, rank, shuffle=False, drop_last=drop_last)
        loader = DataLoader(list(range(sequences)), batch_size=batch_size, sampler=sampler, drop_last=drop_last)
        batches = list(loader)
        lengths.append(len(batches))
        seen.update(int(i) for batch in batches for i in batch)
    assert lengths == [shape.batches] * world_size
    assert shape.dropped == sequences - len(seen)


def test_twelve_rows_at_the_demo_batch_of_16_fail_with_the_numbers_and_keys(tokenizer, tmp_path: Path):
    from llmfoundry.data.dataloader import build_dataloader

    data = write_rows(tmp_path / "held-out" / "train.jsonl", 12)
    with pytest.raises(ValueError) as raised:
        build_dataloader(loader_config(data, drop_last=True), tokenizer, 16)
    message = str(raised.value)
    assert f"recgpt_finetuning {data} [train]: 12 examples make no batch" in message
    assert "1 rank, each rank gets 12 sequences, fewer than its batch of 16 (a global batch of 16" in message
    assert "global_train_batch_size <= 12 for a train_loader, device_eval_batch_size <= 12" in message
    assert "drop_last: false in this loader" in message and "more data (at least 16 sequences)" in message
    spec = build_dataloader(loader_config(data, drop_last=False), tokenizer, 16)  # the named fix works
    assert len(spec.dataloader) == 1


def test_ddp_counts_per_rank_and_packing_counts_sequences(tokenizer, tmp_path: Path, monkeypatch):
    from llmfoundry.data.dataloader import build_dataloader

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    data = write_rows(tmp_path / "train.jsonl", 20)
    with pytest.raises(ValueError) as raised:  # 10 per rank, a batch of 12 per rank (24 global)
        build_dataloader(loader_config(data, drop_last=True), tokenizer, 12)
    message = str(raised.value)
    assert "20 examples make no batch: with drop_last: true and 2 ranks, each rank gets 10 sequences" in message
    assert "(a global batch of 24 = 12 per rank x 2 ranks)" in message
    assert "global_train_batch_size <= 20 for a train_loader, device_eval_batch_size <= 10" in message
    assert len(build_dataloader(loader_config(data, drop_last=True), tokenizer, 10).dataloader) == 1
    with pytest.raises(ValueError, match=r"packed sequences \(from 20 examples\) make no batch") as packed:
        build_dataloader(loader_config(data, drop_last=True, packing=True, length=1024), tokenizer, 10)
    assert "dataset.packing: false in this loader (20 sequences, one example each)" in str(packed.value)


def test_fewer_sequences_than_ranks_asks_for_fewer_processes(tokenizer, tmp_path: Path, monkeypatch):
    from llmfoundry.data.dataloader import build_dataloader

    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    data = write_rows(tmp_path / "train.jsonl", 3)
    with pytest.raises(ValueError, match=r"each rank gets 0 sequences.*fewer processes than 4 \(composer -n\)"):
        build_dataloader(loader_config(data, drop_last=True), tokenizer, 1)


def test_an_eval_loader_without_a_batch_is_refused_too(tokenizer, tmp_path: Path):
    from llmfoundry.data.dataloader import build_dataloader

    data = write_rows(tmp_path / "validation.jsonl", 5)
    with pytest.raises(ValueError, match=r"\[validation\]: 5 examples make no batch.*device_eval_batch_size <= 5"):
        build_dataloader(loader_config(data, drop_last=True, split="validation"), tokenizer, 8)


def test_drop_last_discarding_over_five_percent_is_logged(tokenizer, tmp_path: Path, caplog):
    from llmfoundry.data.dataloader import build_dataloader

    data = write_rows(tmp_path / "train.jsonl", 23)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        spec = build_dataloader(loader_config(data, drop_last=True), tokenizer, 8)  # 2 batches use 16 of 23
    assert len(spec.dataloader) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert warnings == [
        f"recgpt_finetuning {data} [train]: drop_last: true discards 7 of 23 examples (30%) every epoch: 2 batches "
        "of 8 per rank x 1 rank use 16; set drop_last: false, or a batch size that divides the data more evenly"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        build_dataloader(loader_config(write_rows(tmp_path / "big" / "train.jsonl", 41), drop_last=True), tokenizer, 8)
    assert not [
        r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING
    ]  # 1 of 41 (2%) is not worth a warning


def test_the_fine_tuning_recipe_on_a_small_held_out_file_fails_at_start(prepared: Path, tmp_path: Path):
    """The issue's case through composer: 12 rows, the demo's global batch of 16, drop_last: true."""
    data = write_rows(tmp_path / "held-out" / "train.jsonl", 12)
    command = [
        "composer",
        "-n",
        "1",
        "scripts/train.py",
        "configs/demo/fine-tuning.yaml",
        f"variables.data_dir={prepared}",
        f"variables.run_dir={tmp_path / 'run'}",
        f"variables.pretrained={prepared / 'tokenizer'}",  # the loaders are built before the model
        f"train_loader.dataset.hf_name={data}",
        "max_duration=2ep",
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "packed sequences (from 12 examples) make no batch" in output, output[-3000:]
    assert "fewer than its batch of 16 (a global batch of 16 = 16 per rank x 1 rank)" in output
    assert "global_train_batch_size <=" in output
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert json.loads(data.read_text().splitlines()[0])  # the input is untouched
