"""Partition outputs of ``recgpt data prepare`` (``partition=K/N``) merged into the dataset one run would write.

A corpus larger than one machine is prepared as N independent jobs, each with the same data config and
``partition=K/N`` (K = 1..N): every job reads all inputs, runs the same engine and trains the same tokenizer, and
writes only the users whose seeded hash falls in partition K. ``merge_prepared(OUT, [PART1, ..., PARTN])`` then
joins them, as MosaicML's own converters do, with one MDS index merge:

- ``tokenizer/``, ``rejects.jsonl`` and each ``benchmark/<source>/items.jsonl`` are the same in every part (checked)
  and copied once;
- ``instruct/train.jsonl`` is re-sorted by its seeded line hash: byte-identical to a single run's;
- the other JSONL files are concatenated in partition order (the same lines as one run, in partition order);
- each part's MDS folder becomes ``pretraining/mds/pNNN`` (hard links where the filesystem allows), the parts'
  unfinished last blocks become ``pretraining/mds/tail``, and one ``index.json`` of the ``text`` loader lists them
  all (``merge_mds_indexes``, streaming's ``merge_index`` without importing it): the same documents, token count
  and sample count as one run;
- the manifest's counts are the parts' written counts summed over the global ones (ingest, engine, leak check).

Merging only some of the N partitions gives a partial output again, which a later merge accepts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recgpt.data.corpus import merge_mds_indexes
from recgpt.data.engine import Engine
from recgpt.data.prepare import LEFTOVER_TOKENS, check_written, shuffle_lines
from recgpt.data.prepare_config import WRITTEN_BY, PrepareConfig, SourceConfig, TokenizerConfig, refuse_foreign_output
from recgpt.data.writing import WriteResult, concatenate_files, merge_counts, write_tail
from recgpt.files import atomic_directory, tree_digest

log = logging.getLogger(__name__)

# Config keys that may differ between the parts of one dataset (they do not change which texts are written).
_PER_JOB_KEYS = frozenset({"output", "partition", "workers", "memory_limit", "threads"})
_SHARED_FILES = ("rejects.jsonl",)


def _read_part(folder: Path) -> dict[str, Any]:
    """A part's manifest, refused unless this command wrote it as a partial output."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder}: not a prepared output (no readable manifest.json: {error})") from error
    if manifest.get("written_by") != WRITTEN_BY:
        raise ValueError(f"{folder}: its manifest.json was not written by `{WRITTEN_BY}`")
    if "partition" not in manifest:
        raise ValueError(
            f"{folder}: a complete output, not a partition; merge outputs prepared with partition=K/N (the same "
            "config, one job per K)"
        )
    return manifest


def _digest(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_parts(parts: Sequence[Path], manifests: list[dict[str, Any]]) -> None:
    """Same partition count, disjoint partitions, the same config but per-job keys, identical shared files."""
    first, first_part = manifests[0], parts[0]
    seen: dict[int, Path] = {}
    for part, manifest in zip(parts, manifests, strict=True):
        marker = manifest["partition"]
        if marker["count"] != first["partition"]["count"]:
            raise ValueError(
                f"{part}: partition of {marker['count']} jobs, but {first_part} is of {first['partition']['count']}; "
                "merge the parts of one partition=K/N run"
            )
        for index in marker["indices"]:
            if index in seen:
                raise ValueError(f"{part}: partition {index} is also in {seen[index]}; give each partition once")
            seen[index] = part
        differing = sorted(
            key
            for key in set(first["config"]) | set(manifest["config"])
            if key not in _PER_JOB_KEYS and first["config"].get(key) != manifest["config"].get(key)
        )
        if differing:
            raise ValueError(
                f"{part}: config key(s) {differing} differ from {first_part}'s; every partition job must use the "
                "same data config (only output, partition, workers, memory_limit and threads may differ)"
            )
        for relative in _shared_files(first_part):
            if _digest(part / relative) != _digest(first_part / relative):
                raise ValueError(
                    f"{part}: {relative} differs from {first_part}'s; the jobs read different inputs or versions, so "
                    "prepare every partition again from the same inputs"
                )


def _shared_files(part: Path) -> list[str]:
    """Files every part of one dataset holds identically: the tokenizer, the rejects and the catalogues."""
    names = [p.relative_to(part).as_posix() for p in (part / "tokenizer").glob("*") if p.is_file()]
    names += [p.relative_to(part).as_posix() for p in (part / "benchmark").glob("*/items.jsonl")]
    return sorted(names) + list(_SHARED_FILES)


def _link_or_copy(source: str, target: str) -> None:
    """A hard link where the filesystem allows (shards are never modified in place), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _config(values: dict[str, Any]) -> PrepareConfig:
    """The ``PrepareConfig`` a manifest's ``config`` records."""
    sources = [SourceConfig(**source) for source in values["sources"]]
    tokenizer = TokenizerConfig(**values["tokenizer"])
    return PrepareConfig(**{**values, "sources": sources, "tokenizer": tokenizer})


def merge_prepared(output: str | Path, parts: Sequence[str | Path]) -> Path:
    """Merge partition outputs into ``output`` (replaced atomically, as ``prepare`` does); the manifest's path.

    Raises:
        ValueError: For a part that is not a partial output of ``recgpt data prepare``, parts of different
            configs, inputs or partition counts, or a partition given twice, naming the part and the key.
    """
    folders = [Path(part).expanduser().resolve() for part in parts]
    if not folders:
        raise ValueError("merge: give at least one partition output")
    target = Path(output).expanduser().resolve()
    if target in folders:
        raise ValueError(f"merge: output {target} is one of the parts; choose a new folder")
    manifests = [_read_part(folder) for folder in folders]
    order = sorted(range(len(folders)), key=lambda i: min(manifests[i]["partition"]["indices"]))
    folders, manifests = [folders[i] for i in order], [manifests[i] for i in order]
    _check_parts(folders, manifests)
    with atomic_directory(target, check_replace=refuse_foreign_output) as root:
        for relative in _shared_files(folders[0]):
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(folders[0] / relative, root / relative)
        manifest = _merge_texts_and_shards(root, folders, manifests)
        manifest["content_sha256"] = tree_digest(root)
        (root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    log.info(
        "merged %d partition outputs into %s (content sha256 %s)", len(folders), target, manifest["content_sha256"][:16]
    )
    return target / "manifest.json"


def _merge_texts_and_shards(root: Path, folders: list[Path], manifests: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSONL files, the MDS folders and the manifest of the merged output."""
    first = manifests[0]
    config = _config({**first["config"], "output": str(root), "partition": None})
    skip = {"instruct/train.jsonl", *_shared_files(folders[0])}
    staged = root / ".work"
    for index, folder in enumerate(folders):  # the JSONL files a merge concatenates, linked into one tree per part
        for path in folder.rglob("*.jsonl"):
            relative = path.relative_to(folder).as_posix()
            if relative not in skip:
                (staged / f"p{index}" / relative).parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(str(path), str(staged / f"p{index}" / relative))
    concatenate_files([staged / f"p{index}" for index in range(len(folders))], root)
    engine = Engine(staged / "db", config.memory_limit, config.threads)
    try:
        rows = shuffle_lines(
            engine, [f / "instruct" / "train.jsonl" for f in folders], root / "instruct" / "train.jsonl", config.seed
        )
    finally:
        engine.close()
    shutil.rmtree(staged)
    mds = root / "pretraining" / "mds"
    mds.mkdir(parents=True, exist_ok=True)
    names = [f"p{min(m['partition']['indices']):03d}" for m in manifests]
    for name, folder in zip(names, folders, strict=True):
        shutil.copytree(folder / "pretraining" / "mds", mds / name, copy_function=_link_or_copy)
    rests = [np.load(folder / "pretraining" / LEFTOVER_TOKENS, allow_pickle=False) for folder in folders]
    samples, rest = write_tail(rests, mds / "tail", int(first["partition"]["eos_token_id"]), config.max_seq_len)
    merge_mds_indexes(mds, names + (["tail"] if samples else []))
    written = merge_counts(m["partition"]["written"] for m in manifests)
    result = WriteResult(written, _summed_mds(manifests, samples), rest)
    return _merged_manifest(root, config, folders, manifests, result, rows)


def _summed_mds(manifests: list[dict[str, Any]], tail_samples: int) -> dict[str, int]:
    total = {key: sum(m["pretraining"][key] for m in manifests) for key in ("documents", "tokens", "samples")}
    total["samples"] += tail_samples
    return total


def _merged_manifest(
    root: Path,
    config: PrepareConfig,
    folders: list[Path],
    manifests: list[dict[str, Any]],
    result: WriteResult,
    rows: int,
) -> dict[str, Any]:
    """Global counts from the first part (checked equal in all), the written ones summed."""
    first = manifests[0]
    sources: dict[str, Any] = {}
    for name, counts in first["sources"].items():
        own = set(first["partition"]["written"].get(name, {}))
        shared = {key: value for key, value in counts.items() if key not in own}
        for folder, manifest in zip(folders, manifests, strict=True):
            theirs = manifest["sources"][name]
            written = manifest["partition"]["written"].get(name, {})
            mismatched = [k for k, v in shared.items() if k not in written and theirs.get(k) != v]
            if mismatched:
                raise ValueError(
                    f"{folder}: source '{name}' counts {mismatched} differ from {folders[0]}'s; the jobs read "
                    "different inputs, so prepare every partition again from the same inputs"
                )
        sources[name] = {**shared, **dict(sorted(result.counts.get(name, {}).items()))}
    indices = sorted(i for m in manifests for i in m["partition"]["indices"])
    complete = indices == list(range(1, first["partition"]["count"] + 1))
    manifest: dict[str, Any] = {
        "written_by": WRITTEN_BY,
        "config": {**first["config"], "output": str(config.output), "partition": None},
        "sources": sources,
        "leak_check": {
            "training_events_checked": sum(m["leak_check"]["training_events_checked"] for m in manifests),
            "held_out_found": 0,
            "passed": all(m["leak_check"]["passed"] for m in manifests),
        },
        "instruct": {"train": rows},
        "pretraining": result.mds,
        "tokenizer_vocab_size": first["tokenizer_vocab_size"],
        "merged_from": [
            {
                "path": str(f),
                "partition": m["partition"]["indices"],
                "workers": m.get("workers"),
                "content_sha256": m["content_sha256"],
            }
            for f, m in zip(folders, manifests, strict=True)
        ],
    }
    if complete:
        check_written(config, root, result.counts)
    else:
        np.save(root / "pretraining" / LEFTOVER_TOKENS, result.rest.astype(np.int32), allow_pickle=False)
        manifest["config"]["partition"] = f"{','.join(map(str, indices))}/{first['partition']['count']}"
        manifest["partition"] = {
            "indices": indices,
            "count": first["partition"]["count"],
            "written": result.counts,
            "leftover_tokens": len(result.rest),
            "eos_token_id": first["partition"]["eos_token_id"],
        }
    return manifest
