"""Parquet writing: round trip, metadata, encodings, atomicity."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from class_embedding import tables


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
