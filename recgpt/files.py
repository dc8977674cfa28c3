"""Atomic outputs: a run killed at any point leaves the previous complete output or none, never half of one."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


class OutputFolderError(ValueError):
    """An output path that may not be replaced (a folder recgpt did not write, a file); the message names it."""


@contextlib.contextmanager
def atomic_directory(final: Path, check_replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final`` and move it into place only on success.

    On an exception the temporary directory is removed and ``final`` is untouched. On success a previous
    ``final`` is replaced: it is renamed aside (``.<name>.old-<pid>``), the new one renamed in, then the old one
    deleted. Before anything starts, what killed runs left is dealt with (``recover_interrupted_replace``,
    ``remove_stale_partials``), and ``check_replace(final)`` may refuse an existing non-empty ``final`` by raising.

    Example::

        with atomic_directory(Path("out")) as tmp:
            (tmp / "a.txt").write_text("...")   # "out" appears only after the block ends without error

    Raises:
        OutputFolderError: If ``final`` is a file.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise OutputFolderError(f"output {final}: it is a file, not a folder; choose a folder path")
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_replace(final)
    remove_stale_partials(final)
    if check_replace is not None and final.is_dir() and any(final.iterdir()):
        check_replace(final)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-{os.getpid()}-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _commit(staging, final)


def _commit(staging: Path, final: Path) -> None:
    """Rename ``staging`` to ``final``, setting a previous ``final`` aside and deleting it once the new one is in."""
    retired = final.parent / f".{final.name}.old-{os.getpid()}"
    try:
        if final.exists() or final.is_symlink():
            os.replace(final, retired)
        os.replace(staging, final)
    except BaseException:
        if (retired.exists() or retired.is_symlink()) and not (final.exists() or final.is_symlink()):
            os.replace(retired, final)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _remove(retired)


def recover_interrupted_replace(final: Path) -> list[Path]:
    """Deal with ``.<name>.old-<pid>`` folders of ``final`` whose process no longer exists.

    Such a folder is a complete previous output that a run set aside and was killed before (or while) deleting.
    When ``final`` is missing (killed between the two renames), the newest of them (by modification time, then
    name) is renamed back to ``final``; the others, and all of them when ``final`` exists, are deleted. Each step
    is logged. Folders of live processes (runs in progress) are left alone.

    Returns:
        The leftover folders that were restored or deleted.
    """
    prefix = f".{final.name}.old-"
    leftovers = sorted(
        (p for p in final.parent.glob(f"{prefix}*") if _dead_pid(p.name[len(prefix) :])),
        key=lambda p: (p.lstat().st_mtime, p.name),
    )
    missing = not (final.exists() or final.is_symlink())
    restored = leftovers.pop() if missing and leftovers and leftovers[-1].is_dir() else None
    if restored is not None:
        os.replace(restored, final)
        log.warning("restored %s from %s, set aside by a run that was killed before replacing it", final, restored)
    for stale in leftovers:
        _remove(stale)
        log.warning("removed %s, an earlier output of %s set aside by a killed run", stale, final)
    return leftovers if restored is None else [*leftovers, restored]


def remove_stale_partials(final: Path) -> list[Path]:
    """Delete staging folders of ``final`` left by runs that were killed (their process no longer exists)."""
    removed = []
    for candidate in final.parent.glob(f".{final.name}.partial-*-*"):
        pid = candidate.name[len(f".{final.name}.partial-") :].split("-", 1)[0]
        if _dead_pid(pid):
            _remove(candidate)
            removed.append(candidate)
            log.info("removed %s, the unfinished output of a run that was killed", candidate)
    return removed


def _dead_pid(text: str) -> bool:
    return text.isdigit() and not _alive(int(text))


def _remove(path: Path) -> None:
    """Delete a folder tree, or a file or link (never what a link points to); a missing path is no error."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


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
