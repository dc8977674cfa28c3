"""``recgpt data prepare``'s settings (configs/data/*.yaml): the schema, its validation and the output's place.

``load_prepare_config`` reads a YAML with ``key=value`` overrides into ``PrepareConfig``; ``validate`` checks what
the schema cannot (ranges, names, formats, input files, an output that is no input and no foreign folder), naming
the key and what to change. The run itself is ``recgpt.data.prepare``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recgpt.config import load_config
from recgpt.data.duckdb_settings import check_memory_limit, check_threads
from recgpt.data.engine import PROTOCOLS
from recgpt.data.sources import ADAPTERS, adapter
from recgpt.data.sources.recbole import atomic_paths, packaged_movielens_100k
from recgpt.files import OutputFolderError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # never "." or "..": it names a folder
# ``paths`` roles that may be a folder (every other role is one file): Netflix's ``combined_data_*.txt`` folder.
_FOLDER_ROLES = frozenset({("netflix", "ratings")})
# The marker in manifest.json of an output folder this command wrote; only such a folder is ever replaced.
WRITTEN_BY = "recgpt data prepare"


@dataclass
class SourceConfig:
    """One source of a corpus (``sources:`` list of a data config).

    Attributes:
        name: A unique name (letters, digits, ``_.-``); benchmark files go under ``benchmark/<name>``.
        format: The adapter (``recgpt.data.sources.ADAPTERS``), e.g. ``amazon2018``, ``movielens-1m``, ``generic``.
        paths: The adapter's files by role, e.g. ``{reviews: ..., meta: ...}``. For ``recbole`` an empty map
            reads the MovieLens-100K inside the recbole wheel.
        options: Adapter options (e.g. ``{category: books}`` for Amazon, the column map of ``generic``).
        weight: Pre-training mixing weight (documents repeated ``floor(w)`` times plus a seeded ``frac(w)`` share).
        benchmark: Evaluation protocols, ``leave_one_out`` and/or ``random_80_10_10``; empty for a corpus source.
        finetune_on_train: Also make instruction rows from this benchmark's training events (RecGPT did not; the
            demo does, as MovieLens-100K alone has no separate fine-tuning users).
        exclude_users_of: Sources whose users are removed from this one (a newer release overlapping an older
            benchmark release, e.g. Amazon 2018 users who are in the Amazon 2014 benchmark).
    """

    name: str = "???"
    format: str = "???"
    paths: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0
    benchmark: list[str] = field(default_factory=list)
    finetune_on_train: bool = False
    exclude_users_of: list[str] = field(default_factory=list)


@dataclass
class TokenizerConfig:
    """The tokenizer of chunking and MDS shards (it must be the training recipe's).

    Attributes:
        train_vocab_size: Train a byte-level BPE tokenizer of this size on the corpus lines and save it under
            ``output/tokenizer``; null to use ``name``.
        name: An existing tokenizer (folder or hub id) when ``train_vocab_size`` is null, e.g.
            ``EleutherAI/gpt-neox-20b`` for the 7B recipes.
    """

    train_vocab_size: int | None = 4096
    name: str | None = None


@dataclass
class PrepareConfig:
    """``recgpt data prepare`` settings (see configs/data/*.yaml).

    Attributes:
        output: The output folder, replaced atomically.
        sources: The sources.
        min_user_interactions: Users with fewer events are dropped (RecGPT: 5).
        finetune_fraction: Share of each corpus source's users kept for fine-tuning (RecGPT: 0.005).
        examples_per_user: Instruction examples per task per fine-tuning user or chunk (RecGPT: 1).
        next_item_cut_points: Null (RecGPT's rows, the default): next-item rows at the last ``examples_per_user``
            ends. N >= 1: next-item rows instead at up to N distinct cut points of each fine-tuning history (or
            chunk), drawn with ``seed``; ``all``: at every cut point. A cut point's row shows the events before it
            (prompt fitted to ``max_seq_len``, oldest lines removed) and answers the event at it; only training
            events are ever cut, so with ``finetune_on_train`` every target comes before the user's held-out
            events. Rating rows still follow ``examples_per_user``.
        max_seq_len: Token budget of a document (longer histories are chunked) and MDS sample length; the
            pre-training recipe's ``max_seq_len``.
        tokenizer: The tokenizer.
        max_reject_fraction: A source whose rejected rows exceed this share of its rows fails the run.
        max_field_chars: A title or review longer than this is rejected.
        memory_limit: DuckDB's memory limit; beyond it, work spills to disk.
        threads: DuckDB threads (null: all cores).
        max_users: Keep this many users per source, a seeded sample (null keeps all); for quick runs.
        seed: Seeds every hash-based choice (user split, random split, weights, sampling, shuffling, shares).
        workers: Processes of the writing phase (rendering, tokenizing, JSONL and MDS), each over a disjoint share
            of users by their seeded hash; 1 writes in this process. Null: one per core, but no more than one per
            100K kept interactions (a small corpus is written in process). The output is deterministic for a
            given config and worker count; across worker counts the same documents, rows and token counts come
            in another order (``recgpt.data.writing``).
        partition: ``K/N`` writes only the users whose seeded hash falls in partition K of N (1 <= K <= N), a
            partial output marked in its manifest, for one of N independent jobs; ``recgpt.data.merge`` joins
            the N outputs into the dataset one run would write. Null: every user.
    """

    output: str = "artifacts/corpus"
    sources: list[SourceConfig] = field(default_factory=list)
    min_user_interactions: int = 5
    finetune_fraction: float = 0.005
    examples_per_user: int = 1
    next_item_cut_points: int | str | None = None
    max_seq_len: int = 2048
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    max_reject_fraction: float = 0.01
    max_field_chars: int = 20_000
    memory_limit: str = "2GB"
    threads: int | None = None
    max_users: int | None = None
    seed: int = 17
    workers: int | None = None
    partition: str | None = None


def validate(config: PrepareConfig) -> None:
    """Check what the schema cannot: ranges, names, formats, references, input files and the output's place.

    Raises:
        ValueError: Naming the key (``sources[1].paths.meta``, ``max_seq_len``, ...) and what to change.
    """
    _validate_settings(config)
    _validate_sources(config)
    for index, source in enumerate(config.sources):
        _check_input_files(source, f"sources[{index}]")
    check_output_location(config)


def _validate_settings(config: PrepareConfig) -> None:
    """Range checks of the top-level keys (the SQL-bound ones by the engine's own checks)."""
    ranges: list[tuple[str, Any, bool, str]] = [
        ("output", config.output, bool(str(config.output).strip()), "a folder path"),
        ("min_user_interactions", config.min_user_interactions, config.min_user_interactions >= 1, ">= 1"),
        ("finetune_fraction", config.finetune_fraction, 0.0 <= config.finetune_fraction <= 1.0, "in [0, 1]"),
        ("examples_per_user", config.examples_per_user, config.examples_per_user >= 1, ">= 1"),
        ("max_seq_len", config.max_seq_len, config.max_seq_len >= 1, ">= 1 (the recipe's max_seq_len)"),
        ("max_reject_fraction", config.max_reject_fraction, 0.0 <= config.max_reject_fraction <= 1.0, "in [0, 1]"),
        ("max_field_chars", config.max_field_chars, config.max_field_chars >= 1, ">= 1"),
        ("max_users", config.max_users, config.max_users is None or config.max_users >= 1, ">= 1, or null for all"),
        ("workers", config.workers, config.workers is None or _is_count(config.workers), ">= 1, or null for the cores"),
    ]
    vocab = config.tokenizer.train_vocab_size
    minimum = 256 + 2  # the byte alphabet and the EOS and pad tokens
    ranges.append(("tokenizer.train_vocab_size", vocab, vocab is None or vocab >= minimum, f">= {minimum}, or null"))
    cuts = config.next_item_cut_points
    cuts_valid = cuts is None or cuts == "all" or (isinstance(cuts, int) and not isinstance(cuts, bool) and cuts >= 1)
    ranges.append(("next_item_cut_points", cuts, cuts_valid, "a whole number >= 1, 'all', or null (RecGPT's rows)"))
    for key, value, valid, wanted in ranges:
        if not valid:
            raise ValueError(f"{key}: must be {wanted}, got {value!r}")
    name = config.tokenizer.name
    if vocab is None and not name:
        raise ValueError("tokenizer: set train_vocab_size to train one, or name to use an existing tokenizer")
    if vocab is None and str(name).startswith(("/", ".", "~")) and not Path(str(name)).expanduser().is_dir():
        raise ValueError(f"tokenizer.name: {name}: no such folder; give a tokenizer folder or a hub id")
    check_memory_limit(config.memory_limit)
    check_threads(config.threads)
    parse_partition(config.partition)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_PARTITION = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
EVENTS_PER_WORKER = 100_000  # the default ``workers`` starts one process per this many kept interactions


def parse_partition(value: Any) -> tuple[int, int] | None:
    """``"K/N"`` as the 0-based ``(K - 1, N)`` the engine filters by, or None for null.

    Example:
        >>> parse_partition("3/16")
        (2, 16)

    Raises:
        ValueError: Naming the key ``partition`` and the form it takes.
    """
    if value is None:
        return None
    match = _PARTITION.match(str(value))
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise ValueError(
            f"partition: must be K/N with 1 <= K <= N (partition K of N jobs, e.g. 3/16), or null; got {value!r}"
        )
    return int(match.group(1)) - 1, int(match.group(2))


def _validate_sources(config: PrepareConfig) -> None:
    """Names, formats, paths keys, protocols, weights and ``exclude_users_of`` of every source."""
    if not config.sources:
        raise ValueError("sources: list at least one source")
    names = [source.name for source in config.sources]
    if len({name.lower() for name in names}) != len(names):
        raise ValueError(f"sources: names must be unique (ignoring case: they name folders), got {names}")
    for index, source in enumerate(config.sources):
        where = f"sources[{index}]"
        if not _NAME.match(source.name):
            raise ValueError(
                f"{where}.name: {source.name!r} must start with a letter, digit or '_' and use only letters, "
                "digits, '_', '.', '-', at most 100 (it names the folder benchmark/<name>)"
            )
        try:
            found = adapter(source.format)
        except ValueError as error:
            raise ValueError(f"{where}.format: {error}") from error
        try:
            found.check(source.name, source_paths(source), source.options)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from error
        unknown = sorted(set(source.benchmark) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"{where}.benchmark: unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
        if not (source.weight > 0 and math.isfinite(source.weight)):
            raise ValueError(f"{where}.weight: must be > 0 (and finite), got {source.weight}")
        missing = sorted(set(source.exclude_users_of) - set(names))
        if missing:
            raise ValueError(f"{where}.exclude_users_of: unknown source(s) {missing}; known: {names}")
        if source.name in source.exclude_users_of:
            raise ValueError(
                f"{where}.exclude_users_of: names the source itself ('{source.name}'), which would "
                "remove all its users; list only other sources"
            )


def check_paths_shape(raw: dict[str, Any]) -> None:
    """Before typing: a ``paths`` that is not a mapping is named with the roles its format reads."""
    sources = raw.get("sources")
    for index, source in enumerate(sources if isinstance(sources, list) else []):
        if isinstance(source, dict) and "paths" in source and not isinstance(source["paths"], dict | None):
            found = ADAPTERS.get(str(source.get("format")))
            got = "a list" if isinstance(source["paths"], list) else repr(source["paths"])
            roles = (
                f"format {source.get('format')!r} reads {list(found.files)} (optional {list(found.optional_files)})"
                if found
                else f"each format's roles are in recgpt.data.sources.ADAPTERS (formats: {sorted(ADAPTERS)})"
            )
            raise ValueError(
                f"key 'sources[{index}].paths': must be a mapping of role -> file, e.g. "
                f"{{reviews: data/reviews.json.gz, meta: data/meta.json.gz}}, not {got}; {roles}"
            )


def load_prepare_config(path: str | Path | None, overrides: Sequence[str] = ()) -> PrepareConfig:
    """``load_config`` for ``PrepareConfig`` with ``validate``: every config error names the file and the key."""
    return load_config(PrepareConfig, path, overrides, check_raw=check_paths_shape, validate=validate)


def source_paths(source: SourceConfig) -> dict[str, Path]:
    """The source's file paths; an empty ``recbole`` map means the MovieLens-100K inside the recbole wheel."""
    if source.format == "recbole" and not source.paths:
        return atomic_paths(packaged_movielens_100k(), "ml-100k")
    return {role: Path(path).expanduser() for role, path in source.paths.items()}


def _check_input_files(source: SourceConfig, where: str) -> None:
    """Every ``paths`` entry exists and is readable; a file role is a non-empty file, not a directory."""
    for role, path in source_paths(source).items():
        key = f"{where}.paths.{role}"
        if not str(path).strip():
            raise ValueError(f"{key}: empty path; give the {role} file of the {source.format} dump")
        if not path.exists():
            raise ValueError(f"{key}: {path}: no such file or directory")
        if path.is_dir():
            if (source.format, role) in _FOLDER_ROLES:
                continue
            raise ValueError(
                f"{key}: {path} is a directory; give the {role} file (format {source.format} reads a file here)"
            )
        if not os.access(path, os.R_OK):
            raise ValueError(f"{key}: {path}: permission denied; make the file readable")
        if path.stat().st_size == 0:
            raise ValueError(f"{key}: {path} is empty (0 bytes); give the {role} file of the {source.format} dump")


def check_output_location(config: PrepareConfig) -> None:
    """Refuse an ``output`` equal to, inside or above an input (any ``paths`` entry, a local tokenizer folder).

    Replacing the output deletes what is under it, and a staging folder is made beside it.
    """
    output = Path(config.output).expanduser().resolve()
    if output == output.parent:
        raise ValueError(f"output: {output} is the filesystem root; choose a folder for the prepared data")
    inputs = [
        (f"sources[{index}].paths.{role}", path)
        for index, source in enumerate(config.sources)
        for role, path in source_paths(source).items()
    ]
    if config.tokenizer.train_vocab_size is None and config.tokenizer.name:
        local = Path(config.tokenizer.name).expanduser()
        if local.exists():
            inputs.append(("tokenizer.name", local))
    for key, path in inputs:
        resolved = path.resolve()
        relation = (
            "the same path as"
            if resolved == output
            else "a folder above"
            if output in resolved.parents
            else "inside"
            if resolved in output.parents
            else None
        )
        if relation:
            raise ValueError(
                f"output: {output} is {relation} the input {key} ({resolved}); replacing the output would delete "
                "or mix with it, so choose an output folder outside every input"
            )


def _is_prepared_output(folder: Path) -> bool:
    """Whether ``folder`` was written by ``recgpt data prepare``: its manifest.json carries ``written_by``.

    Folders written before the marker existed are recognised by their manifest's own keys.
    """
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict):
        return False
    return manifest.get("written_by") == WRITTEN_BY or {"config", "sources", "leak_check", "content_sha256"} <= set(
        manifest
    )


def refuse_foreign_output(folder: Path) -> None:
    """``atomic_directory``'s check: only a folder this command wrote may be replaced."""
    if not _is_prepared_output(folder):
        raise OutputFolderError(
            f"output {folder}: this folder is not empty and was not written by `recgpt data prepare` (its "
            f'manifest.json has no "written_by": "{WRITTEN_BY}"), so it is left alone; choose a new or empty '
            "folder for `output`, or move that folder away yourself"
        )
