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
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recgpt.data import named_tokenizer
from recgpt.data.engine import Engine, LeakageError, SourcePlan
from recgpt.data.ingest import IngestResult, ingest_source
from recgpt.data.named_tokenizer import TokenizerProcess
from recgpt.data.outputs import OutputSettings
from recgpt.data.prepare_config import (
    EVENTS_PER_WORKER,
    WRITTEN_BY,
    PrepareConfig,
    SourceConfig,
    parse_partition,
    refuse_foreign_output,
    source_paths,
    validate,
)
from recgpt.data.render import HISTORY_HEADER, NEXT_ITEM_TASK, RATING_TASK, json_line, render_prompt
from recgpt.data.sources.readers import Limits
from recgpt.data.stage_clock import StageClock
from recgpt.data.writing import RustTokenizer, WriteResult, WriteTask, write_users, write_with_workers
from recgpt.files import atomic_directory, tree_digest, write_text_atomic

log = logging.getLogger(__name__)

# A partial output's unfinished last MDS block (int32), which a merge carries into its tail (``recgpt.data.merge``).
LEFTOVER_TOKENS = "leftover_tokens.npy"


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
    output, clock = Path(config.output).expanduser().resolve(), StageClock()
    with atomic_directory(output, check_replace=refuse_foreign_output) as root:
        work = root / ".work"
        named = config.tokenizer.train_vocab_size is None
        loading = named_tokenizer.start(str(config.tokenizer.name), work / "tokenizer") if named else None
        try:
            manifest = _ingest_and_write(config, root, work, output, loading, clock)
        finally:
            if loading is not None:
                loading.stop()
        with clock("output hash"):
            shutil.rmtree(work)
            manifest["content_sha256"] = tree_digest(root)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (content sha256 %s)", output, manifest["content_sha256"][:16])
    log.info("%s", clock.summary())
    return output / "manifest.json"


def _ingest_and_write(
    config: PrepareConfig,
    root: Path,
    work: Path,
    output: Path,
    loading: TokenizerProcess | None,
    clock: StageClock,
) -> dict[str, Any]:
    """Ingest every source, run the engine (in ``work``) and write the outputs under ``root``; the manifest so far."""
    with clock("ingest"):
        ingested = _ingest(config, work, output)
    plans = [
        SourcePlan(
            s.name, ingested[s.name].folder, ingested[s.name].domain, tuple(s.benchmark), tuple(s.exclude_users_of)
        )
        for s in config.sources
    ]
    engine = Engine(work / "db", config.memory_limit, config.threads)
    try:
        with clock("engine"):
            engine.load(plans, config.min_user_interactions, config.finetune_fraction, config.seed, config.max_users)
        _check_users(config, engine)
        return {"written_by": WRITTEN_BY, **_write(config, engine, root, ingested, loading, clock)}
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
    clock: StageClock,
) -> dict[str, Any]:
    """The writing phase (in ``workers`` processes), the leak check, the shuffle, catalogues and rejects."""
    with clock("tokenizer"):
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
        with clock("writing"):
            result, keys = write_users(task, tokenizer, pretraining, histories), [root / "trained_keys.parquet"]
    else:
        result, keys = write_with_workers(
            engine, task, root / ".work" / "shares", workers, partition, tokenizer.eos_token_id, clock
        )
    with clock("leak check"):
        leaked = engine.leaked(keys)
        checked = engine.scalar("SELECT count(*) FROM read_parquet(?)", [[str(path) for path in keys]])
    if leaked:
        raise LeakageError(f"held-out events reached training text (source, user, order, split): {leaked}")
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
    with clock("shuffle"):
        rows = shuffle_lines(engine, [unshuffled], root / "instruct" / "train.jsonl", config.seed)
    unshuffled.unlink(missing_ok=True)
    with clock("catalogues"):
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
