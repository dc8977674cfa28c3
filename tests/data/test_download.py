"""`recgpt data download` against a real HTTP server on 127.0.0.1: resume, checksums, unpacking, offline errors."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recgpt.data.download import DownloadError, download, remote_files


class Files(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.files`` (path -> bytes) with Range support; ``cut_after`` drops a response midway."""

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)  # type: ignore[attr-defined]
        if body is None:
            self.send_error(404)
            return
        start = 0
        if "Range" in self.headers:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = self.server.cut_after  # type: ignore[attr-defined]
        if cut is not None:
            self.server.cut_after = None  # type: ignore[attr-defined]
            self.wfile.write(body[start : start + cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])
        self.server.ranges.append(self.headers.get("Range"))  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Files)
    httpd.files, httpd.cut_after, httpd.ranges = {}, None, []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def base(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_an_interrupted_download_resumes_and_is_checked_and_unpacked(server, tmp_path: Path):
    archive = zipped({"ml-1m/ratings.dat": "1::1::5::978300760\n" * 2000, "ml-1m/movies.dat": "1::A (1995)::Drama\n"})
    server.files["/datasets/movielens/ml-1m.zip"] = archive
    server.files["/datasets/movielens/ml-1m.zip.md5"] = (
        f"MD5 (ml-1m.zip) = {hashlib.md5(archive).hexdigest()}\n".encode()
    )
    server.cut_after = len(archive) // 3
    with pytest.raises(DownloadError, match="run the command again to resume"):
        download("movielens-1m", tmp_path, base_url=base(server), progress=False)
    part = tmp_path / "movielens-1m" / "ml-1m.zip.part"
    assert part.stat().st_size == len(archive) // 3
    [path] = download("movielens-1m", tmp_path, base_url=base(server), progress=False)
    assert f"bytes={len(archive) // 3}-" in server.ranges  # resumed, not restarted
    assert path.read_bytes() == archive and not part.exists()
    assert (tmp_path / "movielens-1m" / "ml-1m" / "movies.dat").read_text() == "1::A (1995)::Drama\n"


def test_a_wrong_published_checksum_removes_the_file(server, tmp_path: Path):
    server.files["/datasets/movielens/ml-100k.zip"] = zipped({"ml-100k/u.data": "1\t1\t5\t1\n"})
    server.files["/datasets/movielens/ml-100k.zip.md5"] = b"0123456789abcdef0123456789abcdef  ml-100k.zip\n"
    with pytest.raises(DownloadError, match="differs from the published"):
        download("movielens-100k", tmp_path, base_url=base(server), progress=False)
    assert list((tmp_path / "movielens-100k").iterdir()) == []


def test_unpublished_checksums_are_recorded_then_enforced(server, tmp_path: Path):
    for remote in remote_files("amazon2014:Beauty", base(server)):
        server.files[remote.url.removeprefix(base(server))] = b"{}\n"
    paths = download("amazon2014:Beauty", tmp_path, base_url=base(server), progress=False)
    assert [p.name for p in paths] == ["reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"]
    record = tmp_path / "amazon2014-Beauty" / "meta_Beauty.json.gz.sha256"
    assert record.read_text().strip() == hashlib.sha256(b"{}\n").hexdigest()
    paths[1].write_bytes(b"tampered")
    with pytest.raises(DownloadError, match=r"SHA-256 \w+ differs"):
        download("amazon2014:Beauty", tmp_path, base_url=base(server), progress=False)


def test_offline_and_missing_files_are_clear_errors(server, tmp_path: Path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download("movielens-1m", tmp_path, base_url=base(server), progress=False)
    with pytest.raises(DownloadError, match=r"cannot connect .* you may be offline"):
        download("movielens-1m", tmp_path, base_url="http://127.0.0.1:9", progress=False)


def test_login_only_and_unknown_datasets_say_where_to_go():
    with pytest.raises(ValueError, match=r"kaggle\.com"):
        remote_files("netflix")
    with pytest.raises(ValueError, match="unknown dataset 'imdb'"):
        remote_files("imdb")
