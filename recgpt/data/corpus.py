"""Pre-training corpus outputs: JSONL documents, and MDS shards of concatenated tokens for the ``text`` loader."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from recgpt.data.render import json_line


def concat_token_blocks(token_lists: Iterable[list[int]], eos_token_id: int, block_size: int) -> Iterator[np.ndarray]:
    """Concatenate documents, each followed by EOS, and cut the stream into blocks of ``block_size`` tokens.

    This is llm-foundry's ``concat_tokens`` layout (``convert_dataset_json --concat_tokens N --eos_text ...``):
    documents wrap across block boundaries and the final partial block is dropped.

    Example:
        >>> [block.tolist() for block in concat_token_blocks([[1, 2], [3, 4, 5]], 0, 4)]
        [[1, 2, 0, 3]]
    """
    buffer: list[int] = []
    for tokens in token_lists:
        buffer.extend(tokens)
        buffer.append(eos_token_id)
        while len(buffer) >= block_size:
            yield np.asarray(buffer[:block_size], dtype=np.int32)
            del buffer[:block_size]


def write_mds_shards(documents: Iterable[str], tokenizer: Any, output_dir: Path, block_size: int) -> dict[str, int]:
    """Tokenize documents and write them as MDS shards with one ``tokens`` (int32) column.

    Args:
        documents: Pre-training documents.
        tokenizer: A Hugging Face tokenizer with an EOS token.
        output_dir: The MDS folder (``local:`` of the ``text`` loader); must not exist yet.
        block_size: Tokens per sample; equals the recipe's ``max_seq_len``.

    Returns:
        ``{"documents", "tokens", "samples"}`` counts; ``tokens`` counts the document tokens and their EOS.
    """
    from streaming import MDSWriter

    counts = {"documents": 0, "tokens": 0, "samples": 0}
    backend = getattr(tokenizer, "backend_tokenizer", None)

    def encode(batch: list[str]) -> list[list[int]]:
        if backend is not None:  # the Rust tokenizer, batched: the same ids, without per-document overhead
            return [encoding.ids for encoding in backend.encode_batch(batch, add_special_tokens=False)]
        return tokenizer(batch, add_special_tokens=False)["input_ids"]

    def token_lists() -> Iterator[list[int]]:
        stream = iter(documents)
        while batch := list(itertools.islice(stream, 1024)):
            for ids in encode(batch):
                counts["documents"] += 1
                counts["tokens"] += len(ids) + 1
                yield ids

    with MDSWriter(out=str(output_dir), columns={"tokens": "ndarray:int32"}, compression=None) as writer:
        for block in concat_token_blocks(token_lists(), tokenizer.eos_token_id, block_size):
            writer.write({"tokens": block})
            counts["samples"] += 1
    return counts


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write rows as JSON lines (``render.json_line``: UTF-8, line separators escaped); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json_line(row))
            count += 1
    return count
