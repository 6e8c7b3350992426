"""Downloads from a local HTTP server on 127.0.0.1: checksums, retries, atomicity."""

import hashlib
import http.server
import threading

import pytest

from class_embedding.data import downloads
from class_embedding.errors import InputError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class Server(http.server.ThreadingHTTPServer):
    """Serves ``files``; a path in ``drop_first`` closes its first response half-way."""

    def __init__(self, files):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files
        self.drop_first = set()
        self.requests = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.requests.append(self.path)
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in server.drop_first:
            server.drop_first.discard(self.path)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = Server({"/data.zip": PAYLOAD, "/list.txt": b"n01440764/ILSVRC2012_val_00000293.JPEG\n"})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def url(server, path):
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def test_download_checks_md5_and_sha256(server, tmp_path):
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    sha = downloads.download(url(server, "/data.zip"), tmp_path / "a" / "data.zip", f"md5:{md5}")
    assert (tmp_path / "a" / "data.zip").read_bytes() == PAYLOAD
    assert sha == hashlib.sha256(PAYLOAD).hexdigest()
    downloads.download(url(server, "/data.zip"), tmp_path / "b.zip", f"sha256:{sha}")
    assert (tmp_path / "b.zip").read_bytes() == PAYLOAD
    assert not (tmp_path / "b.zip.sha256").exists()


def test_unpinned_download_records_its_sha256(server, tmp_path):
    downloads.download(url(server, "/list.txt"), tmp_path / "list.txt")
    expected = hashlib.sha256(server.files["/list.txt"]).hexdigest()
    assert (tmp_path / "list.txt.sha256").read_text().strip() == f"sha256:{expected}"


def test_checksum_mismatch_names_the_file_and_keeps_nothing(server, tmp_path):
    wrong = "md5:" + "0" * 32
    with pytest.raises(InputError, match=r"data\.zip.*md5 is [0-9a-f]{32}, expected 0{32}"):
        downloads.download(url(server, "/data.zip"), tmp_path / "data.zip", wrong)
    assert list(tmp_path.iterdir()) == []
    assert server.requests == ["/data.zip"], "a checksum mismatch is not retried"


def test_dropped_connection_is_retried(server, tmp_path):
    server.drop_first.add("/data.zip")
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    downloads.download(url(server, "/data.zip"), tmp_path / "data.zip", f"md5:{md5}", backoff=1.0)
    assert server.requests == ["/data.zip", "/data.zip"]
    assert (tmp_path / "data.zip").read_bytes() == PAYLOAD
    assert [p.name for p in tmp_path.iterdir()] == ["data.zip"]


def test_dropped_connection_every_time_fails_cleanly(server, tmp_path):
    server.drop_first.add("/data.zip")
    with pytest.raises(InputError, match=r"data\.zip.*failed after 1 attempts"):
        downloads.download(url(server, "/data.zip"), tmp_path / "data.zip", attempts=1)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_an_input_error(server, tmp_path):
    with pytest.raises(InputError, match="absent.zip.*HTTP 404"):
        downloads.download(url(server, "/absent.zip"), tmp_path / "absent.zip")
    assert list(tmp_path.iterdir()) == []


def test_verify_user_files(tmp_path):
    path = tmp_path / "ILSVRC2012_img_val.tar"
    path.write_bytes(b"abc")
    downloads.verify(path, "md5:" + hashlib.md5(b"abc").hexdigest(), "ImageNet archive")
    downloads.verify(path, None, "ImageNet archive")
    with pytest.raises(InputError, match="ImageNet archive .*ILSVRC2012_img_val.tar: sha256 is"):
        downloads.verify(path, "sha256:" + "1" * 64, "ImageNet archive")
    with pytest.raises(InputError, match="md5:<hex> or sha256:<hex>"):
        downloads.parse_checksum("crc32:1234")
