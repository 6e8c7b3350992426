"""The one reader of the token-label table ``token_labels_g<grid>.parquet`` (docs/method.md §2.2):
rows (image, token, label), ``token`` the 0-based image-token index (row-major grid position),
``label`` "class" or "context" (see :func:`class_embedding.data.imagenet_s.token_label_rows`).

Shared by the model side (torch) and the tables and figures (analysis env), so numpy and pyarrow only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..models.tokens import TokenLayout
from ..tables import read_table

CLASS, CONTEXT = "class", "context"


def read_token_labels(
    path: str | Path, layout: TokenLayout, images: np.ndarray | None = None, model: str | None = None
) -> np.ndarray:
    """(n_images, n_image_tokens) bool, True = class token: row i is ``images[i]`` (stimulus ids, in
    the order given; the table may hold others), or with ``images=None`` image i of every image,
    which must then be 0..n-1. Column t is image token t (sequence position t + number of prefix tokens).

    Refused, with one InputError naming ``path`` and "rerun rule token_labels": a table that does
    not give every image it holds a complete grid of ``layout.n_image_tokens`` tokens, each once
    and labelled "class" or "context", or that lacks an image asked for. ``model`` names the model
    whose layout it is in that message.
    """
    table = read_table(path, columns=["image", "token", "label"])
    image = table.column("image").to_numpy().astype(np.int64)
    token = table.column("token").to_numpy().astype(np.int64)
    label = table.column("label").cast(pa.string()).fill_null("").to_numpy(zero_copy_only=False)
    rows, cols = layout.grid
    n_grid = layout.n_image_tokens

    def refuse(what: str) -> InputError:
        whose = f"{model}'s" if model else "the model's"
        return InputError(
            f"{path}: {what}; it must give every image a complete {rows}x{cols} grid of {n_grid} image tokens "
            f"(0..{n_grid - 1}, {whose} token grid), each token once, labelled {CLASS!r} or {CONTEXT!r}. "
            f"Rerun rule token_labels (or fix token_grid in the config if the grid is what is wrong)."
        )

    if not image.size:
        raise refuse("it holds no token labels")
    if image.min() < 0:
        raise refuse(f"it has a negative image id {int(image.min())}")
    if token.min() < 0 or token.max() != n_grid - 1:
        raise refuse(
            f"its tokens run from {int(token.min())} to {int(token.max())}: the label grid does not match "
            f"the token grid"
        )
    unknown = ~np.isin(label, [CLASS, CONTEXT])
    if unknown.any():
        raise refuse(
            f"image {int(image[unknown][0])} has label {label[unknown][0]!r} at token {int(token[unknown][0])}"
        )
    order = np.lexsort((token, image))
    image, token, label = image[order], token[order], label[order]
    twice = np.flatnonzero((image[1:] == image[:-1]) & (token[1:] == token[:-1]))
    if twice.size:
        raise refuse(f"image {int(image[twice[0]])} has token {int(token[twice[0]])} more than once")
    ids, first, counts = np.unique(image, return_index=True, return_counts=True)
    short = np.flatnonzero(counts < n_grid)
    if short.size:
        start, count = first[short[0]], counts[short[0]]
        lacking = int(np.setdiff1d(np.arange(n_grid), token[start : start + count])[0])
        raise refuse(
            f"{int((n_grid - counts[short]).sum())} image tokens unlabelled, e.g. token {lacking} of image "
            f"{int(ids[short[0]])} ({short.size} of {ids.size} images incomplete)"
        )
    wanted = np.arange(ids[-1] + 1) if images is None else np.asarray(images, dtype=np.int64).reshape(-1)
    missing = wanted[~np.isin(wanted, ids)]
    if missing.size:
        if images is None:
            held = f"{ids.size} images with ids up to {ids[-1]}, ids must be 0..n-1"
        else:
            held = f"it holds {ids.size} images"
        raise refuse(f"it has no token labels of images {missing[:5].tolist()} ({held})")
    is_class = (label == CLASS).reshape(ids.size, n_grid)
    return is_class if images is None else is_class[np.searchsorted(ids, wanted)]
