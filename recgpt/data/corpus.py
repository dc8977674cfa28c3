"""Pre-training corpus outputs: JSONL documents, and MDS shards of concatenated tokens for the ``text`` loader."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recgpt.data.render import json_line


def concat_token_blocks(
    token_lists: Iterable[Sequence[int]], eos_token_id: int, block_size: int
) -> Iterator[np.ndarray]:
    """Concatenate documents, each followed by EOS, and cut the stream into blocks of ``block_size`` tokens.

    This is llm-foundry's ``concat_tokens`` layout (``convert_dataset_json --concat_tokens N --eos_text ...``):
    documents wrap across block boundaries and the final partial block is dropped (``TokenBlocks.rest``).

    Example:
        >>> [block.tolist() for block in concat_token_blocks([[1, 2], [3, 4, 5]], 0, 4)]
        [[1, 2, 0, 3]]
    """
    blocks = TokenBlocks(eos_token_id, block_size)
    for tokens in token_lists:
        yield from blocks.add(tokens)


class TokenBlocks:
    """The ``concat_token_blocks`` stream, fed one document at a time; ``rest`` holds the unfinished block."""

    def __init__(self, eos_token_id: int, block_size: int, rest: Sequence[int] = ()) -> None:
        self.eos = np.asarray([eos_token_id], dtype=np.int32)
        self.block_size = block_size
        self.pieces: list[np.ndarray] = [np.asarray(rest, dtype=np.int32)]
        self.size = len(rest)

    def add(self, tokens: Sequence[int] | np.ndarray, copies: int = 1) -> Iterator[np.ndarray]:
        """The blocks completed by ``copies`` copies of a document (each followed by EOS)."""
        ids = np.asarray(tokens, dtype=np.int32)
        for _ in range(copies):
            self.pieces += [ids, self.eos]
            self.size += len(ids) + 1
        if self.size < self.block_size:
            return
        stream = np.concatenate(self.pieces)
        full = len(stream) // self.block_size * self.block_size
        for start in range(0, full, self.block_size):
            yield stream[start : start + self.block_size]
        self.pieces, self.size = [stream[full:]], len(stream) - full

    @property
    def rest(self) -> np.ndarray:
        """The tokens after the last full block (fewer than ``block_size``)."""
        return np.concatenate(self.pieces) if len(self.pieces) > 1 else self.pieces[0]


class MDSTokenWriter:
    """mosaicml-streaming's ``MDSWriter`` for one ``tokens`` column (``ndarray:int32``, 1-D, uncompressed, no
    hashes, 64 MiB shards), writing the same bytes (``tests/data/test_workers.py`` compares them) without importing
    ``streaming``, which imports torch: seconds and most of a GiB in every worker process.

    The layout (``streaming/base/format/mds``): a shard is ``[samples: u32] [offsets: (samples + 1) x u32]
    [config JSON] [samples]``; a sample is ``[size: u32] [ndim << 2 | shape dtype: u8] [shape] [int32 values]``;
    ``index.json`` lists the shards, each with the writer's config.
    """

    SIZE_LIMIT = 1 << 26

    def __init__(self, output_dir: Path) -> None:
        self.folder = Path(output_dir)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config = {
            "version": 2,
            "format": "mds",
            "compression": None,
            "hashes": [],
            "size_limit": self.SIZE_LIMIT,
            "column_names": ["tokens"],
            "column_encodings": ["ndarray:int32"],
            "column_sizes": [None],
        }
        self.config_data = json.dumps(self.config, sort_keys=True).encode("utf-8")
        self.shards: list[dict[str, Any]] = []
        self.samples: list[bytes] = []
        self.shard_size = 8 + len(self.config_data)

    def write(self, tokens: np.ndarray) -> None:
        """Add one sample (a 1-D int32 array), starting a new shard when this one would pass the size limit."""
        length = len(tokens)
        shape = (
            b"\x04" + np.uint8(length).tobytes()
            if length < 1 << 8
            else b"\x05" + np.uint16(length).tobytes()
            if length < 1 << 16
            else b"\x06" + np.uint32(length).tobytes()
        )
        datum = shape + np.ascontiguousarray(tokens, dtype=np.int32).tobytes()
        sample = np.uint32(len(datum)).tobytes() + datum
        if self.shard_size + len(sample) + 4 > self.SIZE_LIMIT:
            self._flush()
        self.samples.append(sample)
        self.shard_size += len(sample) + 4

    def _flush(self) -> None:
        count = np.uint32(len(self.samples))
        offsets = np.array([0] + [len(sample) for sample in self.samples]).cumsum().astype(np.uint32)
        offsets += len(count.tobytes()) + len(offsets.tobytes()) + len(self.config_data)
        data = count.tobytes() + offsets.tobytes() + self.config_data + b"".join(self.samples)
        basename = f"shard.{len(self.shards):05}.mds"
        (self.folder / basename).write_bytes(data)
        self.shards.append(
            {
                "samples": len(self.samples),
                "raw_data": {"basename": basename, "bytes": len(data), "hashes": {}},
                "zip_data": None,
                **self.config,
            }
        )
        self.samples, self.shard_size = [], 8 + len(self.config_data)

    def finish(self) -> None:
        """Write the last shard and ``index.json``."""
        if self.samples:
            self._flush()
        with (self.folder / "index.json").open("w") as handle:
            json.dump({"version": 2, "shards": self.shards}, handle, sort_keys=True)


def merge_mds_indexes(folder: Path, parts: Sequence[str]) -> None:
    """``streaming.base.util.merge_index`` for local sub-folders: ``folder/index.json`` listing every shard of
    ``folder/<part>/index.json``, in order, named ``<part>/<shard>`` (``test_workers.py`` compares the two).

    The same merge as streaming's own, done here so that no process of a run imports ``streaming`` (and torch).
    """
    shards = []
    for part in parts:
        index = json.loads((folder / part / "index.json").read_text())
        for shard in index["shards"]:
            for key in ("raw_data", "zip_data", "raw_meta", "zip_meta"):
                if shard.get(key):
                    shard[key]["basename"] = os.path.join(os.path.basename(part), shard[key]["basename"])
            shards.append(shard)
    with (folder / "index.json").open("w") as handle:
        json.dump({"version": 2, "shards": shards}, handle)


class MDSDocuments:
    """An MDS folder of ``block_size``-token samples (one ``tokens`` int32 column) written document by document.

    Counts ``documents``, ``tokens`` (document tokens and their EOS) and ``samples``; ``close`` returns them, and
    ``rest`` the tokens of the unfinished last block (dropped, or carried into a merge's tail).
    """

    def __init__(self, output_dir: Path, eos_token_id: int, block_size: int, rest: Sequence[int] = ()) -> None:
        self.writer = MDSTokenWriter(output_dir)
        self.blocks = TokenBlocks(eos_token_id, block_size, rest)
        self.counts = {"documents": 0, "tokens": 0, "samples": 0}

    def write(self, tokens: Sequence[int] | np.ndarray, copies: int = 1) -> None:
        """Append ``copies`` copies of a document's ids."""
        self.counts["documents"] += copies
        self.counts["tokens"] += (len(tokens) + 1) * copies
        for block in self.blocks.add(tokens, copies):
            self.writer.write(block)
            self.counts["samples"] += 1

    @property
    def rest(self) -> np.ndarray:
        """The tokens after the last full sample."""
        return self.blocks.rest

    def close(self) -> dict[str, int]:
        """Finish the shards and the folder's ``index.json``; the counts."""
        self.writer.finish()
        return dict(self.counts)


def write_mds_shards(documents: Iterable[str], tokenizer: Any, output_dir: Path, block_size: int) -> dict[str, int]:
    """Tokenize documents and write them as MDS shards with one ``tokens`` (int32) column.

    ``recgpt data prepare`` writes its shards as it writes the documents (``MDSDocuments``, with the ids of
    ``LineTokens``); this is the same layout from texts.

    Args:
        documents: Pre-training documents.
        tokenizer: A Hugging Face tokenizer with an EOS token.
        output_dir: The MDS folder (``local:`` of the ``text`` loader); must not exist yet.
        block_size: Tokens per sample; equals the recipe's ``max_seq_len``.

    Returns:
        ``{"documents", "tokens", "samples"}`` counts; ``tokens`` counts the document tokens and their EOS.
    """
    from recgpt.data.tokenizer import LineTokens

    tokens = LineTokens(tokenizer, verify_first=0)
    shards = MDSDocuments(output_dir, tokenizer.eos_token_id, block_size)
    stream = iter(documents)
    while batch := list(itertools.islice(stream, 1024)):
        for ids in tokens.encode(batch):
            shards.write(ids)
    return shards.close()


def write_jsonl(rows: Iterable[dict[str, Any]], path: Path) -> int:
    """Write rows as JSON lines (``render.json_line``: UTF-8, line separators escaped); returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json_line(row))
            count += 1
    return count
