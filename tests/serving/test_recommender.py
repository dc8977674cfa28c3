"""The Python API: pipeline-identical prompts, only real unseen items, batched == single, ratings that add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recgpt.data.render import Instruction, parse_prompt
from recgpt.evaluation.runner import read_rows
from recgpt.serving import Catalog, Recommender, RequestError

HISTORY = ["50", {"item_id": "181", "rating": 4.0}, {"item_id": "172", "rating": 5.0, "review": "Loved it"}]


def benchmark_rows(prepared: Path, split: str) -> list[dict]:
    return read_rows(prepared / "benchmark" / "ml-100k" / f"{split}.jsonl")


def line_count(prompt: str) -> int:
    return len(Instruction.parse(parse_prompt(prompt) or "").lines)


def test_next_item_prompt_is_the_benchmarks_byte_for_byte(recommender, prepared: Path):
    rows = [r for r in benchmark_rows(prepared, "test") if r["task"] == "next_item"][:10]
    for row in rows:
        shown = row["history_item_ids"][len(row["history_item_ids"]) - line_count(row["prompt"]) :]
        assert recommender.next_item_prompt(shown) == row["prompt"]


def test_rating_prompt_is_the_benchmarks_byte_for_byte(recommender, prepared: Path):
    train = {r["user_id"]: r for r in read_rows(prepared / "benchmark" / "ml-100k" / "train.jsonl")}
    validation = {r["user_id"]: r for r in benchmark_rows(prepared, "validation") if r["task"] == "rating"}
    for row in [r for r in benchmark_rows(prepared, "test") if r["task"] == "rating"][:10]:
        user = row["user_id"]
        events = [
            {"item_id": i, "rating": float(v)}
            for i, v in zip(train[user]["item_ids"], train[user]["ratings"], strict=True)
        ]
        events.append({"item_id": validation[user]["target_item_id"], "rating": validation[user]["target_rating"]})
        shown = events[len(events) - (line_count(row["prompt"]) - 1) :]
        assert recommender.rating_prompt(shown, row["target_item_id"]) == row["prompt"]


def test_recommendations_are_real_unseen_items_best_first(recommender):
    found = recommender.recommend(HISTORY, k=5)
    assert 1 <= len(found) <= 5
    assert all(item.item_id in recommender.catalog.items for item in found)
    assert not {item.item_id for item in found} & {"50", "181", "172"}
    assert len({item.item_id for item in found}) == len(found)
    assert [item.score for item in found] == sorted((item.score for item in found), reverse=True)
    for item in found:
        assert item.title == recommender.catalog.items[item.item_id].title
        assert item.text == recommender.catalog.text(item.item_id)
        assert 0 < item.probability <= 1


def test_excluded_items_are_never_recommended(recommender):
    first = recommender.recommend(HISTORY, k=5)
    blocked = [first[0].item_id, first[2].item_id]
    again = recommender.recommend(HISTORY, k=5, exclude=blocked)
    assert len(again) == 5 and not {item.item_id for item in again} & set(blocked)
    with pytest.raises(RequestError, match=r"exclude\[1\]: unknown item 'nope'"):
        recommender.recommend(HISTORY, exclude=["50", "nope"])
    with_seen = recommender.recommend(["50"], k=20, exclude_seen=False)
    assert len(with_seen) == 20  # the history's item is allowed back (whether the model ranks it is its business)


def test_a_batch_answers_each_history_as_it_would_alone(recommender):
    histories = [HISTORY, ["1", "2"], ["100", "98", "56", "7"]]
    together = recommender.recommend_batch(histories, k=4)
    for history, batch_answer in zip(histories, together, strict=True):
        alone = recommender.recommend(history, k=4)
        assert [i.item_id for i in batch_answer] == [i.item_id for i in alone]
        assert [i.score for i in batch_answer] == pytest.approx([i.score for i in alone], abs=1e-4)


def test_rating_is_the_expectation_of_its_distribution_and_matches_the_evaluation(recommender):
    from recgpt.evaluation import rating

    estimate = recommender.predict_rating(HISTORY, "174")
    assert sum(estimate.distribution.values()) == pytest.approx(1.0)
    expectation = sum(p * float(text.split("/")[0]) for text, p in estimate.distribution.items())
    assert estimate.rating == pytest.approx(expectation)
    assert 1.0 <= estimate.rating <= 5.0
    prompt = recommender.rating_prompt(HISTORY, "174")
    evaluated = rating.expected(recommender.model, recommender.tokenizer, [prompt], 5.0, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert estimate.rating == pytest.approx(evaluated[0].value, abs=1e-4)
    batched = recommender.predict_rating_batch([(HISTORY, "174", None), (["1"], "2", "Great")])
    assert batched[0].rating == pytest.approx(estimate.rating, abs=1e-4)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], "history: empty"),
        ("50", "history: expected a list"),
        (["99999"], "history[0].item_id: unknown item '99999'"),
        ([50], "history[0]: expected an item id or an object"),
        ([{"rating": 4}], "history[0].item_id: expected a catalogue item id"),
        ([{"item_id": "50", "rating": 7}], "history[0].rating: expected a number from 0 to 5.0"),
        ([{"item_id": "50", "rating": "high"}], "history[0].rating"),
        ([{"item_id": "50", "review": 3}], "history[0].review: expected text"),
        ([{"item_id": "50", "score": 3}], "history[0]: unknown fields ['score']"),
        (["50"] * 201, "history: 201 events; at most 200"),
    ],
)
def test_bad_histories_name_what_to_fix(recommender, history, message):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        recommender.recommend(history)


def test_bad_k_and_unknown_rating_item(recommender):
    with pytest.raises(RequestError, match="k: expected a whole number"):
        recommender.recommend(["50"], k=0)
    with pytest.raises(RequestError, match="item_id: unknown item 'nope'"):
        recommender.predict_rating(["50"], "nope")


def test_long_histories_are_fitted_as_in_training_and_a_review_that_cannot_fit_is_named(recommender):
    from recgpt.encoding import fit_prompt

    history = (list(recommender.catalog.items)[:30] * 7)[:200]
    prompt = recommender.rating_prompt(history, "1")
    kept = recommender.rating_ids(history, "1")
    assert kept == fit_prompt(recommender.tokenizer, prompt, recommender.rating_budget)[0]
    assert len(recommender.tokenizer(prompt)["input_ids"]) > recommender.context >= len(kept)
    assert recommender.predict_rating(history, "1").rating > 0
    with pytest.raises(RequestError, match=r"^review: \d+ tokens \(992 characters\); with the rated item's line"):
        recommender.predict_rating(["50"], "1", review="What a film. " * 76 + "Wow.")
    with pytest.raises(RequestError, match=r"^review: .*shorten the review to at most \d+ tokens \(about \d+ char"):
        recommender.rating_ids(["50"], "1", review="What a film. " * 76 + "Wow.")


def test_catalog_loads_from_its_folder_or_items_file(prepared: Path, tmp_path: Path):
    from_folder = Catalog.load(prepared)
    from_file = Catalog.load(prepared / "benchmark" / "ml-100k" / "items.jsonl")
    assert from_folder == from_file
    assert from_folder.domain.noun == "movies/shows" and from_folder.text("50") == "Title: Star Wars (1977)"
    with pytest.raises(FileNotFoundError, match=r"no manifest\.json"):
        Catalog.load(tmp_path)
    bad = tmp_path / "data" / "benchmark" / "x" / "items.jsonl"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"item_id": "1"}\n')
    (tmp_path / "data" / "manifest.json").write_text(
        json.dumps(
            {"sources": {"x": {"domain": {"name": "x", "noun": "things", "rating_scale": 5, "identifying": []}}}}
        )
    )
    with pytest.raises(ValueError, match=r"items.jsonl:1: an item needs item_id, title"):
        Catalog.load(bad)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recgpt.cli", "recommend", *args], input=stdin, capture_output=True, text=True
    )


def test_cli_recommends_from_a_history_file_or_stdin(model_dir: Path, prepared: Path, tmp_path: Path, recommender):
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(json.dumps(e) for e in HISTORY) + "\n")
    common = ["--model", str(model_dir), "--catalog", str(prepared), "--k", "3"]
    as_json = run_cli(*common, "--history", str(history), "--json")
    assert as_json.returncode == 0, as_json.stderr
    items = json.loads(as_json.stdout)["items"]
    default = Recommender(recommender.model, recommender.tokenizer, recommender.catalog)  # the CLI's 10 beams
    assert [i["item_id"] for i in items] == [i.item_id for i in default.recommend(HISTORY, k=3)]
    table = run_cli(*common, "--history", "-", stdin=json.dumps(HISTORY))
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0] == "Top-3 for the history (3 items in history):"
    assert items[0]["title"] in table.stdout.splitlines()[1]
    bad = run_cli(*common, "--history", "-", stdin='["50", "99999"]')
    assert bad.returncode == 2 and "history[1].item_id: unknown item '99999'" in bad.stderr
    broken = run_cli(*common, "--history", "-", stdin='["50",')
    assert broken.returncode == 2 and "--history stdin: not valid JSON" in broken.stderr


def test_cli_recommends_for_a_user_of_the_split(model_dir: Path, prepared: Path):
    user = next(r for r in benchmark_rows(prepared, "test") if r["task"] == "next_item")["user_id"]
    result = run_cli("--model", str(model_dir), "--data", str(prepared), "--user", user, "--k", "4")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Top-4 for user {user}") and "Held-out next item:" in result.stdout
