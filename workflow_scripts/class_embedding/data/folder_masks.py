"""Masks of a labelled image folder: ``<masks>/<label>/<stem>.png``, non-zero on the class pixels
of the image ``<root>/<label>/<stem>.<ext>``. Apart from the folder's class names (timm), so
that the token-label job needs no model library."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from ..errors import InputError
from .imagenet_s import token_label_rows

MASK_SUFFIX = ".png"


def mask_of(masks_root: str | Path, file: str) -> np.ndarray:
    """Class pixels of the stimulus ``file`` (relative to the images root)."""
    file = Path(file)
    return read_mask(Path(masks_root) / file.parent / (file.stem + MASK_SUFFIX))


def read_mask(path: Path) -> np.ndarray:
    """Class pixels (non-zero) of a mask PNG."""
    try:
        with Image.open(path) as png:
            return np.asarray(png.convert("L")) > 0
    except FileNotFoundError:
        raise InputError(f"mask {path} not found: every stimulus needs <masks>/<label>/<stem>.png.") from None
    except OSError as err:
        raise InputError(f"mask {path} cannot be decoded ({err}): replace the file.") from None


def token_label_table(stimuli: pa.Table, masks_root: str | Path, grid: int) -> pa.Table:
    """Per-(image, image token) class/context labels from the masks, as ImageNet-S's table."""
    masks = (mask_of(masks_root, file) for file in stimuli.column("file").to_pylist())
    return token_label_rows(stimuli.column("image").to_numpy(), masks, grid)
