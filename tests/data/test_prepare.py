"""`recgpt data prepare` on real MovieLens-100K (40 users): outputs, leak freedom, determinism, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recgpt.data.prepare import PrepareConfig, TokenizerConfig, prepare
from recgpt.data.render import NEXT_ITEM_TASK, RATING_TASK


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_outputs_and_manifest(prepared: Path):
    manifest = json.loads((prepared / "manifest.json").read_text())
    assert manifest["users"] == 40
    assert manifest["leak_check"] == {"training_texts": manifest["leak_check"]["training_texts"], "passed": True}
    assert manifest["instruct"]["train"] == 40 * 2 * 2  # 2 examples per task per user
    assert manifest["benchmark"] == {"train": 40, "validation": 80, "test": 80}
    assert manifest["pretraining"]["documents"] == 40
    assert manifest["pretraining"]["samples"] > 0
    train = rows(prepared / "instruct" / "train.jsonl")
    assert {r["prompt"].split("\n")[1] for r in train} == {NEXT_ITEM_TASK, RATING_TASK}
    assert all(set(r) == {"prompt", "response"} for r in train)
    assert (prepared / "pretraining" / "mds" / "index.json").is_file()
    assert (prepared / "tokenizer" / "tokenizer.json").is_file()


def test_no_held_out_event_is_in_its_users_training_document(prepared: Path):
    """Text-level check, independent of the pipeline's own: a user's document never shows their held-out events."""
    documents = [json.loads(line)["text"] for line in (prepared / "pretraining" / "corpus.jsonl").open()]
    users = [r["user_id"] for r in rows(prepared / "benchmark" / "train.jsonl")]
    document_of = dict(zip(users, documents, strict=True))
    held_out = rows(prepared / "benchmark" / "test.jsonl") + rows(prepared / "benchmark" / "validation.jsonl")
    for row in (r for r in held_out if r["task"] == "rating"):
        target_line = row["prompt"].split("\n\n### Response:")[0].split("\n")[-1]  # "Title: ...; Rating:"
        assert f"{target_line} {row['response']}" not in document_of[row["user_id"]].split("\n")
    for row in (r for r in held_out if r["task"] == "next_item"):
        assert f"{row['response']};" not in document_of[row["user_id"]]  # MovieLens users rate a movie once


def test_rerun_is_byte_identical(tmp_path: Path, prepared: Path):
    config = PrepareConfig(
        output=str(tmp_path / "again"),
        max_users=40,
        examples_per_user=2,
        max_seq_len=128,
        tokenizer=TokenizerConfig(train_vocab_size=512),
    )
    again = json.loads(prepare(config).read_text())
    first = json.loads((prepared / "manifest.json").read_text())
    assert again["content_sha256"] == first["content_sha256"]


def test_a_failed_run_keeps_the_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    output = tmp_path / "data"
    config = PrepareConfig(
        output=str(output), max_users=10, max_seq_len=64, tokenizer=TokenizerConfig(train_vocab_size=300)
    )
    prepare(config)
    before = (output / "manifest.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("recgpt.data.prepare.write_mds_shards", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(
            PrepareConfig(
                output=str(output), max_users=20, max_seq_len=64, tokenizer=TokenizerConfig(train_vocab_size=300)
            )
        )
    assert (output / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no partial folder left behind


def test_unknown_domain_is_a_clear_error(tmp_path: Path):
    config = PrepareConfig(output=str(tmp_path / "x"))
    config.source.domain = "podcasts"
    with pytest.raises(ValueError, match=r"source\.domain: unknown domain 'podcasts'"):
        prepare(config)
