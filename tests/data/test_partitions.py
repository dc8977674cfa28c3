"""``partition=K/N`` jobs and their merge (``recgpt.data.merge``): two partitions merged equal one run.

The parts are written with different worker counts (1 and 2), so the merge of shares inside a part and of parts
inside a dataset is covered together.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recgpt.data.merge import merge_prepared
from recgpt.data.prepare import LEFTOVER_TOKENS, prepare
from tests.conftest import ROOT, movielens_config
from tests.data.test_workers import assert_same_dataset, lines


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("partitions")
    prepare(movielens_config(base / "part-1", partition="1/2", workers=1))
    prepare(movielens_config(base / "part-2", partition="2/2", workers=2))
    return [base / "part-1", base / "part-2"]


def test_a_partition_is_a_marked_partial_output_of_its_users(parts: list[Path], prepared: Path):
    full = json.loads((prepared / "manifest.json").read_text())
    halves = [json.loads((part / "manifest.json").read_text()) for part in parts]
    assert [m["partition"]["indices"] for m in halves] == [[1], [2]] and {m["partition"]["count"] for m in halves} == {
        2
    }
    users = [m["sources"]["ml-100k"]["users_benchmark"] for m in halves]
    assert sum(users) == full["sources"]["ml-100k"]["users_benchmark"] and min(users) > 0
    assert all(m["sources"]["ml-100k"]["users"] == full["sources"]["ml-100k"]["users"] for m in halves)  # global
    tests = [{json.loads(row)["user_id"] for row in lines(part, "benchmark/ml-100k/test.jsonl")} for part in parts]
    assert not tests[0] & tests[1]  # disjoint users
    for part, manifest in zip(parts, halves, strict=True):
        rest = np.load(part / "pretraining" / LEFTOVER_TOKENS)
        assert len(rest) == manifest["partition"]["leftover_tokens"] < 128


def test_two_partitions_merged_equal_one_run(
    parts: list[Path], prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    from recgpt.cli import main

    main(["data", "merge", str(tmp_path / "merged"), *map(str, reversed(parts))])  # the README's command
    written = Path(capsys.readouterr().out.strip())
    assert written == tmp_path / "merged" / "manifest.json"
    manifest = json.loads(written.read_text())
    assert "partition" not in manifest and [m["partition"] for m in manifest["merged_from"]] == [[1], [2]]
    assert_same_dataset(tmp_path / "merged", prepared)
    assert not (tmp_path / "merged" / "pretraining" / LEFTOVER_TOKENS).exists()


def test_one_partition_merged_alone_stays_partial(parts: list[Path], tmp_path: Path):
    manifest = json.loads(merge_prepared(tmp_path / "half", [parts[1]]).read_text())
    assert manifest["partition"]["indices"] == [2]
    again = json.loads(merge_prepared(tmp_path / "whole", [parts[0], tmp_path / "half"]).read_text())
    assert "partition" not in again


def test_merge_refuses_parts_that_do_not_make_one_dataset(parts: list[Path], prepared: Path, tmp_path: Path):
    with pytest.raises(ValueError, match=r"partition 1 is also in"):
        merge_prepared(tmp_path / "twice", [parts[0], parts[0]])
    from recgpt.cli import main

    with pytest.raises(SystemExit) as stopped:  # the CLI: one line, exit 2
        main(["data", "merge", str(tmp_path / "twice"), str(parts[0]), str(parts[0])])
    assert stopped.value.code == 2
    with pytest.raises(ValueError, match=r"a complete output, not a partition"):
        merge_prepared(tmp_path / "complete", [prepared])
    other = tmp_path / "other-seed"
    prepare(movielens_config(other, partition="2/2", workers=1, seed=18))
    with pytest.raises(ValueError, match=r"config key\(s\) \['seed'\] differ"):
        merge_prepared(tmp_path / "mixed", [parts[0], other])
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "twice").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("partition=0/4", r"partition: must be K/N with 1 <= K <= N .*got '0/4'"),
        ("partition=5/4", r"partition: must be K/N .*got '5/4'"),
        ("partition=half", r"partition: must be K/N .*got 'half'"),
        ("workers=0", r"workers: must be >= 1, or null for the cores, got 0"),
    ],
)
def test_bad_partition_or_workers_names_the_key(tmp_path: Path, override: str, message: str):
    key, value = override.split("=")
    with pytest.raises(ValueError, match=message):
        prepare(movielens_config(tmp_path / "data", **{key: value}))
    assert not (tmp_path / "data").exists()


def test_the_cli_names_a_bad_partition_in_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from recgpt.cli import main

    config = ROOT / "configs" / "data" / "movielens-100k.yaml"
    with pytest.raises(SystemExit) as stopped:
        main(["data", "prepare", str(config), f"output={tmp_path / 'data'}", "partition=17/16"])
    assert stopped.value.code != 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("partition: must be K/N with 1 <= K <= N" in e and "'17/16'" in e for e in errors), errors
    assert not (tmp_path / "data").exists()
