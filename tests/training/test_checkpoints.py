"""Checkpoint tools: MPT folders with outdated remote code get llm-foundry 0.22's code and load again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recgpt.training.checkpoints import _current_mpt_code, update_mpt_code


def old_mpt_folder(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A tiny MPT saved with code that no longer runs and a 2023-style config (triton, prefix_lm)."""
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM

    folder = _current_mpt_code(tmp_path / "old")
    torch.manual_seed(0)
    model = MPTForCausalLM(
        MPTConfig(
            d_model=16,
            n_heads=2,
            n_layers=2,
            vocab_size=64,
            max_seq_len=32,
            no_bias=True,
            learned_pos_emb=False,
            attn_config={"attn_impl": "torch", "alibi": True},
        )
    )
    model.save_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["attn_config"].update({"attn_impl": "triton", "prefix_lm": False})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_mpt.py").write_text("raise ImportError('remote code of 2023')\n")
    return folder, {k: v.clone() for k, v in model.state_dict().items()}


def test_update_code_makes_an_outdated_folder_load_with_the_same_weights(tmp_path: Path):
    from transformers import AutoModelForCausalLM

    old, weights = old_mpt_folder(tmp_path)
    with pytest.raises((ImportError, ValueError)):  # its config or its code no longer loads
        AutoModelForCausalLM.from_pretrained(str(old), trust_remote_code=True)
    new = update_mpt_code(str(old), tmp_path / "new")
    model = AutoModelForCausalLM.from_pretrained(str(new), trust_remote_code=True)
    config = json.loads((new / "config.json").read_text())
    assert config["attn_config"]["attn_impl"] == "torch" and "prefix_lm" not in config["attn_config"]
    assert config["d_model"] == 16 and config["attn_config"]["alibi"]
    for name, tensor in weights.items():
        torch.testing.assert_close(model.state_dict()[name], tensor)


def test_update_code_refuses_other_models(tmp_path: Path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="not 'mpt'"):
        update_mpt_code(str(tmp_path), tmp_path / "out")
