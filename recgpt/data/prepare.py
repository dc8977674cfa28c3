"""``recgpt data prepare``: raw dumps -> RecGPT corpus, instruction data and benchmark splits, out of core.

Stages: each source's adapter streams into Parquet (``ingest``); DuckDB cleans, splits and orders everything
under a memory limit (``engine``); one user at a time is written out (``outputs``), each line tokenized once for
chunking and the MDS shards alike, in ``workers`` processes over disjoint user shares (``writing``); a leak check
proves no held-out event reached training text. ``partition: K/N`` writes one of N partial outputs, which
``recgpt.data.merge`` joins. Output layout (``output``)::

    pretraining/corpus.jsonl           {"text"}: one document per pre-training user or chunk (benchmark training
                                       events included, as RecGPT did), sources mixed by their weights
    pretraining/mds/                   the documents as MDS shards of concatenated tokens (llm-foundry ``text``);
                                       with workers, one sub-folder per share (part-NNN) and a tail, one index
    instruct/train.jsonl               {"prompt","response"}: both tasks, RecGPT's released format, shuffled
    instruct/validation.jsonl          {"prompt","response"}: benchmark validation rows, for eval loss
    benchmark/<source>/items.jsonl     the source's catalogue: item_id, title, attributes, text
    benchmark/<source>/train.jsonl     training events per user (baselines)
    benchmark/<source>/{validation,test}.jsonl   evaluation rows (next_item and rating tasks)
    tokenizer/                         the BPE tokenizer, when the config trains one
    rejects.jsonl                      every skipped row: source, file, line, reason, field, excerpt
    manifest.json                      "written_by": "recgpt data prepare"; rows in/out and rejects per source,
                                       users, items, tokens, config, content hash

The folder is replaced atomically: a run that fails or is killed leaves the previous output (or none). Only a
missing or empty folder, or one whose manifest.json carries ``written_by`` (this command wrote it), is ever
replaced; an output equal to, inside or above an input is refused. A run stopped by too many rejects leaves them
in ``<output>.rejects.jsonl`` beside the output.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recgpt.config import load_config
from recgpt.data import named_tokenizer
from recgpt.data.engine import PROTOCOLS, Engine, LeakageError, SourcePlan, check_memory_limit, check_threads
from recgpt.data.ingest import IngestResult, ingest_source
from recgpt.data.named_tokenizer import TokenizerProcess
from recgpt.data.outputs import OutputSettings
from recgpt.data.render import HISTORY_HEADER, NEXT_ITEM_TASK, RATING_TASK, json_line, render_prompt
from recgpt.data.sources import ADAPTERS, adapter
from recgpt.data.sources.readers import Limits
from recgpt.data.sources.recbole import atomic_paths, packaged_movielens_100k
from recgpt.data.writing import RustTokenizer, WriteResult, WriteTask, write_users, write_with_workers
from recgpt.files import OutputFolderError, atomic_directory, tree_digest, write_text_atomic

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")  # never "." or "..": it names a folder
# ``paths`` roles that may be a folder (every other role is one file): Netflix's ``combined_data_*.txt`` folder.
_FOLDER_ROLES = frozenset({("netflix", "ratings")})
# The marker in manifest.json of an output folder this command wrote; only such a folder is ever replaced.
WRITTEN_BY = "recgpt data prepare"
# A partial output's unfinished last MDS block (int32), which a merge carries into its tail (``recgpt.data.merge``).
LEFTOVER_TOKENS = "leftover_tokens.npy"


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


def _ingest(config: PrepareConfig, work: Path, output: Path) -> dict[str, IngestResult]:
    limits = Limits(max_field_chars=config.max_field_chars)
    results: dict[str, IngestResult] = {}
    for source in config.sources:
        log.info("ingesting %s (%s)", source.name, source.format)
        result = ingest_source(
            source.name,
            source.format,
            source_paths(source),
            dict(source.options),
            work / "sources" / source.name,
            limits,
            config.memory_limit,
        )
        results[source.name] = result
        rejected = sum(result.rejects.values())
        seen = result.items + result.interactions + rejected
        if seen and rejected / seen > config.max_reject_fraction:
            kept = _keep_rejects(results, output)
            raise ValueError(
                f"source '{source.name}': {rejected} of {seen} rows rejected ({dict(result.rejects)}), more than "
                f"max_reject_fraction {config.max_reject_fraction}; each rejected row is in {kept}"
            )
        _check_rows_read(source, result)
    return results


def _keep_rejects(results: dict[str, IngestResult], output: Path) -> Path:
    """Copy the rejects read so far beside the output (``<output>.rejects.jsonl``), outliving the failed run."""
    kept = output.parent / f"{output.name}.rejects.jsonl"
    text = "".join((r.folder / "rejects.jsonl").read_text(encoding="utf-8") for r in results.values())
    write_text_atomic(kept, text)
    return kept


def _check_rows_read(source: SourceConfig, result: IngestResult) -> None:
    """A source whose files gave no interactions or no items (empty, header only, wrong format) stops the run."""
    for what, count in (("interactions", result.interactions), ("catalogue items", result.items)):
        if count == 0:
            files = ", ".join(f"{role}={path}" for role, path in source_paths(source).items())
            rejected = f"; rejected rows: {dict(result.rejects)}" if result.rejects else ""
            raise ValueError(
                f"source '{source.name}': no {what} were read from its files ({files}{rejected}); check that the "
                f"files hold data rows, not only a header, and that format '{source.format}' is theirs"
            )


def _tokenizer(config: PrepareConfig, engine: Engine, root: Path, loading: TokenizerProcess | None) -> Any:
    """The configured tokenizer (``loading``'s, over its Rust backend), or one trained on the corpus lines and the
    fixed template.

    Only training lines and the template shape the vocabulary, so instruction settings never change it.
    """
    if loading is not None:  # ``validate`` made sure that ``name`` is set
        loaded = loading.result()
        if loaded.backend_json is not None:
            return RustTokenizer(loaded.backend_json, loaded.eos_token_id, loaded.size)
    from transformers import AutoTokenizer

    if config.tokenizer.train_vocab_size is None:  # a tokenizer without a Rust backend
        return AutoTokenizer.from_pretrained(str(config.tokenizer.name))
    from recgpt.data.tokenizer import train_bpe_tokenizer

    log.info("training a %d-token BPE tokenizer on the corpus lines", config.tokenizer.train_vocab_size)
    template = [render_prompt(f"{NEXT_ITEM_TASK}\n{RATING_TASK}\n{HISTORY_HEADER}")] * 100
    train_bpe_tokenizer(
        iter([*template, *engine.training_lines()]),
        config.tokenizer.train_vocab_size,
        root / "tokenizer",
        config.max_seq_len,
    )
    return AutoTokenizer.from_pretrained(str(root / "tokenizer"))


def shuffle_lines(engine: Engine, sources: Sequence[Path], target: Path, seed: int) -> int:
    """Write the lines of ``sources`` to ``target`` in a seeded order (an MD5 of each line), sorted out of core.

    The order depends only on the set of lines, so the shuffled rows of partitions merge into exactly the file
    one run writes. JSON lines hold no raw control characters, so the unit separator (0x1f) never splits one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    files = [str(path) for path in sources if path.exists() and path.stat().st_size]
    count = 0
    with target.open("w", encoding="utf-8") as handle:
        if files:
            reader = engine.stream(
                "SELECT line FROM read_csv(?, columns={'line': 'VARCHAR'}, delim='\x1f', header=false, "
                "quote='', escape='', auto_detect=false) ORDER BY md5(? || line), line",
                [files, f"{seed}|"],
            )
            for batch in reader:
                for line in batch.column(0).to_pylist():
                    handle.write(line + "\n")
                    count += 1
    return count


def prepare(config: PrepareConfig) -> Path:
    """Run the whole preparation and write every output atomically; returns the manifest's path.

    ``output`` is replaced only when it is missing, empty or written by this command before (its manifest.json
    says ``"written_by": "recgpt data prepare"``); a run that fails keeps the previous output.

    Raises:
        ValueError: For a config, input file or result that cannot make a usable dataset, naming the key,
            source or file and what to change (``OutputFolderError`` for an output that may not be replaced).
    """
    validate(config)
    output = Path(config.output).expanduser().resolve()
    with atomic_directory(output, check_replace=refuse_foreign_output) as root:
        work = root / ".work"
        named = config.tokenizer.train_vocab_size is None
        loading = named_tokenizer.start(str(config.tokenizer.name), work / "tokenizer") if named else None
        try:
            manifest = _ingest_and_write(config, root, output, loading)
        finally:
            if loading is not None:
                loading.stop()
        shutil.rmtree(work)
        manifest["content_sha256"] = tree_digest(root)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (content sha256 %s)", output, manifest["content_sha256"][:16])
    return output / "manifest.json"


def _ingest_and_write(
    config: PrepareConfig, root: Path, output: Path, loading: TokenizerProcess | None
) -> dict[str, Any]:
    """Ingest every source, run the engine and write the outputs under ``root``; the manifest so far."""
    work = root / ".work"
    ingested = _ingest(config, work, output)
    plans = [
        SourcePlan(
            s.name, ingested[s.name].folder, ingested[s.name].domain, tuple(s.benchmark), tuple(s.exclude_users_of)
        )
        for s in config.sources
    ]
    engine = Engine(work / "db", config.memory_limit, config.threads)
    try:
        engine.load(plans, config.min_user_interactions, config.finetune_fraction, config.seed, config.max_users)
        _check_users(config, engine)
        return {"written_by": WRITTEN_BY, **_write(config, engine, root, ingested, loading)}
    finally:
        engine.close()


def _check_users(config: PrepareConfig, engine: Engine) -> None:
    """A source left with no users after cleaning stops the run, with where its interactions went."""
    for source in config.sources:
        counts = engine.counts[source.name]
        if counts.get("users", 0) == 0:
            dropped = {k: v for k, v in counts.items() if (k.endswith("_interaction") or k.endswith("_item")) and v}
            raise ValueError(
                f"source '{source.name}': no user is left after cleaning ({counts.get('interactions_in', 0)} "
                f"interactions read; dropped: {dropped}); lower min_user_interactions "
                f"(now {config.min_user_interactions}), check exclude_users_of {source.exclude_users_of} and that "
                "the interactions' item ids match the catalogue's"
            )


def check_written(config: PrepareConfig, root: Path, counts: dict[str, Any]) -> None:
    """An empty corpus, or a benchmark source without test rows, stops the run naming the source and the fix."""
    for source in config.sources:
        test = root / "benchmark" / source.name / "test.jsonl"
        if source.benchmark and not (test.is_file() and test.stat().st_size):
            too_long = counts[source.name].get("benchmark_rows_too_long", 0)
            raise ValueError(
                f"source '{source.name}': no benchmark test row was written ({too_long} rows did not fit "
                f"max_seq_len {config.max_seq_len}); raise max_seq_len, or min_user_interactions (now "
                f"{config.min_user_interactions}) so that every user has a history before the held-out event"
            )
    total = {key: sum(counts[s.name].get(key, 0) for s in config.sources) for key in ("documents", "chunks")}
    if total["documents"] == 0:
        given = {
            s.name: {"users_pretrain": counts[s.name].get("users_pretrain", 0), "weight": s.weight}
            for s in config.sources
        }
        raise ValueError(
            f"the pre-training corpus is empty: no source gave a document ({given}); lower finetune_fraction (now "
            f"{config.finetune_fraction}; 1 sends every user of a corpus source to fine-tuning) or raise the weights"
        )
    over = sum(counts[s.name].get("lines_over_budget", 0) for s in config.sources)
    if over >= total["chunks"]:
        raise ValueError(
            f"max_seq_len {config.max_seq_len}: every pre-training document is a single item line longer than that "
            f"({over} of {total['chunks']}), so the corpus holds no history; raise max_seq_len"
        )


def _write(
    config: PrepareConfig,
    engine: Engine,
    root: Path,
    ingested: dict[str, IngestResult],
    loading: TokenizerProcess | None,
) -> dict[str, Any]:
    """The writing phase (in ``workers`` processes), the leak check, the shuffle, catalogues and rejects."""
    tokenizer = _tokenizer(config, engine, root, loading)
    settings = OutputSettings(
        examples_per_user=config.examples_per_user,
        max_seq_len=config.max_seq_len,
        weights={s.name: s.weight for s in config.sources},
        finetune_on_benchmark=frozenset(s.name for s in config.sources if s.finetune_on_train and s.benchmark),
        seed=config.seed,
        next_item_cut_points=config.next_item_cut_points,
    )
    trained = config.tokenizer.train_vocab_size is not None
    task = WriteTask(
        root,
        root / "pretraining" / "mds",
        {name: result.domain for name, result in ingested.items()},
        settings,
        str(root / "tokenizer") if trained else str(config.tokenizer.name),
        config.max_seq_len,
        log_level=logging.getLogger().getEffectiveLevel(),
        tokenizer_json=backend.to_str() if (backend := getattr(tokenizer, "backend_tokenizer", None)) else None,
        eos_token_id=tokenizer.eos_token_id,
    )
    partition, workers = parse_partition(config.partition), _worker_count(config, engine)
    (root / "pretraining").mkdir(parents=True, exist_ok=True)
    (root / "pretraining" / "corpus.jsonl").touch()
    if workers == 1:
        pretraining, histories = engine.pretraining(partition=partition), engine.histories(partition=partition)
        result, keys = write_users(task, tokenizer, pretraining, histories), [root / "trained_keys.parquet"]
    else:
        result, keys = write_with_workers(
            engine, task, root / ".work" / "shares", workers, partition, tokenizer.eos_token_id
        )
    leaked = engine.leaked(keys)
    if leaked:
        raise LeakageError(f"held-out events reached training text (source, user, order, split): {leaked}")
    checked = engine.scalar("SELECT count(*) FROM read_parquet(?)", [[str(path) for path in keys]])
    for path in keys:
        path.unlink()
    if partition is None:
        check_written(config, root, result.counts)
    else:
        log.info(
            "partition %s: a partial output; the empty-corpus checks run when the partitions are merged",
            config.partition,
        )
    unshuffled = root / "instruct" / "train.unshuffled.jsonl"
    rows = shuffle_lines(engine, [unshuffled], root / "instruct" / "train.jsonl", config.seed)
    unshuffled.unlink(missing_ok=True)
    _write_catalogues_and_rejects(config, engine, root, ingested)
    manifest: dict[str, Any] = {
        "config": dataclasses.asdict(config),
        "sources": {
            name: {
                "domain": dataclasses.asdict(ingest.domain),
                "items_read": ingest.items,
                "interactions_read": ingest.interactions,
                "rejects": dict(sorted(ingest.rejects.items())),
                **engine.counts[name],
                **dict(sorted(result.counts.get(name, {}).items())),
            }
            for name, ingest in ingested.items()
        },
        "leak_check": {"training_events_checked": checked, "held_out_found": 0, "passed": True},
        "instruct": {"train": rows},
        "pretraining": result.mds,
        "tokenizer_vocab_size": len(tokenizer),
        "workers": workers,
    }
    if partition is not None:
        manifest["partition"] = partial_marker(partition, result, root, tokenizer.eos_token_id)
    return manifest


def _worker_count(config: PrepareConfig, engine: Engine) -> int:
    """``workers``, or for null one per core but at most one per ``EVENTS_PER_WORKER`` kept interactions."""
    if config.workers is not None:
        return config.workers
    events = sum(counts.get("interactions_out", 0) for counts in engine.counts.values())
    share = parse_partition(config.partition)
    events //= share[1] if share else 1
    return max(1, min(os.cpu_count() or 1, math.ceil(events / EVENTS_PER_WORKER)))


def partial_marker(partition: tuple[int, int], result: WriteResult, root: Path, eos_token_id: int) -> dict[str, Any]:
    """The manifest's ``partition`` entry of a partial output, and its unfinished MDS block saved for a merge.

    ``written`` holds the writers' own counts per source (summed by a merge; the other counts are global).
    """
    np.save(root / "pretraining" / LEFTOVER_TOKENS, result.rest.astype(np.int32), allow_pickle=False)
    return {
        "indices": [partition[0] + 1],
        "count": partition[1],
        "written": {name: dict(sorted(counts.items())) for name, counts in result.counts.items()},
        "leftover_tokens": len(result.rest),
        "eos_token_id": eos_token_id,
    }


def _write_catalogues_and_rejects(
    config: PrepareConfig, engine: Engine, root: Path, ingested: dict[str, IngestResult]
) -> None:
    """Each benchmark source's catalogue (``items.jsonl``) and every source's rejected rows (``rejects.jsonl``)."""
    for source in config.sources:
        if source.benchmark:
            path = root / "benchmark" / source.name / "items.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as handle:
                for row in engine.item_rows(source.name):
                    handle.write(json_line(row))
    with (root / "rejects.jsonl").open("w", encoding="utf-8") as handle:
        for result in ingested.values():
            handle.write((result.folder / "rejects.jsonl").read_text(encoding="utf-8"))
