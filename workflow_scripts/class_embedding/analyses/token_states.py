"""Per-image token states for drawing tokens over their image (token-map figures, explorer pages):
the rank of the true class and the top-5 classes of every token of a layer, the label of every
token, the stimuli to draw and the blocks to show."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..extraction.reader import load_block, read_grid, read_predictions
from ..models.tokens import TokenLayout
from ..tables import read_table
from .identifiability import class_identifiability
from .token_labels import CLASS, CONTEXT, read_token_labels


def spread_blocks(num_blocks: int, count: int = 5) -> list[int]:
    """``count`` 0-based blocks spread evenly from the first to the last."""
    return sorted({int(b) for b in np.round(np.linspace(0, num_blocks - 1, min(count, num_blocks)))})


@dataclass
class LayerStates:
    """One layer's states of the chosen images: rank of the true class (0 = top-1) and top-5
    classes, (n_images, n_tokens) and (n_images, n_tokens, 5)."""

    rank: np.ndarray
    top5: np.ndarray


def read_layer(path: str | Path, images: np.ndarray, layout: TokenLayout) -> LayerStates:
    """The states of ``images`` (stimulus ids) in a layer's token table, checked against the layout."""
    grid = read_grid(path, ["rank", "top5"])
    n_images, n_tokens = grid["rank"].shape
    if n_tokens != layout.n_tokens:
        raise InputError(
            f"{path} has {n_tokens} tokens per image, but the model's config declares "
            f"{layout.n_tokens} ({layout.n_prefix} prefix + {layout.grid[0]}x{layout.grid[1]}): fix token_grid, "
            f"class_token, distillation_token or register_tokens, or rerun the extraction."
        )
    if images.size and images.max() >= n_images:
        raise InputError(f"{path} has {n_images} images, not image {images.max()}.")
    return LayerStates(grid["rank"][images].astype(np.int64), grid["top5"][images].astype(np.int64))


def read_stimuli(path: str | Path) -> pd.DataFrame:
    """The stimulus table in image order."""
    return read_table(path).to_pandas().sort_values("image", kind="stable").reset_index(drop=True)


def read_prediction_classes(path: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and predicted class of ``images``, from a predictions table."""
    predictions = read_predictions(path, ["label", "pred"])
    return predictions["label"][images].astype(np.int64), predictions["pred"][images].astype(np.int64)


def token_labels(layout: TokenLayout, labels_table: str | Path | None, images: np.ndarray) -> np.ndarray:
    """(n_images, n_tokens) label of every token: the prefix kinds ([CLS], [DIST], register),
    then "class"/"context" for image tokens from the token-label table, or "image" without one."""
    kinds = np.array(layout.token_kinds(), dtype=object)
    labels = np.tile(kinds, (images.size, 1))
    if labels_table is None:
        return labels
    is_class = read_token_labels(labels_table, layout, images)
    labels[:, layout.image_tokens] = np.where(is_class, CLASS, CONTEXT).astype(object)
    return labels


def default_images(stimuli: pd.DataFrame, count: int = 4) -> list[int]:
    """The first image of ``count`` classes spread evenly over the stimulus classes."""
    classes = stimuli["wnid"].drop_duplicates().tolist()
    chosen = [classes[int(i)] for i in np.round(np.linspace(0, len(classes) - 1, min(count, len(classes))))]
    return [int(stimuli.loc[stimuli["wnid"] == wnid, "image"].iloc[0]) for wnid in dict.fromkeys(chosen)]


def configured_images(stimuli: pd.DataFrame, entries: list[dict], key: str) -> list[int]:
    """Stimulus ids of config entries ``{wnid, image}`` (image = index among the class's stimuli)."""
    ids = []
    for index, entry in enumerate(entries):
        rows = stimuli.loc[(stimuli["wnid"] == entry["wnid"]) & (stimuli["img_index"] == entry["image"])]
        if rows.empty:
            count = int((stimuli["wnid"] == entry["wnid"]).sum())
            raise InputError(
                f"{key}[{index}]: the stimuli have no image {entry['image']} of class {entry['wnid']} "
                f"({count} images of it; 0-based). Name a wnid and image index of the stimulus table."
            )
        ids.append(int(rows["image"].iloc[0]))
    return ids


def block_ci(model: dict, block: int) -> np.ndarray:
    """Class identifiability of every (image, token) of the residual stream after ``block``."""
    ranks = load_block(model["layers"], block, "rank")
    return class_identifiability(ranks, model["num_classes"])
