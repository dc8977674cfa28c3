"""A tiny untrained MPT saved as a Hugging Face folder with the prepared tokenizer, and a recommender over it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def model_dir(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real model folder (config, weights, MPT code, tokenizer) that ``load_model`` reads like a trained one."""
    import torch
    from llmfoundry.models.mpt import MPTConfig, MPTForCausalLM
    from transformers import AutoTokenizer

    from tests.training.test_tiny_model import TINY

    tokenizer = AutoTokenizer.from_pretrained(str(prepared / "tokenizer"))
    torch.manual_seed(0)
    model = MPTForCausalLM(MPTConfig(vocab_size=len(tokenizer), **{**TINY, "max_seq_len": 256}))
    MPTConfig.register_for_auto_class()
    MPTForCausalLM.register_for_auto_class("AutoModelForCausalLM")
    folder = tmp_path_factory.mktemp("served") / "model"
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def recommender(model_dir: Path, prepared: Path):
    from recgpt.serving import Recommender

    return Recommender.from_pretrained(model_dir, catalog=prepared, num_beams=6)
