"""`recgpt data prepare` through the real CLI: nothing lost, no silent empty result, one clear line per bad config.

Each case runs ``recgpt.cli.main`` (the console script's function) or the module in a subprocess with a bad
input, and asserts the exit status, the words of the error (the file, key or source it names) and what is on
disk afterwards (an unrelated folder and its files untouched, no leftover staging folders).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recgpt.cli import main
from recgpt.files import recover_interrupted_replace
from tests.conftest import ROOT

USERS, MOVIES = 6, 6


def write_movies(folder: Path, ratings: bool = True) -> Path:
    """A MovieLens-latest dump of 6 users who each rated the same 6 movies (one rating each, distinct times)."""
    folder.mkdir(parents=True, exist_ok=True)
    movies = [f"{m},Movie Number {m} ({1990 + m}),Drama|Comedy" for m in range(1, MOVIES + 1)]
    (folder / "movies.csv").write_text("movieId,title,genres\n" + "\n".join(movies) + "\n")
    rows = [f"{u},{m},{(u + m) % 5 + 1}.0,{1_000_000 + 100 * u + m}" for u in range(1, USERS + 1) for m in range(1, 7)]
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + ("\n".join(rows) + "\n" if ratings else "")
    )
    return folder


def write_config(tmp_path: Path, output: Path, data: Path | None = None, **top: object) -> Path:
    """A data config of one MovieLens-latest benchmark source over ``data``, with top-level keys ``top``."""
    data = data or write_movies(tmp_path / "data")
    values: dict[str, object] = {
        "output": str(output),
        "sources": [
            {
                "name": "films",
                "format": "movielens-latest",
                "paths": {"ratings": str(data / "ratings.csv"), "items": str(data / "movies.csv")},
                "benchmark": ["leave_one_out"],
                "finetune_on_train": True,
            }
        ],
        "min_user_interactions": 3,
        "max_seq_len": 256,
        "tokenizer": {"train_vocab_size": 300},
        **top,
    }
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    return path


def run(caplog: pytest.LogCaptureFixture, *argv: object) -> tuple[int, str]:
    """``recgpt data prepare ARGV`` in this process: (exit status, the ERROR lines it logged)."""
    caplog.clear()
    try:
        main(["data", "prepare", *map(str, argv)])
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelname == "ERROR")
    return code, errors


def leftovers(folder: Path) -> list[str]:
    """Hidden staging or set-aside folders beside outputs in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


# ---- class 1: data loss ---------------------------------------------------------------------------------------


def test_an_unrelated_folder_is_refused_and_kept(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep me")
    (mine / "sub" / "manifest.json").write_text("{}")
    (mine / "manifest.json").write_text('{"written_by": "someone else"}')
    code, error = run(caplog, write_config(tmp_path, mine))
    assert code == 2
    assert f"output {mine}: this folder is not empty and was not written by `recgpt data prepare`" in error
    assert "choose a new or empty folder" in error
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / "sub" / "manifest.json").is_file()
    assert leftovers(tmp_path) == []


def test_an_empty_folder_is_used_and_an_own_output_replaced(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    output = tmp_path / "out"
    output.mkdir()
    config = write_config(tmp_path, output)
    assert run(caplog, config) == (0, "")
    manifest = json.loads((output / "manifest.json").read_text())
    assert manifest["written_by"] == "recgpt data prepare"
    (output / "stale.txt").write_text("from an older run")
    assert run(caplog, config) == (0, "")  # its own folder: replaced
    assert not (output / "stale.txt").exists()
    assert json.loads((output / "manifest.json").read_text())["content_sha256"] == manifest["content_sha256"]
    assert leftovers(tmp_path) == []


def test_a_file_as_output_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    target = tmp_path / "out"
    target.write_text("a file")
    code, error = run(caplog, write_config(tmp_path, target))
    assert (code, target.read_text()) == (2, "a file")
    assert f"output {target}: it is a file, not a folder" in error


@pytest.mark.parametrize(
    ("where", "relation"),
    [
        ("data", "a folder above"),  # the folder holding the dumps
        (".", "a folder above"),  # its parent
        ("data/ratings.csv", "the same path as"),  # an input file itself
    ],
)
def test_an_output_on_an_input_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture, where, relation):
    config = write_config(tmp_path, tmp_path / where)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, error = run(caplog, config)
    assert code == 2
    assert f"output: {(tmp_path / where).resolve()} is {relation} the input sources[0].paths." in error
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_an_output_inside_an_input_folder_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    ratings = tmp_path / "netflix"
    shutil.copytree(ROOT / "tests" / "fixtures" / "sources" / "netflix", ratings)
    config = tmp_path / "c.yaml"
    config.write_text(
        f"output: {ratings / 'out'}\nsources:\n  - name: nf\n    format: netflix\n"
        f"    paths: {{titles: {ratings / 'movie_titles.csv'}, ratings: {ratings}}}\n"
    )
    code, error = run(caplog, config)
    assert code == 2
    assert f"output: {ratings / 'out'} is inside the input sources[0].paths.ratings ({ratings})" in error
    assert not (ratings / "out").exists()


def test_an_output_holding_the_tokenizer_it_reads_is_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    output = tmp_path / "out"
    (output / "tokenizer").mkdir(parents=True)
    tokenizer = f"tokenizer={{name: {output / 'tokenizer'}, train_vocab_size: null}}"
    code, error = run(caplog, write_config(tmp_path, output), tokenizer)
    assert code == 2 and "is a folder above the input tokenizer.name" in error


def kill_between_the_renames(final: Path) -> int:
    """Run ``atomic_directory`` in a child process that is killed right after moving ``final`` aside."""
    script = (
        "import os, sys\nfrom pathlib import Path\nimport recgpt.files as files\nreal = os.replace\n"
        "def replace(a, b):\n    real(a, b)\n    os._exit(9)\n"
        "files.os.replace = replace\n"
        "with files.atomic_directory(Path(sys.argv[1])) as tmp:\n    (tmp / 'new.txt').write_text('new')\n"
    )
    child = subprocess.run([sys.executable, "-c", script, str(final)], cwd=ROOT, check=False)
    assert child.returncode == 9
    return child.returncode


def test_a_run_killed_between_the_renames_is_recovered(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    output = tmp_path / "out"
    config = write_config(tmp_path, output)
    assert run(caplog, config) == (0, "")
    before = (output / "manifest.json").read_text()
    kill_between_the_renames(output)
    [retired] = [p for p in tmp_path.iterdir() if p.name.startswith(".out.old-")]
    assert not output.exists() and (retired / "manifest.json").read_text() == before
    assert len(leftovers(tmp_path)) == 2  # the set-aside old output and the finished staging folder
    # A later run that fails still finds the previous output restored ...
    code, error = run(caplog, config, "min_user_interactions=99")
    assert code == 2 and "no user is left after cleaning" in error
    assert (output / "manifest.json").read_text() == before
    assert f"restored {output} from {retired}" in caplog.text
    assert leftovers(tmp_path) == []


def test_recovery_restores_the_newest_and_removes_the_rest(tmp_path: Path):
    final = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    older, newer = tmp_path / f".out.old-{pid}", tmp_path / f".out.old-{pid + 1000000}"
    for folder, text in ((older, "older"), (newer, "newer")):
        folder.mkdir()
        (folder / "manifest.json").write_text(text)
    os.utime(older, (1, 1))
    (tmp_path / ".out.old-notapid").mkdir()  # not of recgpt's making: left alone
    assert recover_interrupted_replace(final) == [older, newer]
    assert (final / "manifest.json").read_text() == "newer"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.old-notapid", "out"]


def test_paths_with_quotes_and_odd_characters_work(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    odd = tmp_path / 'it\'s a "dir" ü; $x'
    data = write_movies(odd / "dumps 'raw'")
    output = odd / "out'; DROP TABLE events; --"
    assert run(caplog, write_config(tmp_path, output, data)) == (0, "")
    assert json.loads((output / "manifest.json").read_text())["sources"]["films"]["users"] == USERS
    assert (output / "benchmark" / "films" / "test.jsonl").stat().st_size > 0


# ---- class 5: config errors, one line each, exit 2 -------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("max_seq_len=0", "max_seq_len: must be >= 1"),
        ("max_seq_len=-5", "max_seq_len: must be >= 1"),
        ("memory_limit=lots", "memory_limit: 'lots' is not a size"),
        ("memory_limit=1GB'; COPY (SELECT 42) TO 'x.csv'; --", "memory_limit: "),
        ("max_users=-1", "max_users: must be >= 1, or null"),
        ("max_users=0", "max_users: must be >= 1, or null"),
        ("threads=-2", "threads: must be a whole number >= 1"),
        ("min_user_interactions=0", "min_user_interactions: must be >= 1"),
        ("max_reject_fraction=1.5", "max_reject_fraction: must be in [0, 1]"),
        ("max_reject_fraction=-0.1", "max_reject_fraction: must be in [0, 1]"),
        ("examples_per_user=0", "examples_per_user: must be >= 1"),
        ("finetune_fraction=2", "finetune_fraction: must be in [0, 1]"),
        ("tokenizer.train_vocab_size=100", "tokenizer.train_vocab_size: must be >= 258"),
        ("max_field_chars=0", "max_field_chars: must be >= 1"),
        ("sources.0.weight=0", "sources[0].weight: must be > 0"),
        ("sources.0.weight=-1", "sources[0].weight: must be > 0"),
        ("sources.0.weight=.inf", "sources[0].weight: must be > 0 (and finite), got inf"),
        ("tokenizer.train_vocab_size=null", "tokenizer: set train_vocab_size to train one, or name"),
        ("output=/", "output: / is the filesystem root"),
        ("sources.0.name=" + "a" * 101, "sources[0].name: 'aaaa"),
        ("sources.0.name=a/b", "sources[0].name: 'a/b' must start with a letter"),
        ("sources=null", "key 'sources': must be set, got null"),
        ("sources.0.paths.ratings=[a, b]", "key 'sources[0].paths.ratings': must be a single value, got a list"),
        ("tokenizer={name: ./nope, train_vocab_size: null}", "tokenizer.name: ./nope: no such folder"),
        ("sources.0.name=..", "sources[0].name: '..' must start with a letter"),
        ("sources.0.name=.", "sources[0].name: '.' must start with a letter"),
        ("sources.0.exclude_users_of=[films]", "sources[0].exclude_users_of: names the source itself ('films')"),
        ("sources.0.exclude_users_of=[other]", "sources[0].exclude_users_of: unknown source(s) ['other']"),
        ("sources.0.benchmark=[leave_two_out]", "sources[0].benchmark: unknown protocol(s) ['leave_two_out']"),
        ("sources.0.format=movielens-99", "sources[0].format: unknown source format 'movielens-99'"),
        ("sources.0.paths.extra=x", "sources[0]: source 'films': paths needs ['ratings', 'items']"),
        ("sources.0.colour=red", "key 'sources[0].colour': unknown key"),
        ("max_users=abc", "key 'max_users': Value 'abc' of type 'str' could not be converted to Integer"),
        ("sources.0.paths=[a.csv, b.csv]", "key 'sources[0].paths': must be a mapping of role -> file"),
        ("sources=[{name: x, format: recbole}, {name: X, format: recbole}]", "sources: names must be unique"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path: Path, caplog: pytest.LogCaptureFixture, override, expected):
    config = write_config(tmp_path, tmp_path / "out")
    code, error = run(caplog, config, override)
    assert code == 2
    assert error.startswith(f"{config}: ") and expected in error, error
    assert "\n" not in error and not (tmp_path / "out").exists()


def test_paths_as_a_list_show_the_roles_of_the_format(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    config = tmp_path / "c.yaml"
    config.write_text("output: out\nsources:\n  - name: shop\n    format: amazon2018\n    paths: [r.json, m.json]\n")
    code, error = run(caplog, config)
    assert code == 2
    assert error == (
        f"{config}: key 'sources[0].paths': must be a mapping of role -> file, e.g. {{reviews: data/reviews.json.gz, "
        "meta: data/meta.json.gz}, not a list; format 'amazon2018' reads ['reviews', 'meta'] (optional [])"
    )


def test_broken_yaml_names_the_file_and_line(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    config = tmp_path / "c.yaml"
    config.write_text("output: out\nsources: [\n  - name: shop\n")
    assert run(caplog, config) == (2, f"{config}:3: not valid YAML: expected the node content, but found '-'")
    config.write_bytes(b"output: caf\xe9\n")
    assert run(caplog, config) == (2, f"{config}: not valid UTF-8 text (byte 11); save the config as UTF-8")
    assert run(caplog, tmp_path) == (2, f"config file {tmp_path} is a directory; give a YAML file")


@pytest.mark.parametrize("override", ["max_users", "=5", ""])
def test_an_override_without_equals_is_an_error(tmp_path: Path, caplog: pytest.LogCaptureFixture, override):
    code, error = run(caplog, write_config(tmp_path, tmp_path / "out"), override)
    assert (code, error) == (2, f"override {override!r}: write key=value, e.g. max_users=50")


@pytest.mark.parametrize(
    "command", [["evaluate", ROOT / "configs/eval/demo.yaml"], ["serve", ROOT / "configs/serve/demo.yaml"]]
)
def test_every_command_refuses_an_override_without_equals(caplog: pytest.LogCaptureFixture, command):
    caplog.clear()
    with pytest.raises(SystemExit) as exit:
        main([*map(str, command), "model"])
    assert exit.value.code == 2
    assert "override 'model': write key=value" in caplog.text


def test_a_directory_or_missing_file_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    data = write_movies(tmp_path / "data")
    config = write_config(tmp_path, tmp_path / "out", data)
    code, error = run(caplog, config, f"sources.0.paths.items={data}")
    assert code == 2
    assert error == (
        f"{config}: sources[0].paths.items: {data} is a directory; give the items file (format movielens-latest "
        "reads a file here)"
    )
    code, error = run(caplog, config, f"sources.0.paths.items={data / 'nope.csv'}")
    assert (code, error) == (2, f"{config}: sources[0].paths.items: {data / 'nope.csv'}: no such file or directory")


def test_the_console_script_prints_one_line_not_a_traceback(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("output: out\nsources:\n  - {name: a, format: recbole\n")
    result = subprocess.run(
        [sys.executable, "-m", "recgpt.cli", "data", "prepare", str(config), "max_seq_len=0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"ERROR recgpt: {config}:4: not valid YAML: " in result.stderr


# ---- class 2: no silent empty result ---------------------------------------------------------------------------


def test_a_header_only_interactions_file_stops_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    data = write_movies(tmp_path / "data", ratings=False)
    code, error = run(caplog, write_config(tmp_path, tmp_path / "out", data))
    assert code == 2
    assert error.startswith("source 'films': no interactions were read from its files (items=")
    assert str(data / "ratings.csv") in error and "not only a header" in error
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_a_header_only_generic_csv_stops_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    (tmp_path / "events.csv").write_text("customer,sku,ts,stars,text\n")
    catalogue = ROOT / "tests" / "fixtures" / "sources" / "generic" / "catalogue.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text(
        f"output: {tmp_path / 'out'}\nsources:\n  - name: shop\n    format: generic\n"
        f"    paths: {{interactions: {tmp_path / 'events.csv'}, items: {catalogue}}}\n"
        "    options: {interaction_columns: {user_id: customer, item_id: sku, timestamp: ts},\n"
        "              item_columns: {item_id: sku, title: name}}\n"
    )
    code, error = run(caplog, config)
    assert code == 2
    assert error == (
        f"source 'shop': no interactions were read from its files (interactions={tmp_path / 'events.csv'}, "
        f"items={catalogue}); check that the files hold data rows, not only a header, and that format 'generic' "
        "is theirs"
    )
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_an_empty_file_is_named(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    data = write_movies(tmp_path / "data")
    (data / "movies.csv").write_text("")
    config = write_config(tmp_path, tmp_path / "out", data)
    code, error = run(caplog, config)
    assert code == 2
    assert error == (
        f"{config}: sources[0].paths.items: {data / 'movies.csv'} is empty (0 bytes); give the items file of the "
        "movielens-latest dump"
    )


def test_a_source_left_without_users_stops_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    code, error = run(caplog, write_config(tmp_path, tmp_path / "out"), "min_user_interactions=7")
    assert code == 2
    assert error.startswith("source 'films': no user is left after cleaning (36 interactions read; dropped: ")
    assert "'sparse_user_interaction': 36" in error and "lower min_user_interactions (now 7)" in error


def test_a_benchmark_without_test_rows_stops_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    code, error = run(caplog, write_config(tmp_path, tmp_path / "out"), "max_seq_len=24")
    assert code == 2
    assert error.startswith("source 'films': no benchmark test row was written (")
    assert "did not fit max_seq_len 24); raise max_seq_len" in error
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_an_empty_corpus_stops_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    config = write_config(tmp_path, tmp_path / "out")
    code, error = run(caplog, config, "sources.0.benchmark=[]", "finetune_fraction=1")
    assert code == 2
    assert error.startswith("the pre-training corpus is empty: no source gave a document ({'films': ")
    assert "lower finetune_fraction (now 1.0;" in error
    code, error = run(caplog, config, "sources.0.benchmark=[]", "max_seq_len=4")
    assert code == 2
    assert error.startswith("max_seq_len 4: every pre-training document is a single item line longer than that")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_the_reject_error_names_a_file_that_outlives_the_run(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    data = write_movies(tmp_path / "data")
    with (data / "ratings.csv").open("a") as handle:
        handle.write("1,1,eleven,1000\n2,2,4.0,yesterday\n")
    output = tmp_path / "out"
    code, error = run(caplog, write_config(tmp_path, output, data), "max_reject_fraction=0.01")
    kept = tmp_path / "out.rejects.jsonl"
    assert code == 2
    assert error.endswith(f"more than max_reject_fraction 0.01; each rejected row is in {kept}")
    rejects = [json.loads(line) for line in kept.read_text().splitlines()]
    assert [(r["source"], Path(r["file"]).name, r["line"]) for r in rejects] == [
        ("films", "ratings.csv", 38),
        ("films", "ratings.csv", 39),
    ]
    assert not output.exists() and leftovers(tmp_path) == []
