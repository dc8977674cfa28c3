"""``workers: N``: the writing phase in N processes over disjoint user shares, merged into one dataset.

Against the session's one-process output (``prepared``, the demo config shrunk to 40 users): the same documents,
rows and token counts, in share order; deterministic for a worker count; one MDS index that streaming loads; a
failing worker's error reaches the caller; a killed run leaves the previous output and no worker behind.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recgpt.data.outputs import OutputSettings
from recgpt.data.prepare import prepare
from recgpt.data.records import MOVIELENS
from recgpt.data.stage_clock import STAGE_LOG_PREFIX
from recgpt.data.writing import WriteTask, append_file, run_workers
from tests.conftest import ROOT, movielens_config

TEXT_FILES = [
    "pretraining/corpus.jsonl",
    "instruct/train.jsonl",
    "instruct/validation.jsonl",
    "benchmark/ml-100k/train.jsonl",
    "benchmark/ml-100k/validation.jsonl",
    "benchmark/ml-100k/test.jsonl",
    "benchmark/ml-100k/items.jsonl",
]


def lines(root: Path, relative: str) -> list[str]:
    return (root / relative).read_text(encoding="utf-8").splitlines()


def mds_tokens(root: Path) -> list[np.ndarray]:
    """Every sample of the output's MDS folder, read through streaming's own dataset (the merged index)."""
    from streaming import StreamingDataset

    dataset = StreamingDataset(local=str(root / "pretraining" / "mds"), shuffle=False, batch_size=1)
    return [dataset[index]["tokens"] for index in range(len(dataset))]


def assert_same_dataset(ours: Path, reference: Path) -> None:
    """The same documents, rows and token counts as ``reference`` (the order of share-merged files aside)."""
    mine, theirs = (json.loads((root / "manifest.json").read_text()) for root in (ours, reference))
    for key in ("sources", "pretraining", "instruct", "leak_check", "tokenizer_vocab_size"):
        assert mine[key] == theirs[key], key
    for relative in TEXT_FILES:
        assert Counter(lines(ours, relative)) == Counter(lines(reference, relative)), relative
    # Shuffled by a hash of each row, the instruction rows do not depend on who wrote them.
    assert (ours / "instruct" / "train.jsonl").read_bytes() == (reference / "instruct" / "train.jsonl").read_bytes()
    assert (ours / "tokenizer" / "tokenizer.json").read_bytes() == (
        reference / "tokenizer" / "tokenizer.json"
    ).read_bytes()
    samples, expected = mds_tokens(ours), mds_tokens(reference)
    assert len(samples) == len(expected) == mine["pretraining"]["samples"]
    # Only the last unfinished block is dropped, whoever wrote the shards: the token multisets differ by less
    # than two blocks (one run's leftover and the other's).
    block = len(expected[0])
    counts, reference_counts = Counter(np.concatenate(samples).tolist()), Counter(np.concatenate(expected).tolist())
    assert sum(((counts - reference_counts) + (reference_counts - counts)).values()) < 2 * block


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("workers") / "data"
    prepare(movielens_config(output, workers=2))
    return output


def test_two_workers_write_the_same_documents_rows_and_tokens_as_one(two_workers: Path, prepared: Path):
    assert json.loads((two_workers / "manifest.json").read_text())["workers"] == 2
    assert (two_workers / "pretraining" / "mds" / "part-001" / "index.json").is_file()
    assert_same_dataset(two_workers, prepared)
    # Share order, not the one-process order: documents are the same lines, differently arranged.
    assert lines(two_workers, "pretraining/corpus.jsonl") != lines(prepared, "pretraining/corpus.jsonl")


def test_two_workers_are_deterministic(two_workers: Path, tmp_path: Path):
    again = json.loads(prepare(movielens_config(tmp_path / "again", workers=2)).read_text())
    assert again["content_sha256"] == json.loads((two_workers / "manifest.json").read_text())["content_sha256"]


def test_the_merged_index_is_one_text_loader_dataset(two_workers: Path):
    index = json.loads((two_workers / "pretraining" / "mds" / "index.json").read_text())
    basenames = [shard["raw_data"]["basename"] for shard in index["shards"]]
    assert basenames[0].startswith("part-000/") and all(
        (two_workers / "pretraining" / "mds" / b).is_file() for b in basenames
    )
    samples = mds_tokens(two_workers)
    assert {len(sample) for sample in samples} == {128} and all(sample.dtype == np.int32 for sample in samples)


def test_a_failing_worker_raises_its_own_error(tmp_path: Path):
    task = WriteTask(
        tmp_path / "out",
        tmp_path / "mds",
        {"ml": MOVIELENS},
        OutputSettings(),
        str(tmp_path / "no-tokenizer"),
        64,
        rows=tmp_path,
    )
    (tmp_path / "out").mkdir()
    started = time.monotonic()
    with pytest.raises(ValueError, match="no-tokenizer"):  # the worker's own exception, not a generic one
        run_workers([task], [tmp_path])
    assert time.monotonic() - started < 60


def worker_pids(parent: int) -> list[int]:
    """The ``python -m recgpt.data.writing`` processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue
        if int(stat[1]) == parent and b"recgpt.data.writing" in command:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_multi_worker_run_leaves_the_previous_output_and_no_worker(tmp_path: Path):
    output = tmp_path / "data"
    first = json.loads(prepare(movielens_config(output, workers=2)).read_text())
    command = [
        sys.executable,
        "-m",
        "recgpt.cli",
        "data",
        "prepare",
        str(ROOT / "configs/data/movielens-100k.yaml"),
        f"output={output}",
        "max_users=40",
        "max_seq_len=128",
        "tokenizer.train_vocab_size=512",
        "workers=2",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline and process.poll() is None and len(workers) < 2:
        workers = worker_pids(process.pid)
        time.sleep(0.02)
    assert len(workers) == 2, (
        "the run ended before its workers could be seen"
        if process.poll() is not None
        else "no two workers within 120 s (a machine this busy cannot run this test)"
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in workers), "workers outlived their killed parent"
    assert json.loads((output / "manifest.json").read_text())["content_sha256"] == first["content_sha256"]
    again = json.loads(prepare(movielens_config(output, workers=2)).read_text())
    assert again["content_sha256"] == first["content_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # the killed run's staging folder is gone


@pytest.mark.parametrize(("samples", "size_limit"), [(300, 1 << 26), (300, 20_000), (3, 1 << 26)])
def test_the_mds_writer_writes_streamings_bytes(tmp_path: Path, samples: int, size_limit: int):
    """``MDSTokenWriter`` (no streaming import in the workers) against streaming's own ``MDSWriter``."""
    from streaming import MDSWriter

    from recgpt.data.corpus import MDSTokenWriter

    rng = np.random.default_rng(3)
    blocks = [rng.integers(0, 50_000, size=length, dtype=np.int32) for length in [128] * samples + [300, 70_000]]
    with MDSWriter(out=str(tmp_path / "theirs"), columns={"tokens": "ndarray:int32"}, size_limit=size_limit) as theirs:
        for block in blocks:
            theirs.write({"tokens": block})
    ours = MDSTokenWriter(tmp_path / "ours")
    ours.SIZE_LIMIT = size_limit
    ours.config["size_limit"] = size_limit
    ours.config_data = json.dumps(ours.config, sort_keys=True).encode()
    ours.shard_size = 8 + len(ours.config_data)
    for block in blocks:
        ours.write(block)
    ours.finish()
    names = sorted(p.name for p in (tmp_path / "theirs").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ours").iterdir()) and len(names) >= 2
    for name in names:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "theirs" / name).read_bytes(), name


def test_the_index_merge_equals_streamings_merge_index(two_workers: Path, tmp_path: Path):
    import shutil

    from streaming.base.util import merge_index

    from recgpt.data.corpus import merge_mds_indexes

    copy = tmp_path / "mds"
    shutil.copytree(two_workers / "pretraining" / "mds", copy)
    parts = sorted(p.name for p in copy.iterdir() if p.is_dir())
    assert parts == ["part-000", "part-001", "tail"]
    (copy / "index.json").unlink()
    merge_index([str(copy / part / "index.json") for part in parts], str(copy), keep_local=True)
    assert (copy / "index.json").read_bytes() == (two_workers / "pretraining" / "mds" / "index.json").read_bytes()
    (copy / "index.json").unlink()
    merge_mds_indexes(copy, parts)
    assert (copy / "index.json").read_bytes() == (two_workers / "pretraining" / "mds" / "index.json").read_bytes()


def test_pretraining_and_finetuning_users_of_several_sources_split_across_workers(tmp_path: Path):
    """Four sources with weights, pre-training and fine-tuning users: 3 workers write what 1 process writes."""
    from tests.data.test_prepare import multi_source_config

    outputs = {}
    for workers in (1, 3):
        (tmp_path / f"w{workers}").mkdir()
        config = multi_source_config(tmp_path / f"w{workers}")
        config.workers = workers
        outputs[workers] = json.loads(prepare(config).read_text())
    one, three = (tmp_path / f"w{w}" / "corpus" for w in (1, 3))
    for key in ("sources", "pretraining", "instruct", "leak_check"):
        assert outputs[1][key] == outputs[3][key], key
    assert outputs[1]["sources"]["books-2018"]["users_pretrain"] > 0 and outputs[1]["instruct"]["train"] > 0
    relatives = sorted(p.relative_to(one).as_posix() for p in one.rglob("*.jsonl"))
    assert relatives == sorted(p.relative_to(three).as_posix() for p in three.rglob("*.jsonl"))
    for relative in relatives:
        assert Counter(lines(three, relative)) == Counter(lines(one, relative)), relative
    assert len(mds_tokens(three)) == outputs[1]["pretraining"]["samples"]


def test_the_engine_spills_its_tables_while_the_workers_run_and_reads_them_back(tmp_path: Path):
    from recgpt.data.engine import Engine

    engine = Engine(tmp_path / "db", "512MB")
    sql = engine.connection.execute
    sql("CREATE TABLE events AS SELECT i, repeat('line ' || i, 20) AS line FROM range(300000) t(i)")
    expected = engine.scalar("SELECT sum(length(line)) FROM events")

    def held() -> int:
        return engine.scalar("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")

    before = held()
    with engine.idle("32MB"):
        assert engine.scalar("SELECT current_setting('memory_limit')") == "30.5 MiB"
        assert held() <= 32 * 2**20 < before
    assert engine.scalar("SELECT current_setting('memory_limit')") == "488.2 MiB"  # the configured 512MB
    assert engine.scalar("SELECT sum(length(line)) FROM events") == expected
    engine.close()


def test_the_log_says_where_the_time_went(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.INFO, logger="recgpt.data.prepare"):
        prepare(movielens_config(tmp_path / "data", workers=2))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(STAGE_LOG_PREFIX)]
    assert len(lines) == 1
    seconds = json.loads(lines[0].removeprefix(STAGE_LOG_PREFIX))
    stages = ["ingest", "engine", "tokenizer", "share export", "writing", "share merge", "leak check", "shuffle"]
    assert list(seconds) == [*stages, "catalogues", "output hash", "total"]
    assert all(value >= 0 for value in seconds.values())
    # Stages do not overlap, and the total is the whole run's wall time.
    assert sum(seconds.values()) - seconds["total"] <= seconds["total"] + 0.1 * len(seconds)
    assert seconds["writing"] > 0


@pytest.mark.parametrize("kernel", ["copies", "refuses after 1 MiB", "is missing"])
def test_appending_a_part_gives_its_bytes_whatever_the_kernel_copy_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel: str
):
    part, target = tmp_path / "part.jsonl", tmp_path / "target.jsonl"
    data = os.urandom(3 << 20) + b"\n"
    part.write_bytes(data)
    target.write_bytes(b"before\n")
    real = os.copy_file_range
    if kernel == "refuses after 1 MiB":
        calls = []

        def refusing(source: int, destination: int, count: int) -> int:
            calls.append(count)
            if len(calls) > 1:
                raise OSError(18, "Invalid cross-device link")
            return real(source, destination, 1 << 20)

        monkeypatch.setattr(os, "copy_file_range", refusing)
    elif kernel == "is missing":
        monkeypatch.delattr(os, "copy_file_range")
    with target.open("r+b", buffering=0) as out:
        out.seek(0, os.SEEK_END)
        append_file(part, out.fileno())
        append_file(part, out.fileno())
    assert target.read_bytes() == b"before\n" + data + data
