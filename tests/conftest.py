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


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MovieLens-100K prepared for 40 users (seeded choice) with a 512-token tokenizer: the data folder."""
    from recgpt.data.prepare import PrepareConfig, TokenizerConfig, prepare

    output = tmp_path_factory.mktemp("prepared") / "data"
    config = PrepareConfig(
        output=str(output),
        max_users=40,
        examples_per_user=2,
        max_seq_len=128,
        tokenizer=TokenizerConfig(train_vocab_size=512),
    )
    prepare(config)
    return output
