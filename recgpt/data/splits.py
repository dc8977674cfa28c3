"""User histories and the leave-one-out benchmark protocol, with the leak check that guards it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from recgpt.data.records import Interaction


def build_histories(interactions: Iterable[Interaction]) -> dict[str, list[Interaction]]:
    """Group interactions by user, each history in chronological order.

    Ties (equal timestamps, or no timestamps) keep file order (``Interaction.order``), never item id, so the
    result does not depend on how ids happen to sort. Users appear in order of first appearance.

    Example:
        >>> rows = [Interaction("u", "b", 5.0, None, order=0), Interaction("u", "a", 5.0, None, order=1),
        ...         Interaction("u", "c", 1.0, None, order=2)]
        >>> [event.item_id for event in build_histories(rows)["u"]]
        ['c', 'b', 'a']
    """
    histories: dict[str, list[Interaction]] = defaultdict(list)
    for event in interactions:
        histories[event.user_id].append(event)
    for history in histories.values():
        history.sort(key=lambda event: (event.timestamp if event.timestamp is not None else 0.0, event.order))
    return dict(histories)


@dataclass(frozen=True)
class LeaveOneOut:
    """Per-user leave-one-out split: the last event is test, the one before validation, the rest training.

    Attributes:
        train: Each user's training events, chronological.
        validation: Each user's second-to-last event.
        test: Each user's last event.
    """

    train: dict[str, list[Interaction]]
    validation: dict[str, Interaction]
    test: dict[str, Interaction]

    def history_before(self, user_id: str, split: str) -> list[Interaction]:
        """Everything a user did before their ``split`` event ("validation" or "test"), oldest first."""
        if split == "validation":
            return list(self.train[user_id])
        if split == "test":
            return [*self.train[user_id], self.validation[user_id]]
        raise ValueError(f"split must be 'validation' or 'test', got {split!r}")

    def target(self, user_id: str, split: str) -> Interaction:
        """A user's held-out event of ``split`` ("validation" or "test")."""
        return {"validation": self.validation, "test": self.test}[split][user_id]


def leave_one_out(histories: Mapping[str, Sequence[Interaction]], min_train: int = 1) -> LeaveOneOut:
    """Split chronological histories leave-one-out (P5's and RecGPT's next-item protocol).

    Args:
        histories: Chronological histories per user (see ``build_histories``).
        min_train: Fewest training events a user must keep; users with fewer than ``min_train + 2`` events are
            an error (filter them first: RecGPT keeps users with 5 or more).

    Example:
        >>> h = {"u": [Interaction("u", i, float(t), None) for t, i in enumerate("abcd")]}
        >>> split = leave_one_out(h)
        >>> [e.item_id for e in split.train["u"]], split.validation["u"].item_id, split.test["u"].item_id
        (['a', 'b'], 'c', 'd')
    """
    train, validation, test = {}, {}, {}
    for user_id, history in histories.items():
        if len(history) < min_train + 2:
            raise ValueError(
                f"user {user_id} has {len(history)} interactions; leave-one-out needs at least {min_train + 2}"
                " (raise min_user_interactions)"
            )
        train[user_id] = list(history[:-2])
        validation[user_id] = history[-2]
        test[user_id] = history[-1]
    return LeaveOneOut(train, validation, test)


class LeakageError(RuntimeError):
    """A held-out interaction was about to enter training text."""


def check_no_leakage(training_sources: Iterable[Sequence[Interaction]], split: LeaveOneOut) -> int:
    """Fail if any interaction of the validation or test split was used to build any training text.

    Args:
        training_sources: For every training text (pre-training document or instruction example, both tasks),
            the interactions it was rendered from.
        split: The benchmark split whose held-out events must stay out.

    Returns:
        The number of training texts checked.

    Raises:
        LeakageError: Naming the first leaked interaction.
    """
    held_out = {
        _key(event): name
        for name, events in (("validation", split.validation), ("test", split.test))
        for event in events.values()
    }
    checked = 0
    for events in training_sources:
        checked += 1
        for event in events:
            name = held_out.get(_key(event))
            if name is not None:
                raise LeakageError(
                    f"the {name} interaction of user {event.user_id} with item {event.item_id} "
                    f"(order {event.order}) is in training text #{checked}"
                )
    return checked


def _key(event: Interaction) -> tuple[str, str, float | None, int]:
    return (event.user_id, event.item_id, event.timestamp, event.order)
