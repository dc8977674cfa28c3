"""Writers of a prepared corpus: pre-training documents, instruction rows and benchmark rows, one user at a time.

Every training text records the events it was rendered from (``trained_keys.parquet``), so the run can prove
afterwards, in DuckDB, that no held-out event of any protocol reached any training text.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from recgpt.data.chunking import chunk_bounds
from recgpt.data.histories import Event, UserHistory
from recgpt.data.records import Domain
from recgpt.data.render import HISTORY_HEADER, json_line, next_item_row, rating_row, render_document
from recgpt.encoding import ExampleTooLongError

TokenCounter = Callable[[list[str]], list[int]]
PromptFitter = Callable[[str], str]
# ``(header, lines, copies)``: a document written ``copies`` times to the corpus, for the MDS shards.
DocumentSink = Callable[[str, list[str], int], None]
KEY_SCHEMA = pa.schema([("source", pa.string()), ("user_id", pa.string()), ("ord", pa.int64())])


@dataclass(frozen=True)
class OutputSettings:
    """How histories become texts.

    Attributes:
        examples_per_user: Instruction examples per task per fine-tuning user (or chunk); RecGPT used 1.
        max_seq_len: Token budget of a document; longer histories are chunked. None disables chunking.
        weights: Pre-training mixing weight per source: a user's documents are written ``floor(w)`` times, plus
            once more for a seeded ``frac(w)`` share of users (0.5 keeps half the users, 2 doubles them).
        finetune_on_benchmark: Benchmark sources whose training events also give instruction rows.
        seed: Seeds the weights' user choice and the cut points.
        next_item_cut_points: None for RecGPT's next-item rows (the last ``examples_per_user`` ends); N for
            next-item rows at up to N distinct seeded cut points of each training history (or chunk), ``"all"``
            for every cut point (see ``cut_points``); rating rows are unchanged either way.
    """

    examples_per_user: int = 1
    max_seq_len: int | None = 2048
    weights: dict[str, float] | None = None
    finetune_on_benchmark: frozenset[str] = frozenset()
    seed: int = 17
    next_item_cut_points: int | str | None = None


def unit_hash(text: str) -> float:
    """A stable number in ``[0, 1)`` from text (MD5), the same on every machine and Python version."""
    return int.from_bytes(hashlib.md5(text.encode()).digest()[:8], "big") / 2**64


def training_rows(
    domain: Domain, events: Sequence[Event], per_user: int, next_item: bool = True
) -> Iterator[tuple[dict[str, str], list[Event]]]:
    """Instruction rows from one user's (or chunk's) training events, with the events each was rendered from.

    For each end ``e`` (the whole history, then one event shorter, ``per_user`` times), as in RecGPT: the
    next-item row shows events ``1..e-1`` (identifying lines) and answers event ``e``; the rating row shows events
    ``1..e-1`` (full lines), the last one's rating removed and used as the response. ``next_item=False`` gives the
    rating rows only (the next-item rows then come from ``cut_point_rows``).
    """
    for end in range(len(events), max(len(events) - per_user, 1), -1):
        shown = list(events[: end - 1])
        if next_item:
            yield next_item_row(domain, [e.text for e in shown], events[end - 1].text), list(events[:end])
        if shown[-1].rating is not None:
            yield rating_row(domain, [e.line for e in shown[:-1]], shown[-1].hidden, shown[-1].rating), shown


def cut_points(events: Sequence[Event], count: int | str, salt: str) -> list[int]:
    """Distinct cut positions ``c`` (``1 <= c < len(events)``) of a history, latest first: ``count`` of them, or
    every one for ``"all"`` or when the history has no more.

    The choice is seeded: positions are taken in the order of a stable hash of ``salt`` and each event's file
    order (``unit_hash``), so a rerun, another machine or another Python draws the same cut points. The row of
    cut ``c`` shows events ``0..c-1`` and answers event ``c``.

    Example:
        Six events and ``count=3`` give three distinct positions out of ``1..5``, e.g. ``[5, 3, 2]``; ``"all"``
        gives ``[5, 4, 3, 2, 1]``; one event gives ``[]`` (no history to show).
    """
    positions = list(range(1, len(events)))
    if count != "all" and int(count) < len(positions):
        positions = sorted(positions, key=lambda p: (unit_hash(f"{salt}|{events[p].order}"), p))[: int(count)]
    return sorted(positions, reverse=True)


def cut_point_rows(
    domain: Domain, events: Sequence[Event], cuts: Sequence[int], window: Callable[[int], int] = lambda cut: 0
) -> Iterator[tuple[dict[str, str], list[Event]]]:
    """Next-item rows at the given cut points, with the events each was rendered from.

    The row of cut ``c`` shows events ``window(c)..c-1`` (identifying lines, oldest first) and answers event
    ``c``; ``window`` leaves out lines too old to fit any prompt of the token budget (``CorpusWriter._window``).

    Example:
        Events ``a, b, c, d`` and cuts ``[3, 1]`` give a row showing ``a, b, c`` answering ``d`` and one showing
        ``a`` answering ``b``.
    """
    for cut in cuts:
        start = window(cut)
        shown = [e.text for e in events[start:cut]]
        yield next_item_row(domain, shown, events[cut].text), list(events[start : cut + 1])


class CorpusWriter:
    """Open output files under ``root`` and write each user's texts as histories stream by."""

    def __init__(
        self,
        root: Path,
        domains: dict[str, Domain],
        settings: OutputSettings,
        count_tokens: TokenCounter | None = None,
        fit_prompt: PromptFitter | None = None,
        documents: DocumentSink | None = None,
    ) -> None:
        """Args:
        count_tokens: Token counts of lines, for chunking (None: no chunking); ``LineTokens`` keeps their ids.
        fit_prompt: Shortens a benchmark prompt to the token budget by whole lines (None: kept whole); it raises
            ``ExampleTooLongError`` when a prompt cannot fit, and the row is then counted and skipped.
        documents: Receives each pre-training document as it is written (its header, lines and copies), so the
            MDS shards are written in the corpus's order from the same line tokens (None: JSONL only).
        """
        self.root = root
        self.fit_prompt = fit_prompt
        self.domains = domains
        self.settings = settings
        self.count_tokens = count_tokens
        self.documents = documents
        self.files: dict[str, TextIO] = {}
        self.keys: tuple[list[str], list[str], list[int]] = ([], [], [])
        self.key_writer = pq.ParquetWriter(root / "trained_keys.parquet", KEY_SCHEMA)
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in domains}
        self.header_tokens = {
            name: (count_tokens([HISTORY_HEADER.format(noun=d.noun)])[0] if count_tokens else 0)
            for name, d in domains.items()
        }

    def _file(self, relative: str) -> TextIO:
        if relative not in self.files:
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            self.files[relative] = path.open("w", encoding="utf-8")
        return self.files[relative]

    def _write(self, relative: str, row: dict[str, Any]) -> None:
        self._file(relative).write(json_line(row))

    def _trained(self, source: str, user: str, orders: Sequence[int]) -> None:
        sources, users, keys = self.keys
        sources.extend([source] * len(orders))
        users.extend([user] * len(orders))
        keys.extend(orders)
        if len(keys) >= 500_000:
            self._flush_keys()

    def _flush_keys(self) -> None:
        if self.keys[2]:
            self.key_writer.write_table(pa.table(list(self.keys), schema=KEY_SCHEMA))
            self.keys = ([], [], [])

    def chunk_bounds(self, source: str, lines: list[str]) -> list[tuple[int, int]]:
        """A history's chunks within the token budget (``recgpt.data.chunking``); each counts as its own user."""
        budget = self.settings.max_seq_len
        if not lines:
            return []
        header = self.header_tokens[source]
        if budget is None or self.count_tokens is None or header + sum(len(x.encode()) + 1 for x in lines) <= budget:
            return [(0, len(lines))]  # a token is at least one byte, so this history fits
        tokens = self.count_tokens(lines)
        bounds = chunk_bounds(tokens, header, budget)
        self.counts[source]["lines_over_budget"] += sum(
            1 for a, b in bounds if b - a == 1 and header + tokens[a] + 1 > budget
        )
        return bounds

    def write_documents(self, source: str, user: str, lines: list[str], orders: list[int]) -> list[tuple[int, int]]:
        """Write a user's pre-training documents: chunked to the budget, repeated by the source's weight.

        Returns:
            The chunks' ``(start, stop)`` bounds.
        """
        counts = self.counts[source]
        bounds = self.chunk_bounds(source, lines)
        counts["chunks"] += len(bounds)
        weight = (self.settings.weights or {}).get(source, 1.0)
        share = unit_hash(f"{self.settings.seed}|weight|{source}|{user}")
        copies = math.floor(weight) + (1 if share < weight - math.floor(weight) else 0)
        for start, stop in bounds if copies else []:
            row = json_line({"text": render_document(self.domains[source], lines[start:stop])})
            self._file("pretraining/corpus.jsonl").write(row * copies)
            if self.documents is not None:
                self.documents(HISTORY_HEADER.format(noun=self.domains[source].noun), lines[start:stop], copies)
            counts["documents"] += copies
            self._trained(source, user, orders[start:stop])
        return bounds

    def write_pretraining_user(self, source: str, user: str, lines: list[str], orders: list[int]) -> None:
        """A pre-training user: documents only (``Engine.pretraining`` streams them)."""
        self.counts[source]["users_pretrain"] += 1
        self.write_documents(source, user, lines, orders)

    def write(self, history: UserHistory) -> None:
        """Write everything a fine-tuning or benchmark user contributes."""
        source, domain, counts = history.source, self.domains[history.source], self.counts[history.source]
        counts[f"users_{history.group}"] += 1
        if history.has_held_out:
            train = [e for e in history.events if not e.held_out]
            lines, orders = [e.line for e in train], [e.order for e in train]
        else:
            train = None
            lines, orders = history.columns["line"], history.columns["ord"]
        if history.group == "benchmark":
            bounds = self.write_documents(source, history.user_id, lines, orders)
        else:
            bounds = self.chunk_bounds(source, lines)
            counts["chunks"] += len(bounds)
        on_benchmark = history.group == "benchmark" and source in self.settings.finetune_on_benchmark
        if history.group == "finetune" or on_benchmark:
            events = train if train is not None else history.events
            # A fine-tuning user's chunks each count as a user (RecGPT). A benchmark user gives rows from its whole
            # training history, the history its evaluation prompts continue; the collator fits them to length.
            for chunk in [events] if on_benchmark else [events[a:b] for a, b in bounds]:
                self._training_rows(source, history.user_id, domain, chunk)
        if history.group == "benchmark":
            self._benchmark(history, domain, train if train is not None else history.events)

    def _training_rows(self, source: str, user: str, domain: Domain, events: Sequence[Event]) -> None:
        """Write a chunk's instruction rows; next-item rows at cut points when ``next_item_cut_points`` is set.

        A cut-point row's prompt is fitted to ``max_seq_len`` as benchmark prompts are (oldest lines removed); one
        that cannot fit is counted as ``cut_point_rows_too_long`` and skipped.
        """
        counts, cut_count = self.counts[source], self.settings.next_item_cut_points
        rows = training_rows(domain, events, self.settings.examples_per_user, next_item=cut_count is None)
        for row, used in rows:
            self._write("instruct/train.unshuffled.jsonl", row)
            counts["instruction_rows"] += 1
            self._trained(source, user, [e.order for e in used])
        if cut_count is None:
            return
        cuts = cut_points(events, cut_count, f"{self.settings.seed}|cut|{source}|{user}")
        for row, used in cut_point_rows(domain, events, cuts, self._window([e.text for e in events])):
            if self.fit_prompt is not None:
                try:
                    row["prompt"] = self.fit_prompt(row["prompt"])
                except ExampleTooLongError:
                    counts["cut_point_rows_too_long"] += 1
                    continue
            self._write("instruct/train.unshuffled.jsonl", row)
            counts["instruction_rows"] += 1
            counts["cut_point_rows"] += 1
            self._trained(source, user, [e.order for e in used])  # every line before fitting: a superset

    def _benchmark(self, history: UserHistory, domain: Domain, train: list[Event]) -> None:
        folder = f"benchmark/{history.source}"
        counts = self.counts[history.source]
        self._write(
            f"{folder}/train.jsonl",
            {"user_id": history.user_id, "item_ids": [e.item_id for e in train], "ratings": [e.rating for e in train]},
        )
        texts, lines = self._recent([e.text for e in history.events]), self._recent([e.line for e in history.events])
        for position, event in enumerate(history.events):
            before = history.events[:position]
            if event.next_item is not None and before:
                row = next_item_row(domain, texts(position), event.text)
                self._split_row(
                    folder,
                    event.next_item,
                    {
                        "user_id": history.user_id,
                        "task": "next_item",
                        **row,
                        "target_item_id": event.item_id,
                        "history_item_ids": [e.item_id for e in before],
                    },
                )
                counts[f"next_item_{event.next_item}"] += 1
            if event.rating_split is not None and event.rating is not None:
                row = rating_row(domain, lines(position), event.hidden, event.rating)
                self._split_row(
                    folder,
                    event.rating_split,
                    {
                        "user_id": history.user_id,
                        "task": "rating",
                        **row,
                        "target_item_id": event.item_id,
                        "target_rating": event.rating,
                    },
                )
                counts[f"rating_{event.rating_split}"] += 1

    def _recent(self, lines: list[str]) -> Callable[[int], list[str]]:
        """``recent(p)``: the lines before position ``p`` that can matter for a prompt within the token budget.

        With token counts, lines far older than any budget-sized prompt could reach are left out before the prompt
        is built (a superset of what fits; ``fit_prompt`` then removes the rest exactly), so long histories are
        not tokenized again for every row.
        """
        start_of = self._window(lines)
        return lambda position: lines[start_of(position) : position]

    def _window(self, lines: list[str]) -> Callable[[int], int]:
        """``start(p)``: the first of the lines before position ``p`` that ``_recent`` keeps (0 without a budget)."""
        budget = self.settings.max_seq_len
        if self.count_tokens is None or self.fit_prompt is None or budget is None:
            return lambda position: 0
        costs = [tokens + 1 for tokens in self.count_tokens(lines)]

        def start_of(position: int) -> int:
            start, total = position, 0
            while start > 0 and total + costs[start - 1] <= budget:
                start -= 1
                total += costs[start]
            return max(0, start - 2)  # two more lines: merges across line ends can save tokens

        return start_of

    def _split_row(self, folder: str, split: str, row: dict[str, Any]) -> None:
        if self.fit_prompt is not None:
            try:
                row["prompt"] = self.fit_prompt(row["prompt"])
            except ExampleTooLongError:
                self.counts[folder.split("/", 1)[1]]["benchmark_rows_too_long"] += 1
                return
        self._write(f"{folder}/{split}.jsonl", row)
        if split == "validation":
            self._write("instruct/validation.jsonl", {"prompt": row["prompt"], "response": row["response"]})

    def close(self) -> None:
        """Flush and close every file."""
        self._flush_keys()
        self.key_writer.close()
        for handle in self.files.values():
            handle.close()
