"""Compare two finished runs: every figure CSV byte for byte, every Parquet table's data.

Used to check that a change leaves results alone (a refactoring, another precision of the
projection): both runs in the same layout (class_embedding.results_layout), the same config.
Parquet tables are compared by their rows and schema (column names and types); key–value metadata
is left out, since it records the device and code version. Exit status 1 when anything differs.

    python benchmarks/compare_results.py RUN_A/results RUN_B/results [--output report.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq

#: What is compared: the plotted numbers and tables, and every Parquet table under results/.
CSV_FOLDER = "tables"


def relative_files(root: Path, pattern: str) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob(pattern) if path.is_file()}


def same_table(a: Path, b: Path) -> bool:
    left, right = pq.read_table(a), pq.read_table(b)
    return left.schema.remove_metadata().equals(right.schema.remove_metadata()) and left.equals(right)


def compare(a: Path, b: Path) -> dict:
    csvs_a, csvs_b = relative_files(a / CSV_FOLDER, "*.csv"), relative_files(b / CSV_FOLDER, "*.csv")
    tables_a, tables_b = relative_files(a, "*.parquet"), relative_files(b, "*.parquet")
    common_csvs, common_tables = sorted(csvs_a & csvs_b), sorted(tables_a & tables_b)
    return {
        "csv_compared": len(common_csvs),
        "csv_differ": [
            n for n in common_csvs if (a / CSV_FOLDER / n).read_bytes() != (b / CSV_FOLDER / n).read_bytes()
        ],
        "csv_only_in_a": sorted(csvs_a - csvs_b),
        "csv_only_in_b": sorted(csvs_b - csvs_a),
        "parquet_compared": len(common_tables),
        "parquet_differ": [n for n in common_tables if not same_table(a / n, b / n)],
        "parquet_only_in_a": sorted(tables_a - tables_b),
        "parquet_only_in_b": sorted(tables_b - tables_a),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="results/ of the first run")
    parser.add_argument("b", type=Path, help="results/ of the second run")
    parser.add_argument("--output", type=Path, help="write the report as JSON")
    args = parser.parse_args()
    report = {"a": str(args.a), "b": str(args.b), **compare(args.a, args.b)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    differ = [key for key, value in report.items() if isinstance(value, list) and value]
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
