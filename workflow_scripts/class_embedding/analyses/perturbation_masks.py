"""What a perturbation keeps (docs/method.md §4.9, §4.10): the perturbation types and the per-image
token masks. Shared by the model side (torch) and the tables (analysis env), so numpy and
pyarrow only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import InputError
from ..tables import read_table

ATTENTION_TYPES = ("self_only", "no_cls")
#: Mask type → the label of the tokens that are kept; the mask type names what is removed
#: ("context" = "no context tokens", "class_label" = "no class-labelled tokens").
KEPT_LABEL = {"context": "class", "class_label": "context"}
MASK_TYPES = tuple(KEPT_LABEL)


def load_class_mask(path: str | Path) -> np.ndarray:
    """(n_images, n_image_tokens) bool from ``token_labels_g<grid>.parquet``: True = class token.

    Row i is image i, column t the 0-based image token t (sequence position t + number of prefix tokens).
    """
    table = read_table(path, columns=["image", "token", "label"])
    table = table.sort_by([("image", "ascending"), ("token", "ascending")])
    image = table.column("image").to_numpy()
    token = table.column("token").to_numpy()
    n_images, n_tokens = int(image.max()) + 1, int(token.max()) + 1
    complete = image.size == n_images * n_tokens and np.array_equal(token, np.tile(np.arange(n_tokens), n_images))
    if not (complete and np.array_equal(image, np.repeat(np.arange(n_images), n_tokens))):
        raise InputError(f"{path}: rows do not form a complete image x token grid; delete it and rerun to rebuild it.")
    is_class = pc.equal(table.column("label").cast(pa.string()), "class")
    return is_class.to_numpy().reshape(n_images, n_tokens)


def kept_token_mask(class_mask: np.ndarray, mask: str, n_prefix: int = 1) -> np.ndarray:
    """(n_images, n_prefix + n_image_tokens) bool over sequence positions: every prefix token
    ([CLS], [DIST], registers: never removed) plus the image tokens of the kept label."""
    if mask not in KEPT_LABEL:
        raise ValueError(f"unknown token mask '{mask}': expected one of {MASK_TYPES}")
    kept = class_mask if KEPT_LABEL[mask] == "class" else ~class_mask
    return np.concatenate([np.ones((kept.shape[0], n_prefix), bool), kept], axis=1)
