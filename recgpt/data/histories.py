"""A user's streamed history: the records the writers read (``Event``, ``UserHistory``) and the two readers that
cut the engine's sorted rows (``Engine.pretraining``/``histories`` or a share's Parquet files) into users."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from recgpt.data.render import hide_rating


@dataclass(frozen=True)
class Event:
    """One event of a streamed history.

    Attributes:
        item_id: Canonical item id.
        text: The item's next-item line (``render_item``).
        line: The event's full line (``render_event``).
        rating: The rating, or None.
        order: Position in the source file (the leak check's key with the user).
        next_item: ``"validation"``/``"test"`` when held out by leave-one-out, else None.
        rating_split: ``"validation"``/``"test"`` when held out by the random split, else None.
    """

    item_id: str
    text: str
    line: str
    rating: float | None
    order: int
    next_item: str | None
    rating_split: str | None

    @property
    def hidden(self) -> str:
        """The full line with its rating removed (the rating task's target line)."""
        return hide_rating(self.line, self.rating is not None)

    @property
    def held_out(self) -> bool:
        """Whether any protocol holds this event out of training."""
        return self.next_item is not None or self.rating_split is not None


HISTORY_COLUMNS = ("item_id", "text", "line", "rating", "ord", "next_item", "rating_split")


@dataclass
class UserHistory:
    """A user's events in order, with the user's group (``pretrain``, ``finetune`` or ``benchmark``).

    The events are held as columns (aligned lists named as ``HISTORY_COLUMNS``), which is how DuckDB hands them
    over; ``events`` builds ``Event`` records from them when a writer wants records.
    """

    source: str
    user_id: str
    group: str
    columns: dict[str, list[Any]] = field(default_factory=dict)

    @functools.cached_property
    def events(self) -> list[Event]:
        """The events as records, oldest first."""
        return [Event(*values) for values in zip(*(self.columns[name] for name in HISTORY_COLUMNS), strict=True)]

    @property
    def has_held_out(self) -> bool:
        """Whether any event is held out (only benchmark users have such events)."""
        return any(self.columns["next_item"]) or any(self.columns["rating_split"])


# Rows per Arrow batch that a writer turns into Python lists at a time (the engine's streams and the workers'
# share files alike). In a 10M-interaction prepare with 2 workers (bench/prep.py's logs), the workers' 200K-row
# batches peaked 0.28 GiB higher over the process tree than 50K-row ones (1.84 -> 1.56 GiB), with the same output
# (content hash) and no slower writing.
WRITER_BATCH_ROWS = 50_000


def pretraining_users(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, str, list[str], list[int]]]:
    """Pre-training users ``(source, user_id, lines, orders)`` from rows named on each user's first row only.

    The rows are ``Engine.pretraining``'s (or a share's ``pretraining.parquet``): ``source, user_id, line, ord``
    with ``source``/``user_id`` null after a user's first row.
    """
    current: tuple[str, str, list[str], list[int]] | None = None
    for batch in batches:
        columns = batch.to_pydict()
        starts = [index for index, user in enumerate(columns["user_id"]) if user is not None]
        if current is not None and (not starts or starts[0] > 0):  # the user in progress goes on
            end = starts[0] if starts else batch.num_rows
            current[2].extend(columns["line"][:end])
            current[3].extend(columns["ord"][:end])
        for position, start in enumerate(starts):
            if current is not None:
                yield current
            end = starts[position + 1] if position + 1 < len(starts) else batch.num_rows
            current = (
                columns["source"][start],
                columns["user_id"][start],
                columns["line"][start:end],
                columns["ord"][start:end],
            )
    if current is not None:
        yield current


def user_histories(batches: Iterable[pa.RecordBatch]) -> Iterator[UserHistory]:
    """``UserHistory`` records from rows of ``source, user_id, user_group`` and ``HISTORY_COLUMNS``, users in a row.

    Arrow batches are cut into users by slicing their columns, so Python holds a batch and the user in
    progress, with no record per event.
    """
    pending: UserHistory | None = None
    for batch in batches:
        columns = batch.to_pydict()
        keys = list(zip(columns["source"], columns["user_id"], strict=True))
        start = 0
        for index in range(1, len(keys) + 1):
            if index < len(keys) and keys[index] == keys[start]:
                continue
            part = {name: columns[name][start:index] for name in HISTORY_COLUMNS}
            if pending is not None and (pending.source, pending.user_id) == keys[start]:
                for name in HISTORY_COLUMNS:
                    pending.columns[name].extend(part[name])
            else:
                if pending is not None:
                    yield pending
                pending = UserHistory(*keys[start], columns["user_group"][start], part)
            start = index
    if pending is not None:
        yield pending
