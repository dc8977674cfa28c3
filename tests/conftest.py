"""Shared fixtures: a tokenizer trained in-process, the packaged MovieLens-100K and a small prepared dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]

TOKENIZER_TEXTS = [
    "### Instruction:\nPredict the next item.\nGiven the interaction history of a user with books as follows:\n\n"
    "Title: The Ember Oath; Author: Lena Harrowgate\nTitle: Rust Belt Starship; Author: Ada Quillon\n\n### Response:",
    "Title: A Quiet Poison; Author: Tobias Wren; Review: Could not put it down.; Rating: 5.0/5.0",
    "Predict rating for the last item. Rating: 1.0/5.0 2.0/5.0 3.0/5.0 4.0/5.0 5.0/5.0",
    "Given the interaction history of a user with movies/shows as follows:\nTitle: Heat (1995); Genres: Action",
] * 20


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 400-token byte-level BPE tokenizer trained on RecGPT-style text, saved for AutoTokenizer."""
    from recgpt.data.tokenizer import train_bpe_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    train_bpe_tokenizer(TOKENIZER_TEXTS, 400, folder, model_max_length=128)
    return folder


@pytest.fixture()
def tokenizer(tokenizer_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir))


def movielens_config(output: Path, **overrides: object):
    """configs/data/movielens-100k.yaml shrunk: 40 users, a 512-token tokenizer, 128-token documents."""
    from recgpt.config import load_config
    from recgpt.data.prepare_config import PrepareConfig

    values = {"output": str(output), "max_users": 40, "max_seq_len": 128, "tokenizer.train_vocab_size": 512}
    values.update(overrides)
    return load_config(
        PrepareConfig, ROOT / "configs" / "data" / "movielens-100k.yaml", [f"{k}={v}" for k, v in values.items()]
    )


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MovieLens-100K prepared by the demo's data config for 40 users (a seeded choice): the data folder."""
    from recgpt.data.prepare import prepare

    output = tmp_path_factory.mktemp("prepared") / "data"
    prepare(movielens_config(output))
    return output
