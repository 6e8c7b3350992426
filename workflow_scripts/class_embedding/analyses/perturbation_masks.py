"""What a perturbation keeps (docs/method.md §4.9, §4.10): the perturbation types and the per-image
token masks (from the class masks of :func:`token_labels.read_token_labels`). Shared by the model
side (torch) and the tables (analysis env), so numpy only.
"""

from __future__ import annotations

import numpy as np

ATTENTION_TYPES = ("self_only", "no_cls")
#: Mask type → the label of the tokens that are kept; the mask type names what is removed
#: ("context" = "no context tokens", "class_label" = "no class-labelled tokens").
KEPT_LABEL = {"context": "class", "class_label": "context"}
MASK_TYPES = tuple(KEPT_LABEL)


def kept_token_mask(class_mask: np.ndarray, mask: str, n_prefix: int = 1) -> np.ndarray:
    """(n_images, n_prefix + n_image_tokens) bool over sequence positions: every prefix token
    ([CLS], [DIST], registers: never removed) plus the image tokens of the kept label."""
    if mask not in KEPT_LABEL:
        raise ValueError(f"unknown token mask '{mask}': expected one of {MASK_TYPES}")
    kept = class_mask if KEPT_LABEL[mask] == "class" else ~class_mask
    return np.concatenate([np.ones((kept.shape[0], n_prefix), bool), kept], axis=1)
