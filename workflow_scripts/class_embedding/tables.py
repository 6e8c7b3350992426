"""Parquet tables, the interface between stages: atomic writes and schema metadata."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__
from .errors import InputError
from .table_check import is_incomplete

COMPRESSION = "zstd"


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling of ``path``; move it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give outputs the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(value, path: str | os.PathLike) -> None:
    """A small JSON report (checks, summaries), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(value, indent=1) + "\n")


def with_metadata(table: pa.Table, metadata: dict) -> pa.Table:
    """Attach metadata (values JSON-encoded) plus the code version to a table's schema."""
    meta = dict(table.schema.metadata or {})
    for key, value in {**metadata, "code_version": __version__}.items():
        meta[key.encode()] = json.dumps(value).encode()
    return table.replace_schema_metadata(meta)


def leaf_encodings(schema: pa.Schema) -> tuple[list[str], list[str]]:
    """Parquet leaf columns to dictionary-encode and to byte-stream-split.

    Floats (logits) compress a third better split into byte streams than dictionary-encoded;
    ids and ranks repeat, so they keep dictionaries.
    """
    dictionary, split = [], []
    for field in schema:
        value_type = (
            field.type.value_type
            if pa.types.is_list(field.type) or pa.types.is_fixed_size_list(field.type)
            else field.type
        )
        leaf = f"{field.name}.list.element" if value_type is not field.type else field.name
        (split if pa.types.is_floating(value_type) else dictionary).append(leaf)
    return dictionary, split


def write_table(table: pa.Table, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write one zstd-compressed Parquet file atomically (one row group)."""
    if metadata:
        table = with_metadata(table, metadata)
    dictionary, split = leaf_encodings(table.schema)
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression=COMPRESSION,
            row_group_size=max(len(table), 1),
            use_dictionary=dictionary,
            use_byte_stream_split=split,
        )


def unreadable(path: str | os.PathLike, err: Exception) -> InputError:
    """The error for a table that pyarrow cannot read: cut short or corrupt, and how to rebuild it.

    ``--forcerun`` is offered only for a corrupt table: ``rules/common.smk`` stops at parse time
    on any table under results/ that is cut short (see :mod:`.table_check`), so such a table has
    to be deleted."""
    incomplete = is_incomplete(path)
    return InputError(
        f"{path} is {'incomplete (cut short)' if incomplete else 'corrupt'} and cannot be read "
        f"({str(err).rstrip('.')}). A job killed while writing, a full disk or a partial copy leaves such a "
        f"file, and Snakemake does not rebuild a file that exists. If the workflow wrote it, delete it and "
        f"rebuild it as a target (`snakemake --cores <n> {path}` with your usual options), then run as before: "
        f"what depends on it is rebuilt because it is newer"
        + ("" if incomplete else f" (or run `snakemake --forcerun {path}` with your usual options)")
        + "; if it is a file you gave, replace it."
    )


def read_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata written by :func:`write_table`."""
    try:
        raw = pq.read_schema(path).metadata or {}
    except (FileNotFoundError, MemoryError, NotImplementedError):
        raise
    except (pa.ArrowException, OSError) as err:
        raise unreadable(path, err) from None
    return {k.decode(): json.loads(v) for k, v in raw.items() if k != b"pandas"}


def read_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """A table; one pyarrow cannot read raises :class:`InputError` saying how to rebuild it."""
    try:
        return pq.read_table(path, columns=columns)
    except (FileNotFoundError, MemoryError, NotImplementedError):
        raise
    except (pa.ArrowException, OSError) as err:
        try:
            names = pq.read_schema(path).names
        except (pa.ArrowException, OSError):
            raise unreadable(path, err) from None
        if columns is not None and not set(columns) <= set(names):
            raise  # a column the file does not have: the caller's mistake, not a damaged file
        raise unreadable(path, err) from None


def write_csv(frame, path: str | Path) -> None:
    """A pandas DataFrame as CSV without its index, atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
