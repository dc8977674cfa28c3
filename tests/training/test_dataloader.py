"""The registered loader: entry points, strict keys, split files, and the sample dataset in every loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from recgpt.training.dataloader import load_examples, parse_dataset_config, split_files

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_instruction_following_dataset"


def loader_config(**dataset):
    base = {"hf_name": str(SAMPLE), "split": "train", "max_seq_len": 256, "shuffle": False}
    return {
        "name": "recgpt_finetuning",
        "dataset": {**base, **dataset},
        "drop_last": False,
        "num_workers": 0,
        "pin_memory": False,
        "prefetch_factor": None,
        "persistent_workers": False,
    }


def test_components_are_registered_through_entry_points():
    from llmfoundry import registry

    from recgpt.training.callbacks import SaveRemoteCode
    from recgpt.training.dataloader import build_recgpt_finetuning_dataloader

    assert registry.dataloaders.get("recgpt_finetuning") is build_recgpt_finetuning_dataloader
    assert registry.callbacks.get("recgpt_save_remote_code") is SaveRemoteCode


def test_llmfoundry_builds_our_loader_from_config(tokenizer):
    from llmfoundry.data.dataloader import build_dataloader

    spec = build_dataloader(loader_config(), tokenizer, 4)
    batch = next(iter(spec.dataloader))
    assert batch["input_ids"].shape[0] == 4
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    total = spec.get_num_tokens_in_batch(batch)
    assert total == int(batch["attention_mask"].sum())
    assert 0 < spec.get_num_tokens_in_batch(batch, token_type="loss_generating") < total


def test_unknown_and_missing_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['allow_pad_trimming'\]"):
        parse_dataset_config({**loader_config()["dataset"], "allow_pad_trimming": False})
    with pytest.raises(ValueError, match=r"missing key\(s\) \['split'\]"):
        parse_dataset_config({"hf_name": "x", "max_seq_len": 8})


def test_split_files_follow_the_datasets_convention(tmp_path: Path):
    for name in ("train.jsonl", "train-00001.jsonl", "test.jsonl"):
        (tmp_path / name).write_text("")
    assert [p.name for p in split_files(tmp_path, "train")] == ["train-00001.jsonl", "train.jsonl"]
    released = tmp_path / "released"
    released.mkdir()
    (released / "sample_prompt_response_pairs.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    assert [p.name for p in split_files(released, "train")] == ["sample_prompt_response_pairs.jsonl"]
    with pytest.raises(FileNotFoundError, match="no data file for split 'validation'"):
        split_files(released, "validation")


def test_bad_json_names_file_and_line(tmp_path: Path):
    (tmp_path / "train.jsonl").write_text('{"prompt": "p", "response": "r"}\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"train.jsonl:2: not valid JSON"):
        load_examples(str(tmp_path), "train")


def test_sample_dataset_loads_with_datasets_and_llmfoundry_finetuning(tokenizer):
    import datasets
    from llmfoundry.data.dataloader import build_dataloader

    rows = datasets.load_dataset(str(SAMPLE), split="train")
    assert rows.column_names == ["prompt", "response"]
    assert len(rows) == 120
    stock = {
        "name": "finetuning",
        "dataset": {
            "hf_name": str(SAMPLE),
            "split": "train",
            "max_seq_len": 256,
            "shuffle": False,
            "decoder_only_format": True,
        },
        "drop_last": False,
        "num_workers": 0,
        "pin_memory": False,
        "prefetch_factor": None,
        "persistent_workers": False,
    }
    batch = next(iter(build_dataloader(stock, tokenizer, 2).dataloader))
    assert batch["input_ids"].shape[0] == 2
