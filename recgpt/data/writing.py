"""The writing phase of ``recgpt data prepare``: users -> JSONL texts and MDS shards, in one process or in many.

With ``workers: N > 1`` the engine writes the users as N disjoint shares (by the seeded user hash of the user
split, ``Engine.export_shares``), N worker processes (``python -m recgpt.data.writing``) each write one share's
JSONL files and MDS shards, and the shares are merged in share order: JSONL files concatenated, each share's
unfinished last MDS block carried into a ``tail`` folder, and the MDS indexes joined by mosaicml-streaming's own
``merge_index`` (re-done by ``merge_mds_indexes``, so no process imports streaming and torch) into one
``text``-loader dataset. Every process tokenizes each line once (``LineTokens``), for
chunking and shards alike.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from recgpt.data.corpus import MDSDocuments, merge_mds_indexes
from recgpt.data.engine import Engine
from recgpt.data.histories import WRITER_BATCH_ROWS, UserHistory, pretraining_users, user_histories
from recgpt.data.outputs import CorpusWriter, OutputSettings
from recgpt.data.records import Domain
from recgpt.data.stage_clock import StageClock
from recgpt.data.tokenizer import LineTokens
from recgpt.encoding import fit_prompt_text

log = logging.getLogger(__name__)

PretrainingUsers = Iterable[tuple[str, str, list[str], list[int]]]


@dataclass(frozen=True)
class WriteTask:
    """What one writer needs (picklable, for a spawned worker).

    Attributes:
        root: Where its JSONL files and ``trained_keys.parquet`` go (the output root when in process).
        mds: Its MDS folder.
        domains: Each source's wording.
        settings: How histories become texts.
        tokenizer: The tokenizer's folder or hub id (loaded again by a worker).
        max_seq_len: Token budget of documents and prompts, and the MDS sample length.
        rows: The share folder ``Engine.export_shares`` wrote (None when the engine streams in process).
        log_level: The parent's log level, for a worker's own log lines.
        tokenizer_json: The parent's Rust tokenizer as loaded (``backend_tokenizer.to_str()``, post-processor
            included), so a worker tokenizes exactly as the parent without importing transformers; None loads
            ``tokenizer`` with ``AutoTokenizer``.
        eos_token_id: The EOS id (with ``tokenizer_json``).
    """

    root: Path
    mds: Path
    domains: dict[str, Domain]
    settings: OutputSettings
    tokenizer: str
    max_seq_len: int
    rows: Path | None = None
    log_level: int = logging.INFO
    tokenizer_json: str | None = None
    eos_token_id: int | None = None


class RustTokenizer:
    """The part of a Hugging Face fast tokenizer the writers call, over its Rust ``tokenizers.Tokenizer``.

    ``tokenizer(text, add_special_tokens)["input_ids"]`` is the fast tokenizer's own call without truncation or
    padding: the backend's ``encode`` with the same special-token switch.
    """

    def __init__(self, spec: str, eos_token_id: int | None, size: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.backend_tokenizer = Tokenizer.from_str(spec)
        self.backend_tokenizer.no_truncation()
        self.backend_tokenizer.no_padding()
        self.eos_token_id = eos_token_id
        self.size = size if size is not None else self.backend_tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        """The vocabulary with added tokens (the fast tokenizer's ``len``)."""
        return self.size

    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> dict[str, Any]:
        """``{"input_ids": ...}`` of one text or of a list of texts."""
        if isinstance(text, list):
            encoded = self.backend_tokenizer.encode_batch(text, add_special_tokens=add_special_tokens)
            return {"input_ids": [e.ids for e in encoded]}
        return {"input_ids": self.backend_tokenizer.encode(text, add_special_tokens=add_special_tokens).ids}


@dataclass
class WriteResult:
    """What a writer wrote: per-source counts, MDS counts and the tokens after its last full MDS sample."""

    counts: dict[str, dict[str, int]]
    mds: dict[str, int]
    rest: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))


def write_users(
    task: WriteTask, tokenizer: Any, pretraining: PretrainingUsers, histories: Iterable[UserHistory]
) -> WriteResult:
    """Write every user of ``pretraining`` then ``histories`` under ``task.root``, with MDS shards in ``task.mds``."""
    tokens = LineTokens(tokenizer)
    shards = MDSDocuments(task.mds, tokenizer.eos_token_id, task.max_seq_len)

    def fit(prompt: str) -> str:
        return fit_prompt_text(tokenizer, prompt, task.max_seq_len)[1]

    def document(header: str, lines: list[str], copies: int) -> None:
        shards.write(tokens.document(header, lines), copies)

    writer = CorpusWriter(task.root, task.domains, task.settings, tokens, fit, document)
    try:
        for source, user, lines, orders in pretraining:
            writer.write_pretraining_user(source, user, lines, orders)
        for history in histories:
            writer.write(history)
    finally:
        writer.close()
    mds = shards.close()
    return WriteResult({name: dict(counts) for name, counts in writer.counts.items()}, mds, shards.rest)


def _batches(path: Path, batch_size: int) -> Iterator[Any]:
    if path.exists():
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size)


def write_share(task: WriteTask) -> WriteResult:
    """A worker's job: the share in ``task.rows`` (``Engine.export_shares``), with the tokenizer loaded here."""
    assert task.rows is not None
    if task.tokenizer_json is not None:
        tokenizer: Any = RustTokenizer(task.tokenizer_json, task.eos_token_id)
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(task.tokenizer)
    pretraining = pretraining_users(_batches(task.rows / "pretraining.parquet", WRITER_BATCH_ROWS))
    histories = user_histories(_batches(task.rows / "histories.parquet", WRITER_BATCH_ROWS))
    return write_users(task, tokenizer, pretraining, histories)


def die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when its parent dies (a killed run must not leave writers behind)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):  # no glibc: the ppid check below remains
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _worker_main(task_file: Path, parent: int) -> int:
    """A worker process: write the share of ``task_file`` and leave ``("ok", WriteResult)`` or ``("error", e)``
    pickled in ``result.pkl`` beside it; the exit status says which."""
    die_with_parent(parent)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: the workers are the parallelism
    task: WriteTask = pickle.loads(task_file.read_bytes())
    logging.basicConfig(level=task.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        outcome: tuple[str, Any] = ("ok", write_share(task))
    except Exception as error:  # sent to the parent, which raises it
        log.debug("worker failed:\n%s", traceback.format_exc())
        outcome = ("error", error)
    try:
        data = pickle.dumps(outcome)
    except Exception:  # an exception that cannot be pickled
        data = pickle.dumps(("error", RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]}")))
    (task_file.parent / "result.pkl").write_bytes(data)
    return 0 if outcome[0] == "ok" else 1


def run_workers(tasks: list[WriteTask], folders: list[Path]) -> list[WriteResult]:
    """Run each task in its own Python process (``python -m recgpt.data.writing``; never forked, as DuckDB and
    the tokenizer hold threads, and never through ``multiprocessing``, which would import the caller's script).

    Raises:
        The first failed worker's exception, after stopping the others; RuntimeError when one died without one.
    """
    running: list[tuple[int, subprocess.Popen[bytes]]] = []
    try:
        for index, (task, folder) in enumerate(zip(tasks, folders, strict=True)):
            (folder / "task.pkl").write_bytes(pickle.dumps(task))
            command = [sys.executable, "-m", "recgpt.data.writing", str(folder / "task.pkl"), str(os.getpid())]
            running.append((index, subprocess.Popen(command)))
        results: dict[int, WriteResult] = {}
        while running:
            for index, process in list(running):
                if process.poll() is None:
                    continue
                running.remove((index, process))
                results[index] = _worker_result(index, process.returncode, folders[index] / "result.pkl")
            time.sleep(0.05)
        return [results[index] for index in range(len(tasks))]
    finally:
        for _, process in running:
            process.kill()
            process.wait()


def _worker_result(index: int, status: int, path: Path) -> WriteResult:
    """A finished worker's ``WriteResult``, or its exception raised here."""
    if not path.is_file():
        raise RuntimeError(
            f"writing worker {index} died (exit status {status}) without a result; if the system killed it for "
            "memory, lower `workers` or `memory_limit`"
        )
    outcome, value = pickle.loads(path.read_bytes())
    if outcome != "ok":
        raise value
    return value


def merge_counts(results: Iterable[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """Per-source counts summed over writers (every writer count is additive)."""
    total: dict[str, Counter[str]] = {}
    for counts in results:
        for source, values in counts.items():
            total.setdefault(source, Counter()).update(values)
    return {source: dict(values) for source, values in total.items()}


def concatenate_files(parts: list[Path], target_root: Path) -> None:
    """Append each part folder's files (JSONL) to the same relative file under ``target_root``, in part order."""
    relatives = sorted({p.relative_to(part) for part in parts for p in part.rglob("*.jsonl") if p.is_file()})
    for relative in relatives:
        target = target_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("r+b" if target.exists() else "wb", buffering=0) as out:
            out.seek(0, os.SEEK_END)
            for part in parts:
                if (part / relative).is_file():
                    append_file(part / relative, out.fileno())


def append_file(source: Path, target: int) -> None:
    """Append ``source`` to the file descriptor ``target`` at its position: in the kernel (``os.copy_file_range``,
    several times faster than through Python at gigabytes of JSONL), or through Python where that is refused."""
    with source.open("rb", buffering=0) as handle:
        with contextlib.suppress(OSError, AttributeError):  # e.g. EXDEV or ENOSYS, or an OS without the call
            while os.copy_file_range(handle.fileno(), target, 1 << 30):
                pass
            return
        while chunk := handle.read(1 << 22):  # from where a refused kernel copy left both positions
            view = memoryview(chunk)
            while view:
                view = view[os.write(target, view) :]


def write_tail(rests: list[np.ndarray], folder: Path, eos_token_id: int, block_size: int) -> tuple[int, np.ndarray]:
    """Cut the writers' unfinished blocks, joined in order, into full samples in ``folder``; (samples, rest)."""
    joined = np.concatenate(rests) if rests else np.zeros(0, dtype=np.int32)
    if len(joined) < block_size:
        return 0, joined
    shards = MDSDocuments(folder, eos_token_id, block_size)
    full = len(joined) // block_size * block_size
    for start in range(0, full, block_size):
        shards.writer.write(joined[start : start + block_size])
    shards.close()
    return full // block_size, joined[full:]


def write_with_workers(
    engine: Engine,
    base: WriteTask,
    work: Path,
    workers: int,
    partition: tuple[int, int] | None,
    eos_token_id: int,
    clock: StageClock,
) -> tuple[WriteResult, list[Path]]:
    """The writing phase in ``workers`` processes, merged under ``base.root``; the result and the trained keys.

    Shares are exported by the engine (one scan), written by spawned workers into ``work/share-NNN`` (JSONL) and
    ``<mds>/part-NNN``, then concatenated in share order; the shares' unfinished blocks become ``<mds>/tail``.
    """
    with clock("share export"):
        folders = engine.export_shares(work, workers, partition)
    tasks = [
        dataclasses.replace(base, root=folder / "out", mds=base.mds / f"part-{i:03d}", rows=folder)
        for i, folder in enumerate(folders)
    ]
    for task in tasks:
        task.root.mkdir(parents=True, exist_ok=True)
    log.info("writing %d shares of users in %d worker processes", workers, workers)
    # the workers' memory, not the parent's idle tables (spilled until the leak check)
    with clock("writing"), engine.idle():
        results = run_workers(tasks, folders)
    with clock("share merge"):
        concatenate_files([task.root for task in tasks], base.root)
        samples, rest = write_tail([r.rest for r in results], base.mds / "tail", eos_token_id, base.max_seq_len)
        parts = [f"part-{i:03d}" for i in range(workers)] + (["tail"] if samples else [])
        merge_mds_indexes(base.mds, parts)
    mds = {key: sum(r.mds[key] for r in results) for key in ("documents", "tokens", "samples")}
    mds["samples"] += samples
    merged = WriteResult(merge_counts(r.counts for r in results), mds, rest)
    return merged, [task.root / "trained_keys.parquet" for task in tasks]


if __name__ == "__main__":  # a worker: run the package's copy of this module, whose classes pickle by their names
    from recgpt.data import writing

    sys.exit(writing._worker_main(Path(sys.argv[1]), int(sys.argv[2])))
