"""``recgpt data prepare``: raw logs -> cleaned histories -> leave-one-out split -> corpus, instructions, benchmark.

Output layout (under ``output``)::

    items.jsonl                   the catalogue: item_id, title, attributes, text (its identifying line)
    pretraining/corpus.jsonl      {"text"}: one document per user, training events only
    pretraining/mds/              the same documents as MDS shards of concatenated tokens (``text`` loader)
    instruct/train.jsonl          {"prompt","response"}: both tasks, RecGPT's released format
    instruct/validation.jsonl     {"prompt","response"}: the validation events, for eval loss
    benchmark/train.jsonl         {"user_id","item_ids","ratings"}: training events (popularity, global mean)
    benchmark/{validation,test}.jsonl   evaluation rows: task, prompt, response, target, history item ids
    tokenizer/                    the BPE tokenizer, when the config trains one
    manifest.json                 counts, rejects by reason, the config and a content hash
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recgpt.data.clean import clean
from recgpt.data.corpus import write_jsonl, write_mds_shards
from recgpt.data.records import MOVIELENS, Domain, Interaction, Item, SourceData
from recgpt.data.render import (
    NEXT_ITEM_TASK,
    RATING_TASK,
    next_item_example,
    rating_example,
    render_document,
    render_event,
    render_item,
    render_prompt,
)
from recgpt.data.sources.recbole import load_recbole, packaged_movielens_100k
from recgpt.data.splits import LeaveOneOut, build_histories, check_no_leakage, leave_one_out
from recgpt.files import atomic_directory, tree_digest

log = logging.getLogger(__name__)

DOMAINS = {MOVIELENS.name: MOVIELENS}


@dataclass
class SourceConfig:
    """Where the interaction logs come from.

    Attributes:
        format: The adapter; ``recbole`` reads RecBole atomic files.
        path: The folder of the files; null reads the MovieLens-100K that ships inside the recbole wheel.
        dataset: The atomic files' stem.
        domain: The wording of histories (``movielens``).
    """

    format: str = "recbole"
    path: str | None = None
    dataset: str = "ml-100k"
    domain: str = "movielens"


@dataclass
class TokenizerConfig:
    """The tokenizer the MDS shards are written with (it must be the recipe's).

    Attributes:
        train_vocab_size: Train a byte-level BPE tokenizer of this size on the corpus and save it under
            ``output/tokenizer``; null to use ``name`` instead.
        name: An existing tokenizer (folder or hub id) when ``train_vocab_size`` is null.
    """

    train_vocab_size: int | None = 4096
    name: str | None = None


@dataclass
class PrepareConfig:
    """``recgpt data prepare`` settings (see configs/data/*.yaml).

    Attributes:
        output: The output folder, replaced atomically.
        source: The interaction logs.
        min_user_interactions: Users with fewer events are dropped (RecGPT: 5).
        max_users: Keep this many users, chosen by a seeded hash of their ids (null keeps all); for quick runs.
        examples_per_user: Instruction examples per task per user, from the most recent training events back
            (RecGPT: 1).
        max_seq_len: Tokens per MDS sample; the pre-training recipe's ``max_seq_len``.
        tokenizer: The tokenizer for the MDS shards.
        seed: Seeds user sampling and the shuffling of instruction rows.
    """

    output: str = "artifacts/demo/data"
    source: SourceConfig = field(default_factory=SourceConfig)
    min_user_interactions: int = 5
    max_users: int | None = None
    examples_per_user: int = 1
    max_seq_len: int = 512
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    seed: int = 17


def load_source(config: SourceConfig) -> SourceData:
    """Read the configured source into canonical records."""
    if config.domain not in DOMAINS:
        raise ValueError(f"source.domain: unknown domain {config.domain!r}; choose one of {sorted(DOMAINS)}")
    if config.format != "recbole":
        raise ValueError(f"source.format: unknown format {config.format!r}; choose 'recbole'")
    folder = Path(config.path) if config.path is not None else packaged_movielens_100k()
    if not (folder / f"{config.dataset}.inter").is_file():
        raise FileNotFoundError(f"source.path: {folder / (config.dataset + '.inter')} does not exist")
    return load_recbole(folder, config.dataset, DOMAINS[config.domain])


def select_users(
    histories: dict[str, list[Interaction]], max_users: int | None, seed: int
) -> dict[str, list[Interaction]]:
    """Keep ``max_users`` users chosen by a seeded hash of their ids (all users when None), in original order."""
    if max_users is None or max_users >= len(histories):
        return histories
    ranked = sorted(histories, key=lambda user: hashlib.sha256(f"{seed}:{user}".encode()).hexdigest())
    chosen = set(ranked[:max_users])
    return {user: events for user, events in histories.items() if user in chosen}


def training_examples(
    domain: Domain, items: Mapping[str, Item], history: Sequence[Interaction], per_user: int
) -> Iterator[tuple[dict[str, str], Sequence[Interaction]]]:
    """Instruction rows from one user's training events, with the events each row was rendered from.

    For each end ``e`` (the whole history, then one event shorter, ``per_user`` times), as in RecGPT: the
    next-item row shows events ``1..e-1`` and answers event ``e``; the rating row shows events ``1..e-1`` with
    the rating of event ``e-1`` removed and answers it.
    """
    for end in range(len(history), max(len(history) - per_user, 1), -1):
        shown = history[: end - 1]
        yield (
            next_item_example(domain, [items[e.item_id] for e in shown], items[history[end - 1].item_id]),
            history[:end],
        )
        if shown[-1].rating is not None:
            yield rating_example(domain, [(items[e.item_id], e) for e in shown]), shown


def benchmark_rows(
    domain: Domain, items: Mapping[str, Item], split: LeaveOneOut, name: str
) -> Iterator[dict[str, Any]]:
    """Evaluation rows of one held-out split: a next-item row and (if rated) a rating row per user."""
    for user in split.train:
        history, target = split.history_before(user, name), split.target(user, name)
        example = next_item_example(domain, [items[e.item_id] for e in history], items[target.item_id])
        yield {
            "user_id": user,
            "task": "next_item",
            **example,
            "target_item_id": target.item_id,
            "history_item_ids": [e.item_id for e in history],
        }
        if target.rating is not None:
            example = rating_example(domain, [(items[e.item_id], e) for e in [*history, target]])
            yield {
                "user_id": user,
                "task": "rating",
                **example,
                "target_item_id": target.item_id,
                "target_rating": target.rating,
            }


def prepare(config: PrepareConfig) -> Path:
    """Run the whole preparation and write every output atomically; returns the manifest's path."""
    output = Path(config.output)
    log.info("reading source %s (%s)", config.source.dataset, config.source.path or "packaged with recbole")
    data = clean(load_source(config.source), config.min_user_interactions)
    histories = select_users(build_histories(data.interactions), config.max_users, config.seed)
    split = leave_one_out(histories)
    domain, items = data.domain, data.items
    log.info(
        "%d users, %d items, %d interactions after cleaning",
        len(histories),
        len(items),
        sum(len(h) for h in histories.values()),
    )

    documents = [
        (render_document(domain, [render_event(items[e.item_id], e, domain.rating_scale) for e in events]), events)
        for events in split.train.values()
    ]
    instructions = [
        pair
        for events in split.train.values()
        for pair in training_examples(domain, items, events, config.examples_per_user)
    ]
    checked = check_no_leakage([events for _, events in documents] + [events for _, events in instructions], split)
    log.info("leak check passed: %d training texts hold no validation or test interaction", checked)
    train_rows = [row for row, _ in instructions]
    random.Random(config.seed).shuffle(train_rows)

    with atomic_directory(output) as staging:
        counts = _write_outputs(staging, config, domain, items, split, [d for d, _ in documents], train_rows)
        manifest = {
            "config": dataclasses.asdict(config),
            "domain": dataclasses.asdict(domain),
            "source": {"rows_read": data.rows_read, "rejects": dict(sorted(data.rejects.items()))},
            "users": len(histories),
            "items": len(items),
            "interactions": sum(len(h) for h in histories.values()),
            "leak_check": {"training_texts": checked, "passed": True},
            **counts,
            "content_sha256": tree_digest(staging),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %s (content sha256 %s)", output, manifest["content_sha256"][:16])
    return output / "manifest.json"


def _write_outputs(
    root: Path,
    config: PrepareConfig,
    domain: Domain,
    items: Mapping[str, Item],
    split: LeaveOneOut,
    documents: list[str],
    train_rows: list[dict[str, str]],
) -> dict[str, Any]:
    counts: dict[str, Any] = {}
    counts["catalogue_rows"] = write_jsonl(
        (
            {"item_id": i.item_id, "title": i.title, "attributes": dict(i.attributes), "text": render_item(i, domain)}
            for i in items.values()
        ),
        root / "items.jsonl",
    )
    write_jsonl(({"text": text} for text in documents), root / "pretraining" / "corpus.jsonl")
    counts["instruct"] = {"train": write_jsonl(train_rows, root / "instruct" / "train.jsonl")}
    validation = list(benchmark_rows(domain, items, split, "validation"))
    counts["instruct"]["validation"] = write_jsonl(
        ({"prompt": r["prompt"], "response": r["response"]} for r in validation), root / "instruct" / "validation.jsonl"
    )
    counts["benchmark"] = {
        "train": write_jsonl(
            (
                {"user_id": u, "item_ids": [e.item_id for e in events], "ratings": [e.rating for e in events]}
                for u, events in split.train.items()
            ),
            root / "benchmark" / "train.jsonl",
        ),
        "validation": write_jsonl(validation, root / "benchmark" / "validation.jsonl"),
        "test": write_jsonl(benchmark_rows(domain, items, split, "test"), root / "benchmark" / "test.jsonl"),
    }
    tokenizer = _tokenizer(root, config, documents)
    log.info("writing MDS shards of %d-token samples", config.max_seq_len)
    counts["pretraining"] = write_mds_shards(documents, tokenizer, root / "pretraining" / "mds", config.max_seq_len)
    counts["tokenizer_vocab_size"] = len(tokenizer)
    return counts


def _tokenizer(root: Path, config: PrepareConfig, documents: list[str]) -> Any:
    """The configured tokenizer, or one trained on the pre-training documents and the prompt template.

    Only the corpus and the fixed template shape the vocabulary, so instruction settings (e.g.
    ``examples_per_user``) never change it and a pre-trained checkpoint stays usable across them.
    """
    from transformers import AutoTokenizer

    if config.tokenizer.train_vocab_size is None:
        if config.tokenizer.name is None:
            raise ValueError("tokenizer: set train_vocab_size to train one, or name to use an existing tokenizer")
        return AutoTokenizer.from_pretrained(config.tokenizer.name)
    from recgpt.data.tokenizer import train_bpe_tokenizer

    log.info("training a %d-token BPE tokenizer on the corpus", config.tokenizer.train_vocab_size)
    template = render_prompt(f"{NEXT_ITEM_TASK}\n{RATING_TASK}")
    texts = [*documents, *[template] * max(1, len(documents) // 10)]
    train_bpe_tokenizer(texts, config.tokenizer.train_vocab_size, root / "tokenizer", config.max_seq_len)
    return AutoTokenizer.from_pretrained(str(root / "tokenizer"))
