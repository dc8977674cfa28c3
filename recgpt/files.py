"""Atomic outputs: a run killed at any point leaves the previous complete output or none, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final`` and move it into place only on success.

    On an exception the temporary directory is removed and ``final`` is untouched. On success a previous
    ``final`` is replaced: it is renamed aside, the new one renamed in, then the old one deleted.

    Example::

        with atomic_directory(Path("out")) as tmp:
            (tmp / "a.txt").write_text("...")   # "out" appears only after the block ends without error
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    retired = final.parent / f".{final.name}.old-{os.getpid()}"
    if final.exists():
        os.replace(final, retired)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)


def remove_stale_partials(final: Path) -> list[Path]:
    """Delete staging folders of ``final`` left by runs that were killed (their process no longer exists)."""
    removed = []
    for candidate in final.parent.glob(f".{final.name}.partial-*-*"):
        pid = candidate.name[len(f".{final.name}.partial-") :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file and a rename, so readers never see a partial file."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write a file through a temporary file and a rename, so readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def tree_digest(root: Path, exclude: frozenset[str] = frozenset()) -> str:
    """SHA-256 over every file's relative path and bytes under ``root``, in sorted order.

    Two runs that produced byte-identical outputs have the same digest.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        relative = path.relative_to(root).as_posix()
        if relative in exclude:
            continue
        digest.update(relative.encode() + b"\0")
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
