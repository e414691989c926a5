import hashlib
import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from nas_kws.data import download as dl

PAYLOAD = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Loopback HTTP server for PAYLOAD with Range support; it can cut the first
    `truncate` responses short (as a dropped connection does) or ignore Range."""

    def __init__(self):
        self.requests: list[str | None] = []
        self.truncate = 0
        self.honour_range = True
        owner = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def log_message(self, *args):
                pass

            def do_GET(self):
                if self.path != "/data.bin":
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                owner.requests.append(rng)
                start = int(rng[len("bytes="):].rstrip("-")) if rng and owner.honour_range else 0
                if start >= len(PAYLOAD):
                    self.send_error(416)
                    return
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range",
                                     f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if owner.truncate:
                    owner.truncate -= 1
                    body = body[:len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data.bin"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(dl, "TIMEOUT", 5)
    srv = Server()
    yield srv
    srv.close()


def test_good_download(server, tmp_path):
    dest = dl.download(server.url, tmp_path / "data.bin", SHA, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()
    assert server.requests == [None]
    # a second call finds the verified file and does not download again
    dl.download(server.url, dest, SHA, len(PAYLOAD), progress=False)
    assert server.requests == [None]


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.truncate = 1
    dest = dl.download(server.url, tmp_path / "data.bin", SHA, None, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_partial_file_resumes(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:123_456])
    dest = dl.download(server.url, tmp_path / "data.bin", SHA, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == ["bytes=123456-"]


def test_server_ignoring_range_restarts(server, tmp_path):
    server.honour_range = False
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    dest = dl.download(server.url, tmp_path / "data.bin", SHA, len(PAYLOAD), progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_repeated_drops_keep_partial_for_later(server, tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 1)
    server.truncate = 2
    with pytest.raises(ConnectionError, match="run again to resume"):
        dl.download(server.url, tmp_path / "data.bin", SHA, len(PAYLOAD), progress=False)
    part = tmp_path / "data.bin.part"
    assert 0 < part.stat().st_size < len(PAYLOAD)
    assert dl.download(server.url, tmp_path / "data.bin", SHA, len(PAYLOAD),
                       progress=False).read_bytes() == PAYLOAD


def test_bad_checksum_removes_partial(server, tmp_path):
    with pytest.raises(ValueError) as err:
        dl.download(server.url, tmp_path / "data.bin", "0" * 64, len(PAYLOAD), progress=False)
    message = str(err.value)
    assert "SHA-256 mismatch" in message and "0" * 64 in message and SHA in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_bad_size_removes_partial(server, tmp_path):
    with pytest.raises(ValueError, match=f"expected 1000 bytes, got {len(PAYLOAD)}"):
        dl.download(server.url, tmp_path / "data.bin", None, 1000, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_http_error_is_one_line(server, tmp_path):
    with pytest.raises(ConnectionError, match="HTTP 404"):
        dl.download(server.url.replace("data.bin", "nope.bin"), tmp_path / "x", progress=False)


def test_file_url_download_and_resume(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(PAYLOAD)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data.bin.part").write_bytes(PAYLOAD[:77_777])
    dest = dl.download(source.as_uri(), tmp_path / "out" / "data.bin", SHA, len(PAYLOAD),
                       progress=False)
    assert dest.read_bytes() == PAYLOAD
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        dl.download(source.as_uri(), tmp_path / "other.bin", "f" * 64, None, progress=False)
    assert not (tmp_path / "other.bin.part").exists()


def _tarball(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_once(tmp_path):
    archive = _tarball(tmp_path / "a.tar.gz",
                       {"./yes/a.wav": b"123", "testing_list.txt": b"yes/a.wav\n"})
    out = dl.extract(archive, tmp_path / "data")
    assert (out / "yes" / "a.wav").read_bytes() == b"123"
    assert (out / dl.EXTRACTED_MARKER).exists()
    archive.unlink()
    assert dl.extract(archive, tmp_path / "data") == out   # marker: not redone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_extract_refuses_path_traversal(tmp_path):
    archive = _tarball(tmp_path / "evil.tar.gz", {"ok.txt": b"1", "../evil.txt": b"2"})
    with pytest.raises(ValueError, match="unsafe path.*evil.txt"):
        dl.extract(archive, tmp_path / "out" / "data")
    assert not (tmp_path / "out" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert list((tmp_path / "out").iterdir()) == []   # the temp folder is gone too


def test_extract_into_foreign_folder_refused(tmp_path):
    archive = _tarball(tmp_path / "a.tar.gz", {"x.txt": b"1"})
    (tmp_path / "data").mkdir()
    with pytest.raises(FileExistsError, match="not extracted by nas-kws"):
        dl.extract(archive, tmp_path / "data")
