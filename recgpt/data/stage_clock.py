"""Wall time of each stage of one ``recgpt data prepare`` run, logged at its end: where a run's time went."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

STAGE_LOG_PREFIX = "seconds per stage: "  # the log line's start; bench/prep.py reads the JSON after it


class StageClock:
    """Seconds spent in named stages, in the order they first ran; a stage entered twice adds up."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        """Time the ``with`` block as ``stage`` (also when it raises, so a failed run's log says where it was)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def summary(self) -> str:
        """One line: the prefix, then ``{"stage": seconds, ..., "total": seconds}`` rounded to 0.1 s."""
        seconds = {stage: round(value, 1) for stage, value in self.seconds.items()}
        seconds["total"] = round(time.perf_counter() - self.started, 1)
        return STAGE_LOG_PREFIX + json.dumps(seconds)
