"""``recgpt_export_adapter`` replaces only a folder that is an adapter export: any other is refused before training."""

from __future__ import annotations

from pathlib import Path

import pytest

from recgpt.files import OutputFolderError, atomic_directory
from recgpt.training.callbacks import ExportAdapter
from tests.training.test_tiny_model import TINY


def test_an_unrelated_folder_is_refused_when_training_starts_and_left_alone(prepared: Path, tmp_path: Path):
    from composer import Trainer
    from llmfoundry.data.dataloader import build_dataloader
    from llmfoundry.models.mpt import ComposerMPTCausalLM
    from transformers import AutoTokenizer

    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("months of work")
    tokenizer = AutoTokenizer.from_pretrained(str(prepared / "tokenizer"))
    model = ComposerMPTCausalLM(tokenizer=tokenizer, vocab_size=len(tokenizer), loss_fn="torch_crossentropy", **TINY)
    loader = build_dataloader(
        {
            "name": "recgpt_finetuning",
            "dataset": {"hf_name": str(prepared / "instruct"), "split": "train", "max_seq_len": 128, "shuffle": False},
        },
        tokenizer,
        4,
    )
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = Trainer(
        model=model,
        train_dataloader=loader,
        max_duration="1ba",
        callbacks=[ExportAdapter(str(folder))],
        device="cpu",
        progress_bar=False,
        log_to_console=False,
    )
    with pytest.raises(OutputFolderError, match=r"recgpt_export_adapter.save_folder .*thesis: the folder is not empty"):
        trainer.fit()
    assert all(p.equal(before[name]) for name, p in model.named_parameters())  # refused before any step
    assert [p.name for p in folder.iterdir()] == ["chapter1.tex"]
    assert (folder / "chapter1.tex").read_text() == "months of work"


def test_the_export_itself_refuses_a_folder_that_appeared_during_training(tmp_path: Path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with (
        pytest.raises(OutputFolderError, match=r"no adapter_config\.json"),
        atomic_directory(folder, check_replace=ExportAdapter(str(folder)).check_replace) as staging,
    ):
        (staging / "adapter_config.json").write_text("{}")
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_an_earlier_adapter_export_is_replaced(tmp_path: Path):
    folder = tmp_path / "adapter"
    folder.mkdir()
    (folder / "adapter_config.json").write_text('{"old": true}')
    with atomic_directory(folder, check_replace=ExportAdapter(str(folder)).check_replace) as staging:
        (staging / "adapter_config.json").write_text('{"new": true}')
    assert (folder / "adapter_config.json").read_text() == '{"new": true}'
