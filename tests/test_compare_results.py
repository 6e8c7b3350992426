"""benchmarks/compare_results.py: what it calls a difference, on two small result trees."""

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from class_embedding import results_layout as layout
from class_embedding import tables

ROOT = Path(__file__).resolve().parents[1]


def write_run(workdir: Path, ranks: list[int], csv: str, device: str) -> Path:
    table = pa.table({"image": pa.array([0, 1], pa.int32()), "rank": pa.array(ranks, pa.int16())})
    tables.write_table(table, workdir / layout.layer_table("m", "hs", 0), {"device": device})
    (workdir / layout.table_csv("fig_x")).parent.mkdir(parents=True)
    (workdir / layout.table_csv("fig_x")).write_text(csv)
    return workdir / layout.RESULTS


def compare(a: Path, b: Path) -> subprocess.CompletedProcess:
    script = ROOT / "benchmarks" / "compare_results.py"
    return subprocess.run([sys.executable, script, a, b], capture_output=True, text=True)


def test_metadata_alone_is_no_difference(tmp_path):
    a = write_run(tmp_path / "a", [0, 3], "x\n1\n", device="cpu")
    b = write_run(tmp_path / "b", [0, 3], "x\n1\n", device="cuda")
    result = compare(a, b)
    assert result.returncode == 0, result.stdout
    assert '"parquet_compared": 1' in result.stdout and '"csv_compared": 1' in result.stdout


def test_a_changed_rank_or_csv_byte_is_a_difference(tmp_path):
    a = write_run(tmp_path / "a", [0, 3], "x\n1\n", device="cpu")
    b = write_run(tmp_path / "b", [0, 2], "x\n1.0\n", device="cpu")
    result = compare(a, b)
    assert result.returncode == 1
    assert "extract/model=m/layer=hs/block=0/tokens.parquet" in result.stdout and "fig_x.csv" in result.stdout
