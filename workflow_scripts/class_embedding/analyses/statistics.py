"""Statistics shared by the analyses: seeded generators, percentile bootstrap intervals, the
one-sided class-vs-rest permutation test."""

from __future__ import annotations

import zlib

import numpy as np

CONFIDENCE = 0.95
#: Percentiles bounding a ``CONFIDENCE`` interval, computed as 50·(1 − confidence): the lower one
#: is 2.5 only up to rounding, and the tables keep the values they were first written with.
INTERVAL_PERCENTILES = (50 * (1 - CONFIDENCE), 100 - 50 * (1 - CONFIDENCE))


#: Upper bound on the elements of one chunk of permuted label masks (float64: 64 MiB).
MASK_CHUNK_ELEMENTS = 1 << 23


def permutation_rng(seed: int, model: str, analysis: str) -> np.random.Generator:
    """A generator for one analysis of one model, fixed by the config seed (the original's
    permutations were unseeded, docs/method.md §7.14) and independent of which other targets run."""
    return np.random.default_rng([seed, zlib.crc32(model.encode()), zlib.crc32(analysis.encode())])


def class_mean_difference(class_sums, totals, is_class: np.ndarray):
    """Difference of group means from the class group's sum and the total of both groups."""
    n_class = int(np.count_nonzero(is_class))
    n_context = is_class.size - n_class
    return class_sums / n_class - (totals - class_sums) / n_context


def permuted_class_masks(n_values: int, n_class: int, n_permutations: int, rng: np.random.Generator):
    """Yield chunks of (k, n_values) 0/1 masks, each a random relabelling that keeps the group
    sizes: ``n_class`` positions drawn without replacement get the class label.

    One relabelling per ``rng.choice(n_values, n_class, replace=False, shuffle=False)`` call, in
    order, so a loop over permutations with the same generator draws the same ones.
    """
    per_chunk = max(1, MASK_CHUNK_ELEMENTS // max(n_values, 1))
    for start in range(0, n_permutations, per_chunk):
        k = min(per_chunk, n_permutations - start)
        masks = np.zeros((k, n_values), dtype=np.float64)
        for row in masks:
            row[rng.choice(n_values, n_class, replace=False, shuffle=False)] = 1.0
        yield masks


def permutation_test(
    values: np.ndarray, is_class: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """One-sided permutation test that class-labelled values exceed context-labelled ones
    (docs/method.md §4.7), for every row of ``values`` (e.g. blocks) at once.

    ``values`` is (n_rows, n_values) or (n_values,); ``is_class`` labels the columns. Every row is
    tested against the same relabellings (each row's test is exact on its own; rows share the
    random draws, which makes one matrix product per chunk do all rows).

    Returns ``diff`` (the observed difference of means), ``p_value`` = #(diff < permuted)/n, as
    in the paper (no +1), ``p_value_corrected`` = (1 + #(permuted >= diff))/(n + 1), and the
    permuted differences (n_rows, n_permutations). Without a member in either group the
    difference and p-values are NaN.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    values = np.asarray(values, dtype=np.float64)
    is_class = np.asarray(is_class, dtype=bool)
    single = values.ndim == 1
    values = np.atleast_2d(values)
    n_rows, n_values = values.shape
    if is_class.shape != (n_values,):
        raise ValueError(f"{is_class.size} labels for {n_values} values")
    n_class = int(np.count_nonzero(is_class))
    if n_class in (0, n_values):
        nan = np.full(n_rows, np.nan)
        result = {
            "diff": nan,
            "p_value": nan,
            "p_value_corrected": nan,
            "permuted": np.full((n_rows, n_permutations), np.nan),
        }
    else:
        totals = values.sum(axis=1)
        diff = class_mean_difference(values @ is_class.astype(np.float64), totals, is_class)
        permuted = np.concatenate(
            [
                class_mean_difference(values @ masks.T, totals[:, None], is_class)
                for masks in permuted_class_masks(n_values, n_class, n_permutations, rng)
            ],
            axis=1,
        )
        result = {
            "diff": diff,
            "p_value": np.count_nonzero(diff[:, None] < permuted, axis=1) / n_permutations,
            "p_value_corrected": (1 + np.count_nonzero(permuted >= diff[:, None], axis=1)) / (n_permutations + 1),
            "permuted": permuted,
        }
    if single:
        result = {key: value[0] for key, value in result.items()}
    return result


def bootstrap_weights(n_images: int, samples: int, seed: int) -> np.ndarray:
    """(samples, n_images) resampling counts of the images, seeded."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=samples).astype(np.float64)


def bootstrap_interval(
    values: np.ndarray, rng: np.random.Generator, n_resamples: int, percentiles=INTERVAL_PERCENTILES
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (seaborn's ``errorbar=("ci", 95)``);
    fewer than two values give their mean twice."""
    if len(values) < 2:
        return float(np.mean(values)), float(np.mean(values))
    means = values[rng.integers(0, len(values), size=(n_resamples, len(values)))].mean(axis=1)
    low, high = np.percentile(means, percentiles)
    return float(low), float(high)
