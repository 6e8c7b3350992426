"""Which Parquet tables cannot be complete, from 8 bytes per file and no pyarrow import.

A complete Parquet file starts and ends with ``PAR1`` (the footer, written last, ends with it),
so a table cut short by a killed job, a full disk or a partial copy fails this check. Snakemake
does not rebuild such a file (it exists and is older than its inputs), and every rerun of what
reads it fails; ``rules/common.smk`` lists them at parse time instead.
"""

from __future__ import annotations

import os

from .results_layout import RESULTS

MAGIC = b"PAR1"
MIN_SIZE = 12  # leading magic, footer length, trailing magic
SUFFIX = ".parquet"


def is_incomplete(path: str | os.PathLike, size: int | None = None) -> bool:
    """Whether ``path`` cannot be a whole Parquet file: under 12 bytes, or its first or last 4
    bytes are not ``PAR1``. An unreadable file (permissions) counts as incomplete."""
    try:
        with open(path, "rb") as handle:
            if size is None:
                size = os.fstat(handle.fileno()).st_size
            if size < MIN_SIZE or handle.read(4) != MAGIC:
                return True
            handle.seek(size - 4)
            return handle.read(4) != MAGIC
    except FileNotFoundError:
        raise
    except OSError:
        return True


def unreadable_tables(root: str | os.PathLike = RESULTS) -> list[str]:
    """The ``*.parquet`` files under ``root`` (recursively; symbolic links to folders are not
    followed) that cannot be complete, sorted; ``[]`` when ``root`` does not exist."""
    found, folders = [], [os.fspath(root)]
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except (FileNotFoundError, NotADirectoryError):
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
                    elif entry.name.endswith(SUFFIX) and entry.is_file():
                        if is_incomplete(entry.path, entry.stat().st_size):
                            found.append(entry.path)
                except FileNotFoundError:  # removed while we looked (a job finishing)
                    continue
    return sorted(found)
