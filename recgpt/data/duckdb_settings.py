"""The DuckDB connection of ``recgpt data prepare`` (ingest and engine alike) and the checks of its two settings.

``memory_limit`` and ``threads`` come from a user's config; both are checked here, before DuckDB sees them, and
reach it as query parameters only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_MEMORY_LIMIT = re.compile(r"(\d+(?:\.\d+)?)\s*(%|[KMGT]?B|[KMGT]iB|[KMGT])", re.IGNORECASE)
_UNITS = {"B": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
MIN_MEMORY_BYTES = 16 * 10**6  # below this DuckDB cannot run the engine's queries


def check_memory_limit(value: Any) -> str:
    """``value`` if it is a DuckDB size of at least 16MB (``2GB``, ``512MiB``) or a share of RAM (``80%``).

    Raises:
        ValueError: Naming the key ``memory_limit`` and the value (nothing else reaches SQL).
    """
    text = str(value).strip()
    match = _MEMORY_LIMIT.fullmatch(text)
    if match is None:
        raise ValueError(f"memory_limit: {value!r} is not a size; write a number and a unit, e.g. 2GB, 512MB or 80%")
    number, unit = float(match.group(1)), match.group(2).upper()
    if unit == "%":
        if not 0 < number <= 100:
            raise ValueError(f"memory_limit: {value!r} must be a share of RAM in (0%, 100%]")
        return text
    size = number * _UNITS[unit[0]] * (1.024 ** "BKMGT".index(unit[0]) if "I" in unit else 1)
    if size < MIN_MEMORY_BYTES:
        raise ValueError(f"memory_limit: {value!r} is below the 16MB DuckDB needs; give e.g. 2GB")
    return text


def check_threads(value: Any) -> int | None:
    """``value`` as a positive thread count, or None (all cores); else an error naming the key ``threads``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"threads: must be a whole number >= 1, or null for all cores; got {value!r}")
    return value


def connect(spill: Path, memory_limit: str, threads: int | None = None) -> Any:
    """An in-memory DuckDB database limited to ``memory_limit``, spilling to ``spill``, keeping insertion order.

    Every setting is passed as a query parameter, after ``check_memory_limit`` and ``check_threads``.

    Raises:
        ValueError: For a malformed or unusable ``memory_limit`` or ``threads``, naming the key.
    """
    import duckdb

    limit, count = check_memory_limit(memory_limit), check_threads(threads)
    connection = duckdb.connect(":memory:")
    try:
        connection.execute("SET memory_limit = ?", [limit])
    except duckdb.Error as error:  # e.g. a limit too small for DuckDB to start
        connection.close()
        raise ValueError(f"memory_limit: DuckDB refused {limit!r} ({str(error).splitlines()[0]})") from error
    connection.execute("SET temp_directory = ?", [str(spill)])
    connection.execute("SET preserve_insertion_order = true")
    if count is not None:
        connection.execute("SET threads = ?", [count])
    return connection
