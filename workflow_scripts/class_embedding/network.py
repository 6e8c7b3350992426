"""Is a download host reachable? One short check before a job downloads, shared by the run's jobs.

Offline (a compute node, a firewall), a download would spend minutes in timeouts and retries
before failing. So a job that needs the network first resolves the host and opens a TCP
connection to it (or to the proxy that ``https_proxy`` names), within :data:`TIMEOUT` seconds
each. An unreachable host raises :class:`Unreachable`, which is never retried, and is recorded in
:data:`RECORD` (in the working directory) for :data:`LIFETIME` seconds: the other jobs of the run
read it and fail at once. A reachable host is not recorded; checking it again takes milliseconds.
No torch here: the check runs before a job imports anything heavy.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .errors import InputError

# Relative to the working directory: the workflow's, where every job runs.
RECORD = Path(".snakemake") / "class_embedding" / "unreachable_hosts.json"
LIFETIME = 300.0  # seconds an unreachable host stays recorded (longer than an offline preflight)
TIMEOUT = 5.0  # seconds for the DNS lookup, and again for the TCP connection
DEFAULT_PORTS = {"http": 80, "https": 443}
# Errors of httpx and requests (huggingface_hub's HTTP clients) that mean no connection was made.
CONNECT_ERRORS = {"ConnectError", "ConnectTimeout", "NameResolutionError", "NewConnectionError"}


class Unreachable(InputError):
    """A host that a download needs cannot be reached from this machine."""

    def __init__(self, url: str, host: str, reason: str):
        self.url, self.host, self.reason = url, host, reason
        super().__init__(f"{host} is unreachable from this machine ({reason}), so {url} cannot be downloaded.")


def huggingface_endpoint() -> str:
    """The Hugging Face Hub that timm downloads from (``HF_ENDPOINT``, as huggingface_hub reads it)."""
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set: huggingface_hub reads its cache only and never connects."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) that fetching ``url`` connects to: the proxy's where one applies; None for a
    URL that needs no network (``file://``)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    proxy = urllib.request.getproxies().get(parts.scheme) or urllib.request.getproxies().get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_parts.hostname:
            return proxy_parts.hostname, proxy_parts.port or DEFAULT_PORTS.get(proxy_parts.scheme, 80)
    return parts.hostname, parts.port or DEFAULT_PORTS[parts.scheme]


def probe(host: str, port: int, timeout: float = TIMEOUT) -> str | None:
    """None when a TCP connection to ``host:port`` opens within ``timeout`` (after a DNS lookup
    of at most ``timeout``), else why not."""
    found: dict = {}

    def resolve():
        try:
            found["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            found["error"] = err

    # getaddrinfo has no timeout of its own; a broken resolver can block for half a minute.
    lookup = threading.Thread(target=resolve, daemon=True)
    lookup.start()
    lookup.join(timeout)
    if lookup.is_alive():
        return f"DNS lookup of {host} gave no answer within {timeout:.0f} s"
    if "error" in found:
        return f"DNS cannot resolve {host}: {found['error'].strerror or found['error']}"
    reason = f"no address of {host}"
    for family, kind, proto, _, address in found["addresses"][:3]:
        try:
            with socket.socket(family, kind, proto) as connection:
                connection.settimeout(timeout)
                connection.connect(address)
            return None
        except TimeoutError:
            reason = f"no answer from {host}:{port} within {timeout:.0f} s (a firewall?)"
        except OSError as err:
            reason = f"connection to {host}:{port} failed: {err.strerror or err}"
    return reason


def _read(record: Path) -> dict:
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return {}


def mark_unreachable(url: str, reason: str, record: Path = RECORD) -> None:
    """Record that ``url``'s host is unreachable, for the other jobs of the run (best effort)."""
    target = endpoint(url)
    if target is None:
        return
    entries = {k: v for k, v in _read(record).items() if time.time() - v.get("time", 0) < LIFETIME}
    entries[f"{target[0]}:{target[1]}"] = {"reason": reason, "time": time.time()}
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries, indent=1))
        os.replace(tmp, record)
    except OSError:
        pass


def forget(record: Path = RECORD) -> None:
    """Forget every recorded host (e.g. when a run starts)."""
    record.unlink(missing_ok=True)


def require(url: str, record: Path = RECORD, timeout: float = TIMEOUT) -> None:
    """Raise :class:`Unreachable` unless ``url``'s host (or proxy) can be connected to; an
    unreachable host recorded less than :data:`LIFETIME` seconds ago fails without a new check."""
    target = endpoint(url)
    if target is None:
        return
    host, port = target
    entry = _read(record).get(f"{host}:{port}")
    age = time.time() - entry.get("time", 0) if entry else LIFETIME
    if age < LIFETIME:
        reason = f"{entry['reason']}; found by another job {age:.0f} s ago: delete {record} to check again at once"
        raise Unreachable(url, host, reason)
    reason = probe(host, port, timeout)
    if reason is not None:
        mark_unreachable(url, reason, record)
        raise Unreachable(url, host, reason)


def unreachable_reason(err: BaseException) -> str | None:
    """Why the host was not reachable at all, when ``err``'s chain of causes says so (name
    resolution failed, the connection was refused or timed out); None for other failures."""
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err.reason if isinstance(err, urllib.error.URLError) else err)
        err = err.__cause__ or err.__context__
    for cause in chain:
        if isinstance(cause, socket.gaierror):
            return f"DNS cannot resolve the host: {cause.strerror or cause}"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused: {cause.strerror or cause}"
    # The HTTP clients of huggingface_hub are not imported here: their errors are known by name.
    for names in (CONNECT_ERRORS, {"LocalEntryNotFoundError"}):
        for cause in chain:
            if type(cause).__name__ in names:
                return f"{type(cause).__name__}: {cause}"
    return None
