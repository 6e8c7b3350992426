"""Areas under the explainability perturbation curves (docs/method.md §4.13) and their bootstrap
intervals over images; no torch, so the figures and tables that use them run without it.

Curves are accuracies at numbers n of kept image tokens (``kept``) out of N; the per-image
correctness behind them comes from results/explain/model=<m>/perturbation_correct.parquet
(written by :mod:`class_embedding.analyses.explain_perturbation`).
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..tables import read_table
from .statistics import INTERVAL_PERCENTILES, bootstrap_weights

DIRECTIONS = ("negative", "positive")


def read_correct(path) -> tuple[dict[tuple[str, str], np.ndarray], np.ndarray]:
    """perturbation_correct.parquet → ({(method, direction): (n_repeats, n_kept, n_images) bool}, kept)."""
    frame = read_table(path).to_pandas()
    kept = np.sort(frame["kept"].unique())
    n_images = frame["image"].nunique()
    result = {}
    for (method, direction), rows in frame.groupby(["method", "direction"], observed=True, sort=False):
        rows = rows.sort_values(["repeat", "kept", "image"], kind="stable")
        n_repeats = rows["repeat"].nunique()
        if len(rows) != n_repeats * kept.size * n_images:
            raise InputError(f"{path}: ({method}, {direction}) does not cover every kept count and image: rebuild it.")
        result[(str(method), str(direction))] = rows["correct"].to_numpy().reshape(n_repeats, kept.size, n_images)
    return result, kept


def paper_auc(kept: np.ndarray, accuracy: np.ndarray, n_tokens: int) -> np.ndarray:
    """The paper's AUC (docs/method.md §4.13): Σ accuracy over n = 1..N−1 kept / (max · N), over the
    last axis of ``accuracy`` (…, len(kept)). With a subset of n the sum is the mean times N − 1."""
    perturbed = (kept >= 1) & (kept <= n_tokens - 1)
    values = accuracy[..., perturbed]
    top = values.max(axis=-1)
    total = values.mean(axis=-1) * (n_tokens - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top > 0, total / (top * n_tokens), 0.0)


def trapezoid_auc(kept: np.ndarray, accuracy: np.ndarray, n_tokens: int) -> np.ndarray:
    """Chefer et al.'s AUC: trapezoid area under accuracy against the fraction of image tokens
    removed, (N − n)/N, over every evaluated n including the unperturbed n = N (x = 0)."""
    order = np.argsort(-kept)
    removed = (n_tokens - kept[order]) / n_tokens
    return np.trapezoid(accuracy[..., order], removed, axis=-1)


AUC_KINDS = {"paper": paper_auc, "trapezoid": trapezoid_auc}


def auc_table(
    correct: dict[tuple[str, str], np.ndarray],
    kept: np.ndarray,
    n_tokens: int,
    *,
    samples: int,
    seed: int,
) -> list[dict]:
    """AUCs of every (method, direction) and positive − negative, each with a percentile
    bootstrap interval over images (the same resamples for every curve, so differences are paired).

    A random curve is the mean over its permutations of the per-image correctness.
    """
    n_images = next(iter(correct.values())).shape[-1]
    weights = bootstrap_weights(n_images, samples, seed) / n_images
    curves, resampled = {}, {}
    for key, values in correct.items():
        per_image = values.mean(axis=0)  # (n_kept, n_images): mean over repeats
        curves[key] = per_image.mean(axis=1)
        resampled[key] = weights @ per_image.T  # (samples, n_kept)
    rows = []
    for method in dict.fromkeys(method for method, _ in correct):
        estimates = {}
        for direction in DIRECTIONS:
            if (method, direction) not in correct:
                continue
            key = (method, direction)
            estimates[direction] = {
                kind: (function(kept, curves[key], n_tokens), function(kept, resampled[key], n_tokens))
                for kind, function in AUC_KINDS.items()
            }
        if set(estimates) == set(DIRECTIONS):
            estimates["positive_minus_negative"] = {
                kind: tuple(estimates["positive"][kind][i] - estimates["negative"][kind][i] for i in range(2))
                for kind in AUC_KINDS
            }
        for direction, values in estimates.items():
            row = {"method": method, "direction": direction}
            for kind, (point, boot) in values.items():
                row[f"auc_{kind}"] = float(point)
                row[f"auc_{kind}_low"], row[f"auc_{kind}_high"] = (
                    float(v) for v in np.percentile(boot, INTERVAL_PERCENTILES)
                )
            rows.append(row)
    return rows
