"""Table paths of a model description for tests that write a model's tables themselves.

The library reads the paths it is handed (a description's ``"layers"`` and ``"predictions"``) and
never builds a name, so tests may keep a model's tables flat in one folder: ``hs_0.parquet`` …,
``predictions.parquet``. The workflow's own layout (Hive partitions) is checked by the workflow
tests and tests/test_querying.py."""

from __future__ import annotations

from pathlib import Path

from class_embedding.results_layout import LAYER_KINDS, layer_name


def flat_tables(directory: str | Path, num_blocks: int = 32) -> dict:
    """``{"layers": {"hs_0": <directory>/hs_0.parquet, …}, "predictions": …}`` for blocks below
    ``num_blocks`` (files need not exist)."""
    directory = Path(directory)
    layers = {
        layer_name(kind, b): str(directory / f"{layer_name(kind, b)}.parquet")
        for kind in LAYER_KINDS
        for b in range(num_blocks)
    }
    return {"layers": layers, "predictions": str(directory / "predictions.parquet")}
