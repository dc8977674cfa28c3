"""``recgpt data download NAME``: fetch a public dump, resumably, with checksums and a progress bar.

Each file is downloaded to ``<dest>/<file>.part``, resumed with an HTTP ``Range`` request after an interruption,
checked (size, then the publisher's MD5 where one is published, else a SHA-256 recorded on first download and
checked on every later run), and only then renamed into place. Archives are unpacked into a folder beside them.
The URLs are the publishers' own at the time of writing; the sources behind a login (Kaggle, Yelp, Netflix) are
not downloadable and ``recgpt data download`` says where to get them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GROUPLENS = "https://files.grouplens.org/datasets/movielens"
SNAP_2014 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
UCSD_2018 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2"
UCSD_2023 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw"
GOODREADS = "https://datarepo.eng.ucsd.edu/mcauley_group/gdrive/goodreads"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its URL, the name it is saved as, and the URL of a published MD5 (or None)."""

    url: str
    name: str
    md5_url: str | None = None


def _grouplens(name: str) -> list[RemoteFile]:
    return [RemoteFile(f"{GROUPLENS}/{name}.zip", f"{name}.zip", f"{GROUPLENS}/{name}.zip.md5")]


MANUAL = {
    "yelp": "https://www.yelp.com/dataset (accept the terms, then download yelp_dataset.tar)",
    "netflix": "https://www.kaggle.com/datasets/netflix-inc/netflix-prize-data (Kaggle login)",
    "steam": "https://www.kaggle.com/datasets/tamber/steam-video-games (Kaggle login)",
    "anime": "https://www.kaggle.com/datasets/CooperUnion/anime-recommendations-database (Kaggle login)",
    "food": "https://www.kaggle.com/datasets/shuyangli94/food-com-recipes-and-user-interactions (Kaggle login)",
    "hotelrec": "https://github.com/Diego999/HotelRec (the README links the archive)",
    "bookcrossing": "http://www2.informatik.uni-freiburg.de/~cziegler/BX/ (or its mirrors; the original is offline)",
}


def remote_files(name: str, base_url: str | None = None) -> list[RemoteFile]:
    """The files of a downloadable dataset name; ``base_url`` replaces the publisher's host (mirrors, tests).

    Names: ``movielens-100k``, ``movielens-1m``, ``movielens-latest-small``, ``movielens-latest``,
    ``amazon2014:<Category>`` (5-core reviews + metadata, e.g. ``amazon2014:Beauty``), ``amazon2018:<Category>``,
    ``amazon2023:<Category>`` (e.g. ``amazon2023:All_Beauty``) and ``goodreads:<genre>`` (e.g. ``goodreads:poetry``).

    Raises:
        ValueError: For an unknown name, or one that needs a login (with where to get it).
    """
    family, _, category = name.partition(":")
    files: list[RemoteFile]
    if family in {"movielens-100k", "movielens-1m", "movielens-latest-small", "movielens-latest"}:
        files = _grouplens(family.replace("movielens", "ml"))
    elif family == "amazon2014" and category:
        files = [
            RemoteFile(f"{SNAP_2014}/reviews_{category}_5.json.gz", f"reviews_{category}_5.json.gz"),
            RemoteFile(f"{SNAP_2014}/meta_{category}.json.gz", f"meta_{category}.json.gz"),
        ]
    elif family == "amazon2018" and category:
        files = [
            RemoteFile(f"{UCSD_2018}/categoryFiles/{category}.json.gz", f"{category}.json.gz"),
            RemoteFile(f"{UCSD_2018}/metaFiles2/meta_{category}.json.gz", f"meta_{category}.json.gz"),
        ]
    elif family == "amazon2023" and category:
        files = [
            RemoteFile(f"{UCSD_2023}/review_categories/{category}.jsonl.gz", f"{category}.jsonl.gz"),
            RemoteFile(f"{UCSD_2023}/meta_categories/meta_{category}.jsonl.gz", f"meta_{category}.jsonl.gz"),
        ]
    elif family == "goodreads" and category:
        names = [
            f"byGenre/goodreads_reviews_{category}.json.gz",
            f"byGenre/goodreads_books_{category}.json.gz",
            "goodreads_book_authors.json.gz",
            "goodreads_book_genres_initial.json.gz",
        ]
        files = [RemoteFile(f"{GOODREADS}/{path}", path.rsplit("/", 1)[-1]) for path in names]
    elif family in MANUAL:
        raise ValueError(f"{name} is not publicly downloadable; get it from {MANUAL[family]}")
    else:
        raise ValueError(
            f"unknown dataset {name!r}; downloadable: movielens-100k, movielens-1m, movielens-latest-small, "
            "movielens-latest, amazon2014:<Category>, amazon2018:<Category>, amazon2023:<Category>, goodreads:<genre>"
        )
    if base_url is None:
        return files
    return [
        RemoteFile(_rebase(f.url, base_url), f.name, _rebase(f.md5_url, base_url) if f.md5_url else None) for f in files
    ]


def _rebase(url: str, base: str) -> str:
    """Keep the URL's path, change its scheme and host: ``https://a.org/x/y.zip`` -> ``<base>/x/y.zip``."""
    path = url.split("://", 1)[1].split("/", 1)[1]
    return f"{base.rstrip('/')}/{path}"


class DownloadError(RuntimeError):
    """A download that cannot finish: the message says which URL, why, and what to do."""


def _open(url: str, start: int = 0, timeout: float = 60.0) -> tuple[object, int | None, bool]:
    request = urllib.request.Request(
        url, headers={"User-Agent": "recgpt", **({"Range": f"bytes={start}-"} if start else {})}
    )
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416:  # the range starts at the end: the part file is complete
            return None, start, True
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"{url}: cannot connect ({reason}); you may be offline. Download it by hand into the target folder"
        ) from error
    resumed = response.status == 206
    length = response.headers.get("Content-Length")
    total = (int(length) + (start if resumed else 0)) if length is not None else None
    return response, total, resumed


def _hash(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote: RemoteFile, folder: Path, progress: bool = True) -> Path:
    """Download one file into ``folder`` (resuming a ``.part``) and verify it; returns the final path.

    Raises:
        DownloadError: Offline, HTTP errors, a short file or a checksum mismatch (the bad file is removed).
    """
    from tqdm import tqdm

    folder.mkdir(parents=True, exist_ok=True)
    target, part = folder / remote.name, folder / f"{remote.name}.part"
    if target.exists():
        _verify(remote, target)
        return target
    start = part.stat().st_size if part.exists() else 0
    response, total, resumed = _open(remote.url, start)
    if response is not None:
        mode = "ab" if resumed else "wb"
        with (
            part.open(mode) as handle,
            tqdm(
                total=total,
                initial=start if resumed else 0,
                unit="B",
                unit_scale=True,
                desc=remote.name,
                disable=not progress,
            ) as bar,
        ):
            for chunk in iter(lambda: response.read(1 << 20), b""):  # type: ignore[attr-defined]
                handle.write(chunk)
                bar.update(len(chunk))
        response.close()  # type: ignore[attr-defined]
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(f"{remote.url}: got {size} of {total} bytes; run the command again to resume")
    _verify(remote, part)
    os.replace(part, target)
    return target


def _verify(remote: RemoteFile, path: Path) -> None:
    """Check the publisher's MD5 when there is one, else the SHA-256 recorded on first download."""
    if remote.md5_url:
        response, _, _ = _open(remote.md5_url)
        text = response.read().decode(errors="replace")  # type: ignore[attr-defined]
        found = re.search(r"\b[0-9a-fA-F]{32}\b", text)  # "<hash>  file" or "MD5 (file) = <hash>"
        if found is None:
            raise DownloadError(f"{remote.md5_url}: no MD5 in the published checksum file")
        published = found.group(0).lower()
        actual = _hash(path, "md5")
        if actual != published:
            path.unlink()
            raise DownloadError(f"{remote.url}: MD5 {actual} differs from the published {published}; removed it")
        return
    record = path.with_name(f"{remote.name}.sha256")
    actual = _hash(path, "sha256")
    if record.exists() and record.read_text().strip() != actual:
        raise DownloadError(
            f"{path}: SHA-256 {actual} differs from the one recorded in {record}; delete both to refetch"
        )
    record.write_text(actual + "\n")


def download(name: str, dest: Path, base_url: str | None = None, progress: bool = True) -> list[Path]:
    """Download every file of ``name`` into ``dest/<name>`` and unpack archives; returns the files."""
    folder = dest / name.replace(":", "-")
    paths = []
    for remote in remote_files(name, base_url):
        path = fetch(remote, folder, progress)
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                archive.extractall(folder)
        paths.append(path)
    log.info("%s: %d file(s) in %s", name, len(paths), folder)
    return paths
