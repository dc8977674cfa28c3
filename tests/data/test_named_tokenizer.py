"""A named tokenizer is loaded by transformers in a child process (``recgpt.data.named_tokenizer``): the parent of
``recgpt data prepare`` never imports transformers (or torch), writes what a load in the parent writes, and a
tokenizer that cannot be loaded stops the run naming ``tokenizer.name``, before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recgpt.data import named_tokenizer
from recgpt.data.prepare import prepare
from tests.conftest import ROOT, movielens_config


def named(output: Path, tokenizer: Path | str, **overrides: object):
    return movielens_config(output, **{"tokenizer.train_vocab_size": "null", "tokenizer.name": tokenizer, **overrides})


def digest(output: Path) -> str:
    return json.loads((output / "manifest.json").read_text(encoding="utf-8"))["content_sha256"]


def test_the_child_load_writes_what_a_load_in_the_parent_writes(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Written in this process (``workers=1``); workers tokenize with the same Rust tokenizer from the same JSON,
    and ``tests/data/test_workers.py`` compares them with one process."""
    prepare(named(tmp_path / "child", prepared / "tokenizer", workers=1))
    manifest = json.loads((tmp_path / "child" / "manifest.json").read_text(encoding="utf-8"))
    with monkeypatch.context() as patch:  # no child: the parent loads it with AutoTokenizer, as before
        patch.setattr(named_tokenizer, "start", lambda name, folder: None)
        prepare(named(tmp_path / "parent", prepared / "tokenizer", workers=1))
    assert digest(tmp_path / "child") == digest(tmp_path / "parent")
    assert manifest["tokenizer_vocab_size"] == 512 and manifest["pretraining"]["tokens"] > 0


def test_the_parent_never_imports_transformers(prepared: Path, tmp_path: Path):
    script = (
        "import sys; from pathlib import Path; from recgpt.data.prepare import prepare; "
        "from tests.conftest import movielens_config; "
        f"prepare(movielens_config(Path({str(tmp_path / 'out')!r}), **{{'tokenizer.train_vocab_size': 'null', "
        f"'tokenizer.name': {str(prepared / 'tokenizer')!r}, 'workers': 1}})); "
        "print(sorted(m for m in ('transformers', 'torch', 'scipy') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_a_tokenizer_that_cannot_be_loaded_stops_the_run_naming_the_key(tmp_path: Path):
    output = tmp_path / "data"
    with pytest.raises(ValueError, match=r"tokenizer\.name: no-such-org/no-such-tokenizer: could not be loaded \("):
        prepare(named(output, "no-such-org/no-such-tokenizer"))  # offline (conftest): no hub to fall back on
    assert not output.exists()
