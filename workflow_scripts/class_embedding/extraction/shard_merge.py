"""The per-model layer tables from the extraction shards: pyarrow only, so the merge job starts
without torch."""

from __future__ import annotations

import pyarrow as pa

from .. import tables
from ..results_layout import shard_table


def merge_shards(shard_dirs: list[str], outputs: dict[str, str]) -> None:
    """Concatenate each table's shard files in shard order (``outputs``: table name → path),
    keeping the first shard's metadata."""
    for name, path in outputs.items():
        files = [shard_table(d, name) for d in shard_dirs]
        merged = pa.concat_tables([tables.read_table(f) for f in files])
        tables.write_table(merged, path, tables.read_metadata(files[0]))
