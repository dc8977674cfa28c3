"""Chronological histories, leave-one-out and the leak check, on hand-built events."""

from __future__ import annotations

import pytest

from recgpt.data.records import Interaction
from recgpt.data.splits import LeakageError, build_histories, check_no_leakage, leave_one_out


def event(user: str, item: str, t: float | None, order: int) -> Interaction:
    return Interaction(user, item, t, 4.0, order=order)


def test_ties_keep_file_order_not_item_id():
    rows = [event("u", "z", 10.0, 0), event("u", "a", 10.0, 1), event("u", "m", 5.0, 2), event("v", "q", None, 3)]
    histories = build_histories(rows)
    assert [e.item_id for e in histories["u"]] == ["m", "z", "a"]
    assert list(histories) == ["u", "v"]


def test_missing_timestamps_fall_back_to_file_order():
    rows = [event("u", "c", None, 0), event("u", "a", None, 1), event("u", "b", None, 2)]
    assert [e.item_id for e in build_histories(rows)["u"]] == ["c", "a", "b"]


def test_leave_one_out_holds_out_the_last_two():
    history = [event("u", item, float(t), t) for t, item in enumerate("abcde")]
    split = leave_one_out({"u": history})
    assert [e.item_id for e in split.train["u"]] == ["a", "b", "c"]
    assert split.validation["u"].item_id == "d"
    assert split.test["u"].item_id == "e"
    assert [e.item_id for e in split.history_before("u", "test")] == ["a", "b", "c", "d"]
    assert [e.item_id for e in split.history_before("u", "validation")] == ["a", "b", "c"]


def test_leave_one_out_rejects_too_short_histories():
    with pytest.raises(ValueError, match="user u has 2 interactions"):
        leave_one_out({"u": [event("u", "a", 1.0, 0), event("u", "b", 2.0, 1)]})


def test_leak_check_passes_training_events_and_names_a_leaked_one():
    history = [event("u", item, float(t), t) for t, item in enumerate("abcde")]
    split = leave_one_out({"u": history})
    assert check_no_leakage([split.train["u"], split.train["u"][:2]], split) == 2
    with pytest.raises(LeakageError, match="test interaction of user u with item e"):
        check_no_leakage([split.train["u"], [*split.train["u"], split.test["u"]]], split)
    # The same item at another time (a re-purchase) is a different interaction and is allowed.
    again = Interaction("u", "e", 0.5, 5.0, order=99)
    assert check_no_leakage([[again]], split) == 1
