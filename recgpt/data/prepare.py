"""``recgpt data prepare``: raw dumps -> RecGPT corpus, instruction data and benchmark splits, out of core.

Stages: each source's adapter streams into Parquet (``ingest``); DuckDB cleans, splits and orders everything
under a memory limit (``engine``); one user at a time is written out (``outputs``); a leak check proves no
held-out event reached training text; the corpus is tokenized into MDS shards. Output layout (``output``)::

    pretraining/corpus.jsonl           {"text"}: one document per pre-training user or chunk (benchmark training
                                       events included, as RecGPT did), sources mixed by their weights
    pretraining/mds/                   the documents as MDS shards of concatenated tokens (llm-foundry ``text``)
    instruct/train.jsonl               {"prompt","response"}: both tasks, RecGPT's released format, shuffled
    instruct/validation.jsonl          {"prompt","response"}: benchmark validation rows, for eval loss
    benchmark/<source>/items.jsonl     the source's catalogue: item_id, title, attributes, text
    benchmark/<source>/train.jsonl     training events per user (baselines)
    benchmark/<source>/{validation,test}.jsonl   evaluation rows (next_item and rating tasks)
    tokenizer/                         the BPE tokenizer, when the config trains one
    rejects.jsonl                      every skipped row: source, file, line, reason, field, excerpt
    manifest.json                      rows in/out and rejects per source, users, items, tokens, config, content hash

The folder is replaced atomically: a run that fails or is killed leaves the previous output (or none).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recgpt.data.corpus import write_mds_shards
from recgpt.data.engine import PROTOCOLS, Engine, LeakageError, SourcePlan
from recgpt.data.ingest import IngestResult, ingest_source
from recgpt.data.outputs import CorpusWriter, OutputSettings
from recgpt.data.render import HISTORY_HEADER, NEXT_ITEM_TASK, RATING_TASK, render_prompt
from recgpt.data.sources.readers import Limits
from recgpt.data.sources.recbole import atomic_paths, packaged_movielens_100k
from recgpt.encoding import fit_prompt_text
from recgpt.files import atomic_directory, tree_digest

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


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
        max_seq_len: Token budget of a document (longer histories are chunked) and MDS sample length; the
            pre-training recipe's ``max_seq_len``.
        tokenizer: The tokenizer.
        max_reject_fraction: A source whose rejected rows exceed this share of its rows fails the run.
        max_field_chars: A title or review longer than this is rejected.
        memory_limit: DuckDB's memory limit; beyond it, work spills to disk.
        threads: DuckDB threads (null: all cores).
        max_users: Keep this many users per source, a seeded sample (null keeps all); for quick runs.
        seed: Seeds every hash-based choice (user split, random split, weights, sampling, shuffling).
    """

    output: str = "artifacts/corpus"
    sources: list[SourceConfig] = field(default_factory=list)
    min_user_interactions: int = 5
    finetune_fraction: float = 0.005
    examples_per_user: int = 1
    max_seq_len: int = 2048
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    max_reject_fraction: float = 0.01
    max_field_chars: int = 20_000
    memory_limit: str = "2GB"
    threads: int | None = None
    max_users: int | None = None
    seed: int = 17


def validate(config: PrepareConfig) -> None:
    """Check what the schema cannot: names, protocols, references. Errors name the key."""
    if not config.sources:
        raise ValueError("sources: list at least one source")
    names = [source.name for source in config.sources]
    for index, source in enumerate(config.sources):
        where = f"sources[{index}]"
        if not _NAME.match(source.name):
            raise ValueError(f"{where}.name: {source.name!r} must use letters, digits, '_', '.', '-'")
        unknown = sorted(set(source.benchmark) - set(PROTOCOLS))
        if unknown:
            raise ValueError(f"{where}.benchmark: unknown protocol(s) {unknown}; choose from {list(PROTOCOLS)}")
        if source.weight < 0:
            raise ValueError(f"{where}.weight: must be >= 0, got {source.weight}")
        missing = sorted(set(source.exclude_users_of) - set(names))
        if missing:
            raise ValueError(f"{where}.exclude_users_of: unknown source(s) {missing}")
    if len(set(names)) != len(names):
        raise ValueError(f"sources: names must be unique, got {names}")
    if not 0.0 <= config.finetune_fraction <= 1.0:
        raise ValueError(f"finetune_fraction: must be in [0, 1], got {config.finetune_fraction}")


def source_paths(source: SourceConfig) -> dict[str, Path]:
    """The source's file paths; an empty ``recbole`` map means the MovieLens-100K inside the recbole wheel."""
    if source.format == "recbole" and not source.paths:
        return atomic_paths(packaged_movielens_100k(), "ml-100k")
    return {role: Path(path) for role, path in source.paths.items()}


def _ingest(config: PrepareConfig, work: Path) -> dict[str, IngestResult]:
    limits = Limits(max_field_chars=config.max_field_chars)
    results = {}
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
        rejected = sum(result.rejects.values())
        seen = result.items + result.interactions + rejected
        if seen == 0:
            raise ValueError(
                f"source '{source.name}': its files hold no rows ({sorted(source_paths(source).values())})"
            )
        if rejected / seen > config.max_reject_fraction:
            raise ValueError(
                f"source '{source.name}': {rejected} of {seen} rows rejected ({dict(result.rejects)}), more than "
                f"max_reject_fraction {config.max_reject_fraction}; see {result.folder / 'rejects.jsonl'}"
            )
        results[source.name] = result
    return results


def _tokenizer(config: PrepareConfig, engine: Engine, root: Path) -> Any:
    """The configured tokenizer, or one trained on the corpus lines and the fixed template.

    Only training lines and the template shape the vocabulary, so instruction settings never change it.
    """
    from transformers import AutoTokenizer

    if config.tokenizer.train_vocab_size is None:
        if config.tokenizer.name is None:
            raise ValueError("tokenizer: set train_vocab_size to train one, or name to use an existing tokenizer")
        return AutoTokenizer.from_pretrained(config.tokenizer.name)
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


def token_counter(tokenizer: Any, cache_size: int = 1_000_000) -> Any:
    """``count(lines) -> token counts``, batched on the Rust tokenizer where there is one, with a bounded cache.

    Histories repeat lines (the same movie rated the same way by many users), so most counts are cache hits.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    cache: dict[str, int] = {}

    def count(lines: list[str]) -> list[int]:
        missing = [line for line in dict.fromkeys(lines) if line not in cache]
        if missing:
            if len(cache) + len(missing) > cache_size:
                cache.clear()
            if backend is not None:
                lengths = [len(encoding.ids) for encoding in backend.encode_batch(missing, add_special_tokens=False)]
            else:
                lengths = [len(ids) for ids in tokenizer(missing, add_special_tokens=False)["input_ids"]]
            cache.update(zip(missing, lengths, strict=True))
        return [cache[line] for line in lines]

    return count


def _shuffle_lines(engine: Engine, source: Path, target: Path, seed: int) -> int:
    """Write ``source``'s lines to ``target`` in a seeded order (an MD5 of each line), sorted out of core.

    JSON lines hold no raw control characters, so the unit separator (0x1f) never splits one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with target.open("w", encoding="utf-8") as handle:
        if source.exists() and source.stat().st_size:
            reader = engine.stream(
                f"SELECT line FROM read_csv('{source}', columns={{'line': 'VARCHAR'}}, delim='\x1f', header=false, "
                f"quote='', escape='', auto_detect=false) ORDER BY md5('{seed}|' || line), line"
            )
            for batch in reader:
                for line in batch.column(0).to_pylist():
                    handle.write(line + "\n")
                    count += 1
    source.unlink(missing_ok=True)
    return count


def prepare(config: PrepareConfig) -> Path:
    """Run the whole preparation and write every output atomically; returns the manifest's path."""
    validate(config)
    output = Path(config.output)
    with atomic_directory(output) as root:
        work = root / ".work"
        ingested = _ingest(config, work)
        plans = [
            SourcePlan(
                s.name, ingested[s.name].folder, ingested[s.name].domain, tuple(s.benchmark), tuple(s.exclude_users_of)
            )
            for s in config.sources
        ]
        engine = Engine(work / "db", config.memory_limit, config.threads)
        try:
            engine.load(plans, config.min_user_interactions, config.finetune_fraction, config.seed, config.max_users)
            manifest = _write(config, engine, root, ingested)
        finally:
            engine.close()
        shutil.rmtree(work)
        manifest["content_sha256"] = tree_digest(root)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (content sha256 %s)", output, manifest["content_sha256"][:16])
    return output / "manifest.json"


def _write(config: PrepareConfig, engine: Engine, root: Path, ingested: dict[str, IngestResult]) -> dict[str, Any]:
    tokenizer = _tokenizer(config, engine, root)

    count_tokens = token_counter(tokenizer)

    settings = OutputSettings(
        examples_per_user=config.examples_per_user,
        max_seq_len=config.max_seq_len,
        weights={s.name: s.weight for s in config.sources},
        finetune_on_benchmark=frozenset(s.name for s in config.sources if s.finetune_on_train and s.benchmark),
        seed=config.seed,
    )

    def fit(prompt: str) -> str:
        return fit_prompt_text(tokenizer, prompt, config.max_seq_len)[1]

    domains = {name: result.domain for name, result in ingested.items()}
    writer = CorpusWriter(root, domains, settings, count_tokens, fit)
    try:
        for source, user, lines, orders in engine.pretraining():
            writer.write_pretraining_user(source, user, lines, orders)
        for history in engine.histories():
            writer.write(history)
    finally:
        writer.close()
    leaked = engine.leaked(root / "trained_keys.parquet")
    if leaked:
        raise LeakageError(f"held-out events reached training text (source, user, order, split): {leaked}")
    checked = engine.scalar(f"SELECT count(*) FROM read_parquet('{root / 'trained_keys.parquet'}')")
    (root / "trained_keys.parquet").unlink()
    rows = _shuffle_lines(
        engine, root / "instruct" / "train.unshuffled.jsonl", root / "instruct" / "train.jsonl", config.seed
    )
    for source in config.sources:
        if source.benchmark:
            path = root / "benchmark" / source.name / "items.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("w", encoding="utf-8") as handle:
                for row in engine.item_rows(source.name):
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    with (root / "rejects.jsonl").open("w", encoding="utf-8") as handle:
        for result in ingested.values():
            handle.write((result.folder / "rejects.jsonl").read_text(encoding="utf-8"))
    log.info("writing MDS shards of %d-token samples", config.max_seq_len)
    corpus = root / "pretraining" / "corpus.jsonl"
    corpus.parent.mkdir(parents=True, exist_ok=True)
    corpus.touch()
    with corpus.open(encoding="utf-8") as handle:
        documents = (json.loads(line)["text"] for line in handle)
        mds = write_mds_shards(documents, tokenizer, root / "pretraining" / "mds", config.max_seq_len)
    return {
        "config": dataclasses.asdict(config),
        "sources": {
            name: {
                "domain": dataclasses.asdict(result.domain),
                "items_read": result.items,
                "interactions_read": result.interactions,
                "rejects": dict(sorted(result.rejects.items())),
                **engine.counts[name],
                **dict(sorted(writer.counts[name].items())),
            }
            for name, result in ingested.items()
        },
        "leak_check": {"training_events_checked": checked, "held_out_found": 0, "passed": True},
        "instruct": {"train": rows},
        "pretraining": mds,
        "tokenizer_vocab_size": len(tokenizer),
    }
