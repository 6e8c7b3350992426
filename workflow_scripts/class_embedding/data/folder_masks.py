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
GRAY_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
COLOR_MODES = {"LA", "P", "PA", "RGB", "RGBA", "RGBX"}


def mask_of(masks_root: str | Path, file: str) -> np.ndarray:
    """Class pixels of the stimulus ``file`` (relative to the images root)."""
    file = Path(file)
    return read_mask(Path(masks_root) / file.parent / (file.stem + MASK_SUFFIX))


def read_mask(path: Path) -> np.ndarray:
    """Class pixels of a mask PNG: its non-zero pixels, by value (16-bit and float masks too, and
    any non-zero colour channel, so that a dark red pixel counts; alpha is ignored)."""
    try:
        with Image.open(path) as png:
            png.load()
    except FileNotFoundError:
        raise InputError(f"mask {path} not found: every stimulus needs <masks>/<label>/<stem>.png.") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise InputError(f"mask {path} cannot be decoded ({err}): replace the file.") from None
    if png.mode in GRAY_MODES:
        values = np.asarray(png)
    elif png.mode in COLOR_MODES:
        values = np.asarray(png.convert("RGBA"))[..., :3]
    else:
        raise InputError(f"mask {path} has PIL mode {png.mode}: save it as a grayscale or RGB PNG (non-zero = class).")
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise InputError(f"mask {path} has NaN or infinite values: save it as a grayscale PNG (non-zero = class).")
    return values != 0 if values.ndim == 2 else (values != 0).any(-1)


def token_label_table(stimuli: pa.Table, masks_root: str | Path, grid: int | tuple[int, int]) -> pa.Table:
    """Per-(image, image token) class/context labels from the masks, as ImageNet-S's table."""
    masks = (mask_of(masks_root, file) for file in stimuli.column("file").to_pylist())
    return token_label_rows(stimuli.column("image").to_numpy(), masks, grid)
