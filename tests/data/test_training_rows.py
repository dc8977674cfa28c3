"""Next-item training rows at many cut points (``next_item_cut_points``): drawn from training events only, never
crossing into a benchmark user's validation/test events, and today's rows unchanged when the key is unset."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from recgpt.cli import main
from recgpt.data.histories import Event, UserHistory
from recgpt.data.outputs import CorpusWriter, OutputSettings, cut_point_rows, cut_points
from recgpt.data.records import Domain
from recgpt.data.render import NEXT_ITEM_TASK, Instruction, next_item_row, parse_prompt
from tests.conftest import ROOT

CONFIG = ROOT / "configs" / "data" / "movielens-100k.yaml"
TINY = ["max_users=20", "max_seq_len=128", "tokenizer.train_vocab_size=512"]
DOMAIN = Domain("movielens", "movies/shows")


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_prepare(output: Path, *overrides: str, config: Path = CONFIG) -> dict[str, Any]:
    """``recgpt data prepare`` on the demo's data config (or ``config``) shrunk to 20 users; the manifest."""
    main(["data", "prepare", str(config), f"output={output}", *TINY, *overrides])
    return json.loads((output / "manifest.json").read_text(encoding="utf-8"))


def event(index: int, split: str | None = None, rating_split: str | None = None) -> Event:
    return Event(f"i{index}", f"Title: Movie {index}", f"Title: Movie {index}; Rating: 4.0/5.0", 4.0, 100 + index,
                 split, rating_split)  # fmt: skip


# --- tier 1: the generator --------------------------------------------------------------------------------------


def test_cut_points_are_distinct_seeded_and_in_range():
    events = [event(i) for i in range(30)]
    drawn = cut_points(events, 8, "17|cut|ml|u1")
    assert len(drawn) == len(set(drawn)) == 8 and all(1 <= c < 30 for c in drawn)
    assert drawn == sorted(drawn, reverse=True)
    assert cut_points(events, 8, "17|cut|ml|u1") == drawn  # deterministic
    assert cut_points(events, 8, "18|cut|ml|u1") != drawn  # the seed changes the draw
    assert cut_points(events, "all", "x") == list(range(29, 0, -1)) == cut_points(events, 100, "x")
    assert cut_points(events[:1], "all", "x") == [] == cut_points([], 3, "x")  # nothing to show before a cut
    # a larger N draws a superset: the order of the hash decides, not N
    assert set(drawn) <= set(cut_points(events, 12, "17|cut|ml|u1"))


def test_cut_point_rows_show_the_events_before_the_cut_and_answer_the_cut():
    events = [event(i) for i in range(4)]
    made = list(cut_point_rows(DOMAIN, events, [3, 1]))
    assert [row for row, _ in made] == [
        next_item_row(DOMAIN, ["Title: Movie 0", "Title: Movie 1", "Title: Movie 2"], "Title: Movie 3"),
        next_item_row(DOMAIN, ["Title: Movie 0"], "Title: Movie 1"),
    ]
    assert [[e.order for e in used] for _, used in made] == [[100, 101, 102, 103], [100, 101]]
    windowed = list(cut_point_rows(DOMAIN, events, [3], window=lambda cut: cut - 1))
    assert windowed[0][0] == next_item_row(DOMAIN, ["Title: Movie 2"], "Title: Movie 3")


def test_a_benchmark_users_cut_points_never_reach_held_out_events(tmp_path: Path):
    """Every cut of every training position; held-out events (leave-one-out last two, a random-split rating in the
    middle) are never a target nor shown."""
    split = {10: (None, "test"), 18: ("validation", "validation"), 19: ("test", "test")}
    events = [event(i, *split.get(i, (None, None))) for i in range(20)]
    history = UserHistory("ml", "u1", "benchmark", {
        "item_id": [e.item_id for e in events], "text": [e.text for e in events], "line": [e.line for e in events],
        "rating": [e.rating for e in events], "ord": [e.order for e in events],
        "next_item": [e.next_item for e in events], "rating_split": [e.rating_split for e in events],
    })  # fmt: skip
    settings = OutputSettings(examples_per_user=2, finetune_on_benchmark=frozenset({"ml"}), next_item_cut_points="all")
    writer = CorpusWriter(tmp_path, {"ml": DOMAIN}, settings)
    writer.write(history)
    writer.close()
    written = [r for r in rows(tmp_path / "instruct" / "train.unshuffled.jsonl") if NEXT_ITEM_TASK in r["prompt"]]
    train = [e for e in events if not e.held_out]
    assert sorted(r["response"] for r in written) == sorted(e.text for e in train[1:])  # every cut, once
    held_out = {e.text for e in events if e.held_out}
    for row in written:
        shown = Instruction.parse(parse_prompt(row["prompt"]) or "").lines
        assert row["response"] not in held_out and not held_out & set(shown)
        target = int(row["response"].rsplit(" ", 1)[1])
        assert target < 18 and list(shown) == [e.text for e in train if int(e.item_id[1:]) < target]
    assert writer.counts["ml"]["cut_point_rows"] == len(train) - 1 == 16


# --- the real command -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny config prepared with the key unset (the demo sets it: a copy without it), set to null, 3 and all."""
    root = tmp_path_factory.mktemp("cut_points")
    kept, skipping = [], False
    for line in CONFIG.read_text(encoding="utf-8").splitlines(keepends=True):
        skipping = line.startswith("next_item_cut_points:") or (skipping and line.lstrip().startswith("#"))
        if not skipping:
            kept.append(line)
    unset = root / "unset.yaml"
    unset.write_text("".join(kept), encoding="utf-8")
    assert "next_item_cut_points" not in unset.read_text(encoding="utf-8")
    run_prepare(root / "unset", config=unset)
    settings = {"null": ["next_item_cut_points=null"], "3": ["next_item_cut_points=3"]}
    settings["all"] = ["next_item_cut_points=all"]
    for name, overrides in settings.items():
        run_prepare(root / name, *overrides)
    return {name: root / name for name in ["unset", *settings]}


def user_histories(data: Path) -> dict[str, list[str]]:
    """Each benchmark user's whole history (training, validation, test) as next-item lines, from the benchmark."""
    folder = data / "benchmark" / "ml-100k"
    text = {row["item_id"]: row["text"] for row in rows(folder / "items.jsonl")}
    return {
        row["user_id"]: [text[i] for i in [*row["history_item_ids"], row["target_item_id"]]]
        for row in rows(folder / "test.jsonl")
        if row["task"] == "next_item"
    }


def next_item_rows(data: Path) -> list[tuple[tuple[str, ...], str]]:
    """``(history lines, target line)`` of every next-item row of ``instruct/train.jsonl``."""
    found = []
    for row in rows(data / "instruct" / "train.jsonl"):
        instruction = parse_prompt(row["prompt"])
        assert instruction is not None, row["prompt"][:80]
        if instruction.startswith(NEXT_ITEM_TASK):
            found.append((Instruction.parse(instruction).lines, row["response"]))
    return found


def positions_in(history: list[str], shown: tuple[str, ...], target: str) -> list[int]:
    """Where ``shown`` followed by ``target`` occurs contiguously in ``history``: the target's positions."""
    run = [*shown, target]
    return [p + len(shown) for p in range(len(history) - len(run) + 1) if history[p : p + len(run)] == run]


@pytest.mark.parametrize("setting", ["all", "3"])
def test_every_rows_target_comes_strictly_before_validation_and_test(runs: dict[str, Path], setting: str):
    """By content, for every cut point: each next-item row's history and target occur, in order, in some benchmark
    user's history, and wherever they occur the target is before that user's validation and test events."""
    data = runs[setting]
    manifest = json.loads((data / "manifest.json").read_text())
    assert manifest["leak_check"]["passed"] and manifest["leak_check"]["held_out_found"] == 0
    histories = user_histories(data)
    split = rows(data / "benchmark" / "ml-100k" / "validation.jsonl")
    validation = {r["user_id"]: r for r in split if r["task"] == "next_item"}
    found = next_item_rows(data)
    owners: dict[str, set[int]] = {user: set() for user in histories}
    for shown, target in found:
        matches = {user: positions_in(h, shown, target) for user, h in histories.items()}
        matches = {user: p for user, p in matches.items() if p}
        assert matches, f"a row whose history and target are no user's: {target}"
        for user, positions in matches.items():
            validation_at, test_at = len(histories[user]) - 2, len(histories[user]) - 1
            assert histories[user][validation_at] == validation[user]["response"]  # leave-one-out's order
            assert all(p < validation_at < test_at for p in positions), (user, target, positions)
        if len(matches) == 1:
            (user, positions), = matches.items()  # fmt: skip
            owners[user].update(positions)
    source = manifest["sources"]["ml-100k"]
    assert len(found) == source["cut_point_rows"] and source.get("cut_point_rows_too_long", 0) == 0
    trainable = {user: len(h) - 3 for user, h in histories.items()}  # cut points 1 .. n_train - 1
    if setting == "all":
        assert len(found) == sum(trainable.values())
        assert sum(len(p) for p in owners.values()) > 0.9 * len(found)  # most rows name their user by content
    else:
        assert len(found) == sum(min(3, n) for n in trainable.values())


def test_rows_fit_the_token_budget_and_rerun_identically(runs: dict[str, Path], tmp_path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(runs["all"] / "tokenizer"))
    prompts = [r["prompt"] for r in rows(runs["all"] / "instruct" / "train.jsonl") if NEXT_ITEM_TASK in r["prompt"]]
    assert max(len(tokenizer(p)["input_ids"]) for p in prompts) <= 128
    first = json.loads((runs["3"] / "manifest.json").read_text())["content_sha256"]
    assert run_prepare(tmp_path / "again", "next_item_cut_points=3")["content_sha256"] == first


def test_unset_key_writes_todays_rows_byte_for_byte(runs: dict[str, Path]):
    """Unset and null are the same run; their next-item rows are RecGPT's: the last ``examples_per_user`` (2) ends
    of each benchmark user's whole training history, unfitted."""
    unset, null = (json.loads((runs[n] / "manifest.json").read_text()) for n in ("unset", "null"))
    assert unset["content_sha256"] == null["content_sha256"]
    assert unset["config"]["next_item_cut_points"] is None and "cut_point_rows" not in unset["sources"]["ml-100k"]
    histories = {u: h[:-2] for u, h in user_histories(runs["unset"]).items()}
    expected = sorted((tuple(h[: end - 1]), h[end - 1]) for h in histories.values() for end in (len(h), len(h) - 1))
    assert sorted(next_item_rows(runs["unset"])) == expected
    assert unset["instruct"]["train"] == 4 * len(histories)  # 2 next-item and 2 rating rows per user


@pytest.mark.parametrize("value", ["0", "-2", "some", "true", "2.5", "'8'"])
def test_a_bad_value_is_refused_naming_the_key(value: str, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stopped:
        run_prepare(tmp_path / "data", f"next_item_cut_points={value}")
    assert stopped.value.code == 2
    assert "next_item_cut_points" in caplog.text and str(CONFIG) in caplog.text
    assert not (tmp_path / "data").exists()


def test_fine_tuning_chunks_get_cut_point_rows_and_rating_rows_stay(tmp_path: Path):
    """Several sources (fine-tuning users with chunks; a benchmark with both protocols): the next-item rows are
    the cut points' and the rating rows are exactly those of a run without the key."""
    from tests.data.test_prepare import multi_source_config

    multi_source_config(tmp_path)  # writes corpus.yaml
    config, output = tmp_path / "corpus.yaml", tmp_path / "corpus"
    main(["data", "prepare", str(config)])
    before = rows(output / "instruct" / "train.jsonl")
    main(["data", "prepare", str(config), "next_item_cut_points=2"])
    manifest = json.loads((output / "manifest.json").read_text())
    after = rows(output / "instruct" / "train.jsonl")
    assert manifest["leak_check"]["passed"]
    cut = {name: counts.get("cut_point_rows", 0) for name, counts in manifest["sources"].items()}
    for name, counts in manifest["sources"].items():  # only fine-tuning users' chunks give rows (at most 2 each)
        assert (cut[name] > 0) == (counts.get("users_finetune", 0) > 0) and cut[name] <= 2 * counts["chunks"]
    assert cut["netflix"] > 0
    next_item = [r for r in after if NEXT_ITEM_TASK in r["prompt"]]
    assert len(next_item) == sum(cut.values())
    rating = sorted(json.dumps(r) for r in after if NEXT_ITEM_TASK not in r["prompt"])
    assert rating == sorted(json.dumps(r) for r in before if NEXT_ITEM_TASK not in r["prompt"])
