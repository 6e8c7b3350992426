"""Downloads from a local HTTP server on 127.0.0.1: checksums, retries, atomicity; offline, a
failure in seconds without retries; the notice of an unverified download on the console."""

import hashlib
import http.server
import json
import socket
import threading
import time
import urllib.error
from types import SimpleNamespace

import pytest

from class_embedding import logs, network
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


# Offline: one short reachability check, no retry, and the other jobs told (class_embedding/network.py).


def closed_port_url(path="/data.zip"):
    """A URL on 127.0.0.1 whose port nothing listens on: the connection is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


@pytest.fixture
def no_proxy(monkeypatch, tmp_path):
    """No proxy from the environment, and the record of unreachable hosts in this test's folder."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.chdir(tmp_path)


def test_unreachable_host_fails_at_once_and_is_recorded(no_proxy, tmp_path, monkeypatch):
    url = closed_port_url()
    start = time.monotonic()
    with pytest.raises(
        network.Unreachable, match=r"127\.0\.0\.1 is unreachable .*connection to 127\.0\.0\.1:\d+ failed"
    ):
        downloads.download(url, tmp_path / "out" / "data.zip")
    assert time.monotonic() - start < 5, "no retries, no backoff"
    assert not (tmp_path / "out" / "data.zip").exists() and not (tmp_path / "out" / "data.zip.partial").exists()
    assert network.RECORD.is_file()

    # The next job reads the record and fails without connecting again.
    def no_probe(*args):
        raise AssertionError("probed again")

    monkeypatch.setattr(network, "probe", no_probe)
    with pytest.raises(network.Unreachable, match="found by another job"):
        downloads.download(url, tmp_path / "other.zip")
    network.forget()
    with pytest.raises(AssertionError, match="probed again"):
        downloads.download(url, tmp_path / "other.zip")


def test_name_resolution_failure_is_not_retried(no_proxy, tmp_path, monkeypatch):
    calls = []

    def unresolvable(url, *args):
        calls.append(url)
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    monkeypatch.setattr(network, "require", lambda url: None)  # the host answered the check, then vanished
    monkeypatch.setattr(downloads, "_fetch_once", unresolvable)
    with pytest.raises(network.Unreachable, match="DNS cannot resolve the host: Name or service not known"):
        downloads.download("https://files.example.org/a.zip", tmp_path / "a.zip", backoff=10.0)
    assert calls == ["https://files.example.org/a.zip"]
    assert "files.example.org:443" in network.RECORD.read_text()


def test_unresolvable_name_and_proxy(no_proxy, monkeypatch):
    assert network.probe("no-such-host.invalid", 443, timeout=5).startswith("DNS ")
    assert network.endpoint("file:///data/sample.JPEG") is None
    assert network.endpoint("https://huggingface.co/timm/x") == ("huggingface.co", 443)
    # Behind a proxy, the proxy is what must answer.
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    assert network.endpoint("https://huggingface.co/timm/x") == ("proxy.example", 3128)
    monkeypatch.setenv("no_proxy", "huggingface.co")
    assert network.endpoint("https://huggingface.co/timm/x") == ("huggingface.co", 443)


def test_unverified_download_notice_reaches_the_console(server, tmp_path, capsys):
    smk = SimpleNamespace(
        rule="download_checkpoint", log=[str(tmp_path / "download.log")], output=["list.txt"], threads=1
    )
    with logs.logged(smk):
        sha = downloads.download(url(server, "/list.txt"), tmp_path / "list.txt")
    console = capsys.readouterr().err
    assert (
        f"Notice from rule download_checkpoint: UNVERIFIED download: list.txt from {url(server, '/list.txt')}"
        in console
    )
    assert f"pin it in the config (checksum: sha256:{sha})" in console
    record = json.loads((tmp_path / "download.status.json").read_text())
    assert record["ok"] and record["outputs"] == ["list.txt"] and sha in record["notices"][0]
    # A pinned download has nothing to say.
    downloads.download(url(server, "/list.txt"), tmp_path / "pinned.txt", f"sha256:{sha}")
    assert "UNVERIFIED" not in capsys.readouterr().err
