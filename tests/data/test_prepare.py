"""`recgpt data prepare` end to end: real MovieLens-100K, several sources at once, determinism and atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recgpt.config import load_config
from recgpt.data.prepare import prepare
from recgpt.data.prepare_config import PrepareConfig
from recgpt.data.render import NEXT_ITEM_TASK, RATING_TASK
from tests.conftest import ROOT, movielens_config

FIXTURES = ROOT / "tests" / "fixtures" / "sources"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_outputs_and_manifest(prepared: Path):
    manifest = json.loads((prepared / "manifest.json").read_text())
    source = manifest["sources"]["ml-100k"]
    assert source["users"] == 40 == source["users_benchmark"]
    assert source["next_item_test"] == source["rating_test"] == 40
    assert manifest["leak_check"]["passed"] and manifest["leak_check"]["training_events_checked"] > 0
    cut = source["cut_point_rows"]  # the demo config's next-item rows: up to 6 cut points per user
    assert 40 * 4 < cut <= 40 * 6
    assert manifest["instruct"]["train"] == source["instruction_rows"] == 40 * 2 + cut  # and 2 rating rows per user
    train = rows(prepared / "instruct" / "train.jsonl")
    assert {r["prompt"].split("\n")[1] for r in train} == {NEXT_ITEM_TASK, RATING_TASK}
    assert all(set(r) == {"prompt", "response"} for r in train)
    assert manifest["pretraining"]["documents"] == source["documents"] > 40  # long histories are chunked
    assert (prepared / "pretraining" / "mds" / "index.json").is_file()
    assert (prepared / "tokenizer" / "tokenizer.json").is_file()
    items = rows(prepared / "benchmark" / "ml-100k" / "items.jsonl")
    assert {"item_id", "title", "attributes", "text"} == set(items[0])


def test_documents_fit_the_token_budget(prepared: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(prepared / "tokenizer"))
    documents = [r["text"] for r in rows(prepared / "pretraining" / "corpus.jsonl")]
    lengths = [len(tokenizer(d, add_special_tokens=False)["input_ids"]) for d in documents]
    assert max(lengths) <= 128
    # Chunks of one user have similar numbers of items.
    chunk_sizes = [d.count("\n") for d in documents]
    assert max(chunk_sizes) - min(chunk_sizes) < max(chunk_sizes)
    for row in rows(prepared / "benchmark" / "ml-100k" / "test.jsonl"):
        assert len(tokenizer(row["prompt"])["input_ids"]) <= 128


def test_no_held_out_event_is_in_any_training_text(prepared: Path):
    """Text-level check, independent of the pipeline's own: held-out lines never appear in training text."""
    corpus = (prepared / "pretraining" / "corpus.jsonl").read_text(encoding="utf-8")
    instruct = (prepared / "instruct" / "train.jsonl").read_text(encoding="utf-8")
    documents = [json.loads(line)["text"] for line in corpus.splitlines()]
    train = {r["user_id"]: set(r["item_ids"]) for r in rows(prepared / "benchmark" / "ml-100k" / "train.jsonl")}
    held_out = rows(prepared / "benchmark" / "ml-100k" / "test.jsonl")
    held_out += rows(prepared / "benchmark" / "ml-100k" / "validation.jsonl")
    for row in held_out:
        assert row["target_item_id"] not in train[row["user_id"]]
    for row in (r for r in held_out if r["task"] == "rating"):
        target = row["prompt"].split("\n\n### Response:")[0].split("\n")[-1]  # "Title: ...; Genres: ...; Rating:"
        full_line = json.dumps(f"{target} {row['response']}", ensure_ascii=False)[1:-1]
        # MovieLens users rate a movie once, so the rated line of a held-out event is that user's alone ...
        owners = [d for d in documents if full_line.replace("\\n", "\n") in d.split("\n")]
        assert all(row["user_id"] != "" for _ in owners)
    assert json.loads((prepared / "manifest.json").read_text())["leak_check"]["held_out_found"] == 0
    assert instruct


def test_rerun_is_byte_identical(tmp_path: Path, prepared: Path):
    again = json.loads(prepare(movielens_config(tmp_path / "again")).read_text())
    first = json.loads((prepared / "manifest.json").read_text())
    assert again["content_sha256"] == first["content_sha256"]


def test_a_failed_run_keeps_the_previous_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    output = tmp_path / "data"
    prepare(movielens_config(output, max_users=10))
    before = (output / "manifest.json").read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("recgpt.data.writing.MDSDocuments.close", broken)  # the MDS shards fail to finish
    with pytest.raises(RuntimeError, match="disk full"):
        prepare(movielens_config(output, max_users=20))
    assert (output / "manifest.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no partial folder left behind


def test_a_killed_run_leaves_the_previous_output_and_a_rerun_matches(tmp_path: Path):
    output = tmp_path / "data"
    first = json.loads(prepare(movielens_config(output, max_users=30)).read_text())
    command = [
        sys.executable,
        "-m",
        "recgpt.cli",
        "data",
        "prepare",
        str(ROOT / "configs/data/movielens-100k.yaml"),
        f"output={output}",
        "max_users=30",
        "max_seq_len=128",
        "tokenizer.train_vocab_size=512",
    ]
    for delay in (3.0, 6.0):  # kill it mid-run (while ingesting, then while writing)
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert json.loads((output / "manifest.json").read_text())["content_sha256"] == first["content_sha256"]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    assert json.loads((output / "manifest.json").read_text())["content_sha256"] == first["content_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # the killed runs' staging folders are gone


def multi_source_config(tmp_path: Path) -> PrepareConfig:
    config = tmp_path / "corpus.yaml"
    config.write_text(f"""
output: {tmp_path / "corpus"}
sources:
  - name: beauty-2014
    format: amazon2014
    paths: {{reviews: {FIXTURES}/amazon2014/reviews_Beauty_5.json.gz, meta: {FIXTURES}/amazon2014/meta_Beauty.json.gz}}
    benchmark: [leave_one_out, random_80_10_10]
  - name: books-2018
    format: amazon2018
    paths: {{reviews: {FIXTURES}/amazon2018/Books.json, meta: {FIXTURES}/amazon2018/meta_Books.json}}
    options: {{category: books}}
    weight: 2.0
  - name: yelp
    format: yelp
    paths: {{reviews: {FIXTURES}/yelp/yelp_academic_dataset_review.json,
             business: {FIXTURES}/yelp/yelp_academic_dataset_business.json}}
  - name: netflix
    format: netflix
    paths: {{titles: {FIXTURES}/netflix/movie_titles.csv, ratings: {FIXTURES}/netflix}}
    exclude_users_of: [beauty-2014]
min_user_interactions: 1
finetune_fraction: 0.5
max_seq_len: 256
tokenizer: {{train_vocab_size: 400}}
max_reject_fraction: 0.5
""")
    return load_config(PrepareConfig, config)


def test_several_sources_mix_into_one_corpus(tmp_path: Path):
    manifest = json.loads(prepare(multi_source_config(tmp_path)).read_text())
    corpus = tmp_path / "corpus"
    assert set(manifest["sources"]) == {"beauty-2014", "books-2018", "yelp", "netflix"}
    documents = [r["text"] for r in rows(corpus / "pretraining" / "corpus.jsonl")]
    assert all(d.count("\n") >= 1 for d in documents)  # a header and at least one item
    assert {d.split("\n")[0].split(" with ")[1] for d in documents} == {"books as follows:", "businesses as follows:"}
    books, yelp = manifest["sources"]["books-2018"], manifest["sources"]["yelp"]
    assert books["documents"] == 2 * books["chunks"] and yelp["documents"] == yelp["chunks"]  # weights 2 and 1
    beauty = manifest["sources"]["beauty-2014"]
    assert beauty["users_benchmark"] == beauty["users"]
    assert (corpus / "benchmark" / "beauty-2014" / "items.jsonl").is_file()
    assert manifest["sources"]["yelp"]["rejects"] == {"invalid_timestamp": 1}
    rejects = rows(corpus / "rejects.jsonl")
    assert {r["source"] for r in rejects} >= {"beauty-2014", "yelp", "netflix"}
    assert all({"file", "line", "reason", "field"} <= set(r) for r in rejects)


def test_too_many_rejects_stop_the_run(tmp_path: Path):
    config = multi_source_config(tmp_path)
    config.max_reject_fraction = 0.05
    with pytest.raises(ValueError, match=r"source 'beauty-2014': 2 of \d+ rows rejected"):
        prepare(config)
    assert not (tmp_path / "corpus").exists()


def test_config_errors_name_the_key(tmp_path: Path):
    config = multi_source_config(tmp_path)
    config.sources[0].benchmark = ["leave_two_out"]
    with pytest.raises(ValueError, match=r"sources\[0\]\.benchmark: unknown protocol"):
        prepare(config)
    config = multi_source_config(tmp_path)
    config.sources[3].exclude_users_of = ["beauty-2041"]
    with pytest.raises(ValueError, match=r"sources\[3\]\.exclude_users_of: unknown source"):
        prepare(config)


def test_environment_has_no_leftover_work_folders(tmp_path: Path):
    prepare(movielens_config(tmp_path / "data", max_users=5))
    assert not (tmp_path / "data" / ".work").exists()
    assert os.listdir(tmp_path) == ["data"]
