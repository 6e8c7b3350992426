"""Checksummed, retried, atomic downloads of the paper run's fixed inputs.

A file is streamed to ``<dest>.partial`` while its digest is computed, checked against the
configured ``md5:<hex>`` / ``sha256:<hex>``, and only then renamed to ``dest``: an interrupted or
corrupt download never leaves a file that looks complete. Without a configured checksum the first
download is unverified: its sha256 is recorded beside the file (``<dest>.sha256``) with a warning
that says how to pin it, and every later download and every use of the file is checked against
that record (:func:`trusted_checksum`); that warning also reaches the console (a notice).

Offline, a download fails at once: the host is checked first (:func:`network.require`, a few
seconds at most, shared by the run's jobs), and a failed name lookup or a refused connection is
not retried. Dropped connections, timeouts and server errors are retried.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .. import network
from ..errors import InputError
from ..logs import NOTICE

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# Errors worth another attempt: dropped or reset connections, timeouts, server-side 5xx.
TRANSIENT = (ConnectionError, socket.timeout, TimeoutError, http.client.IncompleteRead, http.client.HTTPException)


def parse_checksum(checksum: str | None) -> tuple[str, str] | None:
    """``"md5:<hex>"`` → ("md5", hex); None stays None."""
    if checksum is None:
        return None
    algorithm, _, digest = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not digest:
        raise InputError(f"checksum '{checksum}' must read md5:<hex> or sha256:<hex>.")
    return algorithm, digest.lower()


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: str | os.PathLike, checksum: str | None, what: str) -> None:
    """Check an existing file (e.g. a user-given archive) against a checksum, naming it when wrong."""
    expected = parse_checksum(checksum)
    if expected is None:
        return
    actual = file_digest(path, expected[0])
    if actual != expected[1]:
        raise InputError(
            f"{what} {path}: {expected[0]} is {actual}, expected {expected[1]}. The file is corrupt or "
            f"a different version: download it again, or fix the checksum in the config."
        )


def recorded_checksum_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def trusted_checksum(path: str | os.PathLike, checksum: str | None) -> str | None:
    """The checksum a downloaded file must have: the configured one, else the sha256 recorded at
    its first download, else None (nothing known yet)."""
    if checksum is not None:
        return checksum
    record = recorded_checksum_file(path)
    return record.read_text().strip() if record.is_file() else None


def verify_download(path: str | os.PathLike, checksum: str | None, what: str) -> None:
    """Check a downloaded file before it is used, against :func:`trusted_checksum`."""
    expected = trusted_checksum(path, checksum)
    if expected is None:
        log.warning("%s %s has no checksum, configured or recorded: it is used unverified.", what, path)
        return
    verify(path, expected, what)


def _fetch_once(url: str, partial: Path, algorithms: list[str], timeout: float) -> dict[str, str]:
    digests = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
    request = urllib.request.Request(url, headers={"User-Agent": "vit-class-embedding-workflow"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(partial, "wb") as out:
        expected_size = response.headers.get("Content-Length")
        size = 0
        while True:
            chunk = response.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
            size += len(chunk)
            for digest in digests.values():
                digest.update(chunk)
        if expected_size is not None and size != int(expected_size):
            raise http.client.IncompleteRead(b"", int(expected_size) - size)
    return {algorithm: digest.hexdigest() for algorithm, digest in digests.items()}


def download(
    url: str,
    dest: str | os.PathLike,
    checksum: str | None = None,
    *,
    attempts: int = 4,
    timeout: float = 60.0,
    backoff: float = 2.0,
) -> str:
    """Download ``url`` to ``dest`` atomically; returns the file's sha256.

    Transient network errors are retried ``attempts`` times with exponential backoff; an
    unreachable host raises :class:`network.Unreachable` at once, and a checksum mismatch is not
    retried either (the source differs) and raises :class:`InputError` naming the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    recorded = checksum is None and recorded_checksum_file(dest).is_file()
    # A file downloaded again must be the one first recorded: the source may have been replaced.
    expected = parse_checksum(trusted_checksum(dest, checksum))
    algorithms = sorted({"sha256", *([expected[0]] if expected else [])})
    network.require(url)
    for attempt in range(1, attempts + 1):
        try:
            log.info("downloading %s → %s (attempt %d/%d)", url, dest, attempt, attempts)
            digests = _fetch_once(url, partial, algorithms, timeout)
            break
        except urllib.error.HTTPError as err:
            partial.unlink(missing_ok=True)
            if err.code < 500 or attempt == attempts:
                raise InputError(f"download of {dest.name} from {url} failed: HTTP {err.code} {err.reason}.") from None
            log.warning("HTTP %s for %s; retrying", err.code, url)
        except (urllib.error.URLError, *TRANSIENT) as err:
            partial.unlink(missing_ok=True)
            reason = network.unreachable_reason(err)
            if reason is not None:  # unreachable since the check: no retry, and the other jobs are told
                network.mark_unreachable(url, reason)
                raise network.Unreachable(url, urllib.parse.urlsplit(url).hostname, reason) from None
            if attempt == attempts:
                raise InputError(
                    f"download of {dest.name} from {url} failed after {attempts} attempts ({err}). "
                    f"Check the network (downloads run on the submitting machine) and rerun."
                ) from None
            log.warning("download of %s interrupted (%s); retrying", url, err)
        time.sleep(backoff ** (attempt - 1) - 1)
    if expected is not None and digests[expected[0]] != expected[1]:
        partial.unlink(missing_ok=True)
        source = (
            f"the sha256 recorded at its first download ({recorded_checksum_file(dest)})" if recorded else "the config"
        )
        raise InputError(
            f"download of {dest.name} from {url}: {expected[0]} is {digests[expected[0]]}, expected "
            f"{expected[1]} from {source}. The release changed or the download is corrupt; nothing was kept."
            + (
                f" If the release was updated on purpose, delete {recorded_checksum_file(dest)} and rerun."
                if recorded
                else ""
            )
        )
    os.replace(partial, dest)
    if expected is None:
        recorded_checksum_file(dest).write_text(f"sha256:{digests['sha256']}\n")
        log.warning(
            "UNVERIFIED download: %s from %s has no checksum in the config. Its sha256 is %s, recorded in "
            "%s; every later use is checked against it. Check it against a trusted source, then pin it "
            "in the config (checksum: sha256:%s).",
            dest.name,
            url,
            digests["sha256"],
            recorded_checksum_file(dest),
            digests["sha256"],
            extra=NOTICE,
        )
    return digests["sha256"]
