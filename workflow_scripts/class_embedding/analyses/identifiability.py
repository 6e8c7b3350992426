"""Class identifiability metrics (docs/method.md §3, §4.1–4.4) on (n_images, n_tokens) arrays.

Pure functions: no file I/O, no plotting. Arrays are indexed ``[image, token]`` in sequence
positions: the model's prefix tokens ([CLS], [DIST], registers) first, then the image (patch)
tokens, as a :class:`~class_embedding.models.tokens.TokenLayout` describes them.
"""

from __future__ import annotations

import numpy as np
import scipy.stats

from ..models.tokens import CLS, DISTILLATION, IMAGE, REGISTER, TokenLayout

__all__ = ["CLS", "DISTILLATION", "IMAGE", "REGISTER"]

#: Per docs/method.md §4.2 a block is marked significant when the one-sided p is below this.
SIGNIFICANCE_LEVEL = 0.05


def class_identifiability(ranks: np.ndarray, num_classes: int) -> np.ndarray:
    """CI = 1 - rank/C: 1 when the correct class is top-1, ~0.5 at chance."""
    return 1.0 - np.asarray(ranks, dtype=np.float64) / num_classes


def image_tokens(layout: TokenLayout, paper_convention: bool = False) -> slice:
    """Token positions holding image tokens.

    The original always dropped token 0 and nothing else: for a GAP model that drops an image
    token (docs/method.md §7.9), and a distillation or register token counts as an image token.
    ``paper_convention=True`` reproduces that.
    """
    return slice(1, None) if paper_convention else layout.image_tokens


def token_types(values: np.ndarray, layout: TokenLayout) -> dict[str, np.ndarray]:
    """Split per-token values by token kind, in sequence order.

    "[CLS]" and "[DIST]" map to (n_images,) arrays, "register" to (n_images, n_registers) and
    "image" to (n_images, tokens after the prefix); kinds the model lacks are absent.
    """
    split = {kind: values[:, layout.positions(kind)[0]] for kind in (CLS, DISTILLATION) if kind in layout.prefix}
    if layout.register_tokens:
        split[REGISTER] = values[:, layout.positions(REGISTER)]
    split[IMAGE] = values[:, layout.image_tokens]
    return split


def identifiable_token_counts(ranks: np.ndarray, tokens: slice) -> np.ndarray:
    """Number of identifiable (rank 0) tokens among ``tokens``, per image."""
    return np.count_nonzero(ranks[:, tokens] == 0, axis=1)


def identifiability_rates(ranks: np.ndarray, tokens: slice) -> dict[str, float | int]:
    """docs/method.md §4.1 rates over the tokens selected by ``tokens``.

    pct_tokens: mean over images of the % of identifiable tokens; pct_images: % of images with at
    least one identifiable token.
    """
    n_images = ranks.shape[0]
    n_tokens = ranks[:, tokens].shape[1]
    counts = identifiable_token_counts(ranks, tokens)
    n_identifiable_images = int(np.count_nonzero(counts))
    return {
        "pct_tokens": float(100.0 * np.mean(counts / n_tokens)),
        "pct_images": 100.0 * n_identifiable_images / n_images,
        "n_identifiable_images": n_identifiable_images,
        "n_images": n_images,
        "n_image_tokens": n_tokens,
    }


def accuracy(correct: np.ndarray) -> float:
    """Model accuracy in percent."""
    return float(100.0 * np.mean(np.asarray(correct, dtype=bool)))


def group_blocks(values: np.ndarray, block_group: int) -> np.ndarray:
    """Average consecutive groups of ``block_group`` blocks along axis 0 (docs/method.md §4.3).

    ViT-L's 24 blocks with ``block_group=2`` become 12 "normalized blocks" (1+2, 3+4, ...).
    """
    values = np.asarray(values, dtype=np.float64)
    n_blocks = values.shape[0]
    if block_group < 1 or n_blocks % block_group:
        raise ValueError(f"{n_blocks} blocks cannot be averaged in groups of {block_group}")
    return values.reshape(n_blocks // block_group, block_group, *values.shape[1:]).mean(axis=1)


def change_rate(logits_before: np.ndarray, logits_after: np.ndarray, tokens: slice) -> float:
    """Fraction of (image, token) pairs whose correct-class logit increases (docs/method.md §4.4)."""
    increase = logits_after[:, tokens] > logits_before[:, tokens]
    return float(np.mean(increase))


def wilcoxon_greater(trained: np.ndarray, random: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p-value that ``trained`` exceeds ``random`` (docs/method.md §4.2).

    Elements are paired by position (same image, same token). scipy's default zero_method
    ("wilcox") drops tied pairs; when every pair is tied there is no evidence, so p = 1.
    """
    trained = np.asarray(trained, dtype=np.float64).ravel()
    random = np.asarray(random, dtype=np.float64).ravel()
    if trained.shape != random.shape:
        raise ValueError(f"cannot pair {trained.size} trained with {random.size} random values")
    if not np.any(trained != random):
        return 1.0
    return float(scipy.stats.wilcoxon(trained, random, alternative="greater").pvalue)
