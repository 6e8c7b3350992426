"""Parquet writing: round trip, metadata, encodings, atomicity; unreadable tables named."""

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from class_embedding import tables
from class_embedding.errors import InputError
from class_embedding.table_check import is_incomplete, unreadable_tables


def test_round_trip_with_metadata_and_encodings(tmp_path):
    rows = 200
    table = pa.table(
        {
            "image": pa.array(np.repeat(np.arange(4, dtype=np.int32), 50)),
            "logit": pa.array(np.linspace(-3, 3, rows, dtype=np.float32)),
            "top5": pa.FixedSizeListArray.from_arrays(pa.array(np.arange(rows * 5, dtype=np.int16) % 7), 5),
        }
    )
    path = tmp_path / "hs_0.parquet"
    tables.write_table(table, path, {"model": "m", "num_classes": 7})
    assert tables.read_table(path).equals(table)
    assert tables.read_metadata(path)["num_classes"] == 7
    assert tables.read_metadata(path)["model"] == "m"
    encodings = {
        pq.ParquetFile(path).metadata.row_group(0).column(i).path_in_schema: pq.ParquetFile(path)
        .metadata.row_group(0)
        .column(i)
        .encodings
        for i in range(3)
    }
    assert "BYTE_STREAM_SPLIT" in encodings["logit"]
    assert "RLE_DICTIONARY" in encodings["top5.list.element"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError):
        with tables.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def written_table(path, rows=5000):
    table = pa.table({"image": np.arange(rows, dtype=np.int32), "logit": np.linspace(-1, 1, rows, dtype=np.float32)})
    tables.write_table(table, path, {"model": "m"})
    return table


def cut(path, size):
    with open(path, "r+b") as handle:
        handle.truncate(size)


@pytest.mark.parametrize("keep", ["all but 3 bytes", "half", "8 bytes", "nothing"])
def test_a_truncated_table_is_named_with_how_to_rebuild_it(tmp_path, keep):
    path = tmp_path / "results" / "m" / "hs_0.parquet"
    written_table(path)
    size = path.stat().st_size
    cut(path, {"all but 3 bytes": size - 3, "half": size // 2, "8 bytes": 8, "nothing": 0}[keep])
    for read in (tables.read_table, tables.read_metadata):
        with pytest.raises(InputError) as error:
            read(path)
        message = str(error.value)
        assert message.startswith(f"{path} is incomplete (cut short) and cannot be read (")
        assert "delete it and rebuild it as a target" in message and f"snakemake --cores <n> {path}" in message
        assert "--forcerun" not in message  # rules/common.smk stops on a cut-short table at parse time
    assert is_incomplete(path)
    assert unreadable_tables(tmp_path / "results") == [str(path)]


def test_complete_tables_pass_and_only_parquet_files_are_checked(tmp_path):
    results = tmp_path / "results"
    table = written_table(results / "a" / "b" / "good.parquet")
    written_table(results / "bad.parquet")
    cut(results / "bad.parquet", 100)
    (results / "notes.txt").write_text("x")
    (results / "a" / ".good.parquet.tmp123.partial").write_bytes(b"PAR")  # a write in progress
    (results / "a" / "b" / "empty.parquet").write_bytes(b"")
    os.symlink(results / "a", results / "link")  # not followed: no table is listed twice
    assert tables.read_table(results / "a" / "b" / "good.parquet").equals(table)
    assert not is_incomplete(results / "a" / "b" / "good.parquet")
    assert unreadable_tables(results) == [str(results / "a" / "b" / "empty.parquet"), str(results / "bad.parquet")]
    assert unreadable_tables(tmp_path / "absent") == []


def test_a_complete_file_with_damaged_content_is_named_corrupt(tmp_path):
    path = tmp_path / "t.parquet"
    written_table(path)
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    data[-8 - footer : -8] = b"\xff" * footer  # the footer's metadata, magic bytes kept
    path.write_bytes(bytes(data))
    assert not is_incomplete(path) and unreadable_tables(tmp_path) == []
    with pytest.raises(InputError, match=f"^{re.escape(str(path))} is corrupt and cannot be read") as error:
        tables.read_table(path)
    assert "delete it and rebuild it as a target" in str(error.value) and f"snakemake --forcerun {path}" in str(error.value)


def test_other_read_errors_are_not_blamed_on_the_file(tmp_path):
    path = tmp_path / "t.parquet"
    written_table(path)
    with pytest.raises(pa.ArrowInvalid):
        tables.read_table(path, columns=["absent"])
    with pytest.raises(FileNotFoundError):
        tables.read_table(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError):
        tables.read_metadata(tmp_path / "missing.parquet")
