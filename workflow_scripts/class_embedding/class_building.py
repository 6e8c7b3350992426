"""How blocks build the class representation (METHOD §4.5–§4.8), on (n_images, n_tokens) arrays.

Pure numpy: no file I/O, no plotting. Arrays are indexed ``[image, token]`` in sequence
positions (token 0 is [CLS] for a class-token model), as :mod:`identifiability` expects.
"""

from __future__ import annotations

import zlib

import numpy as np

from .identifiability import CLS, IMAGE, change_rate, image_tokens

ATTN = "attn"
MLP = "mlp"
SUBLAYERS = (ATTN, MLP)

CLASS = "class"
CONTEXT = "context"
#: Values of :func:`label_grid`: class- and context-labelled image tokens, and unlabelled tokens.
CLASS_CODE, CONTEXT_CODE, UNLABELLED = 1, 0, -1

#: Upper bound on the elements of one chunk of permuted label masks (float64: 64 MiB).
MASK_CHUNK_ELEMENTS = 1 << 23


# ---------------------------------------------------------------------------------------------
# Layer-wise class similarity change rate (METHOD §4.5)


def series_label(sublayer: str, token_type: str) -> str:
    """The paper's legend entries: "attn - [CLS]", "mlp - Image", ..."""
    return f"{sublayer} - {'Image' if token_type == IMAGE else token_type}"


def token_selections(class_token: bool) -> dict[str, slice]:
    """Token positions of each series: [CLS] and image tokens, or (GAP) all tokens as image."""
    selections = {CLS: slice(0, 1)} if class_token else {}
    selections[IMAGE] = image_tokens(class_token)
    return selections


def sublayer_change_rates(
    block_input: np.ndarray, sublayers: dict[str, np.ndarray], class_token: bool
) -> dict[str, float]:
    """Fraction of tokens whose correct-class logit of the projected sublayer output exceeds that
    of the projected block input ``hs_{b-1}`` (the MLP too is compared with the block input,
    METHOD §7.10), per sublayer and token type."""
    return {
        series_label(sublayer, token_type): change_rate(block_input, logits, tokens)
        for sublayer, logits in sublayers.items()
        for token_type, tokens in token_selections(class_token).items()
    }


# ---------------------------------------------------------------------------------------------
# Residual stream composition (METHOD §4.6)


def residual_composition(
    output: np.ndarray, block_input: np.ndarray, attn: np.ndarray, mlp: np.ndarray
) -> dict[str, float]:
    """Percent of tokens whose top-1 class of the block output ``hs_b`` equals that of the block
    input (prev), the attention or the MLP output; and of tokens matching none ("composition").

    ``comp`` reproduces the original, which tests the attention condition twice and never the
    MLP one (METHOD §7.2); ``comp_corrected`` requires a difference from all three.
    """
    same_prev, same_attn, same_mlp = (output == other for other in (block_input, attn, mlp))
    return {
        "prev": percent(same_prev),
        "attn": percent(same_attn),
        "mlp": percent(same_mlp),
        "comp": percent(~same_prev & ~same_attn & ~same_attn),
        "comp_corrected": percent(~same_prev & ~same_attn & ~same_mlp),
    }


def percent(mask: np.ndarray) -> float:
    return float(100.0 * np.mean(mask))


# ---------------------------------------------------------------------------------------------
# Class- vs context-labelled tokens (METHOD §2.2, §4.7, §4.8)


def label_grid(
    image: np.ndarray,
    token: np.ndarray,
    is_class: np.ndarray,
    n_images: int,
    n_tokens: int,
    class_token: bool,
) -> np.ndarray:
    """Scatter per-(image, image-token) labels onto the (n_images, n_tokens) sequence grid.

    ``token`` is the 0-based image-token index of the token-label table; with a class token,
    image token t sits at sequence position t + 1. Returns CLASS_CODE / CONTEXT_CODE per labelled
    position and UNLABELLED elsewhere ([CLS]). Raises ValueError when the labels do not cover
    every image token exactly once.
    """
    image = np.asarray(image, dtype=np.int64)
    position = np.asarray(token, dtype=np.int64) + (1 if class_token else 0)
    wanted = image_tokens(class_token).indices(n_tokens)
    n_image_tokens = len(range(*wanted))
    if image.size and (image.min() < 0 or image.max() >= n_images):
        raise ValueError(f"token labels name images outside 0..{n_images - 1}")
    if position.size and (position.min() < wanted[0] or position.max() >= n_tokens):
        raise ValueError(
            f"token labels index image tokens up to {int(np.max(token))}, but the model has "
            f"{n_image_tokens} image tokens: the label grid does not match the model's token grid"
        )
    grid = np.full((n_images, n_tokens), UNLABELLED, dtype=np.int8)
    grid[image, position] = np.where(np.asarray(is_class, dtype=bool), CLASS_CODE, CONTEXT_CODE)
    counts = np.bincount(image * n_tokens + position, minlength=n_images * n_tokens)
    covered = counts.reshape(n_images, n_tokens)[:, image_tokens(class_token)]
    if image.size != n_images * n_image_tokens or np.any(covered != 1):
        raise ValueError(
            f"token labels must label each of the {n_images} x {n_image_tokens} image tokens once; "
            f"got {image.size} rows ({int(np.count_nonzero(covered == 0))} image tokens unlabelled)"
        )
    return grid


def labelled_values(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labelled tokens' values, flattened in (image, token) order, and whether each is
    class-labelled."""
    labelled = grid != UNLABELLED
    return values[labelled], grid[labelled] == CLASS_CODE


def permutation_rng(seed: int, model: str, analysis: str) -> np.random.Generator:
    """A generator for one analysis of one model, fixed by the config seed (the original's
    permutations were unseeded, METHOD §7.14) and independent of which other targets run."""
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
    (METHOD §4.7), for every row of ``values`` (e.g. blocks) at once.

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
        result = {"diff": nan, "p_value": nan, "p_value_corrected": nan,
                  "permuted": np.full((n_rows, n_permutations), np.nan)}
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
            "p_value_corrected": (1 + np.count_nonzero(permuted >= diff[:, None], axis=1))
            / (n_permutations + 1),
            "permuted": permuted,
        }
    if single:
        result = {key: value[0] for key, value in result.items()}
    return result
