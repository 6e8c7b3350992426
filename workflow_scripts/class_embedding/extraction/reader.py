"""The one reader of the extraction tables (a layer's token table and the predictions, at the paths
:mod:`class_embedding.results_layout` gives and the rules hand over): rows become arrays indexed
by image (and token), in that order. ``layers`` arguments map a layer name (``hs_3``) to its table,
as a model description's ``"layers"`` does."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..results_layout import LAYER_KINDS, layer_name
from ..tables import read_table

__all__ = ["LAYER_KINDS", "layer_name"]


def column_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """Table columns as numpy arrays; fixed-size list columns become (rows, width) arrays."""
    arrays = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            arrays[name] = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
        else:
            arrays[name] = column.to_numpy(zero_copy_only=False)
    return arrays


def read_grid(path: str | Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of a token table as (n_images, n_tokens, ...) arrays in image and token order."""
    arrays = column_arrays(read_table(path, columns=["image", "token", *columns]))
    image, token = arrays.pop("image"), arrays.pop("token")
    n_tokens = int(token.max()) + 1
    # Position in a complete image-major grid; rows are written sorted, so usually no reordering.
    key = image.astype(np.int64) * n_tokens + token
    expected = np.arange(key.size)
    if not np.array_equal(key, expected):
        order = np.argsort(key, kind="stable")
        key = key[order]
        arrays = {name: values[order] for name, values in arrays.items()}
    if key.size % n_tokens or not np.array_equal(key, expected):
        raise InputError(f"{path}: rows do not form a complete image x token grid; rerun the extraction.")
    return {name: values.reshape(-1, n_tokens, *values.shape[1:]) for name, values in arrays.items()}


def load_block(layers: Mapping[str, str], block: int, column: str = "rank", layer: str = "hs") -> np.ndarray:
    """One column of the ``layer`` kind's table at ``block`` as an (n_images, n_tokens) array."""
    return read_grid(layers[layer_name(layer, block)], [column])[column]


def load_top1(layers: Mapping[str, str], block: int, layer: str) -> np.ndarray:
    """Top-1 class (first of ``top5``) of the ``layer`` kind at ``block`` as (n_images, n_tokens)."""
    return read_grid(layers[layer_name(layer, block)], ["top5"])["top5"][..., 0]


def load_sublayer(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Activated memories (n_images, n_tokens, 5) and the top-1 class (n_images, n_tokens) of a
    projected sublayer output (an attn or mlp table)."""
    grid = read_grid(path, ["top5", "mem_top5"])
    return grid["mem_top5"].astype(np.int64), grid["top5"][..., 0]


def read_predictions(path: str | Path, columns: list[str]) -> dict[str, np.ndarray]:
    """Columns of a predictions table in image order."""
    arrays = column_arrays(read_table(path, columns=["image", *columns]))
    order = np.argsort(arrays["image"], kind="stable")
    if not np.array_equal(arrays["image"][order], np.arange(order.size)):
        raise InputError(f"{path}: images are not 0..n-1, each once; rerun the extraction.")
    return {name: arrays[name][order] for name in columns}


def load_predictions(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """True class and correctness of every image, in image order."""
    predictions = read_predictions(path, ["label", "correct"])
    return predictions["label"].astype(np.int64), predictions["correct"].astype(bool)


def load_correct(path: str | Path) -> np.ndarray:
    """Per-image correctness of the model's own prediction, ordered by image."""
    return read_predictions(path, ["correct"])["correct"].astype(bool)
