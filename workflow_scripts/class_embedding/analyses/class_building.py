"""How blocks build the class representation (docs/method.md §4.5–§4.8), on (n_images, n_tokens) arrays.

Pure numpy: no file I/O, no plotting. Arrays are indexed ``[image, token]`` in sequence
positions (prefix tokens, then image tokens), as :mod:`identifiability` expects.
"""

from __future__ import annotations

import numpy as np

from ..models.tokens import IMAGE, TokenLayout
from .identifiability import change_rate, image_tokens

ATTN = "attn"
MLP = "mlp"
SUBLAYERS = (ATTN, MLP)

CLASS = "class"
CONTEXT = "context"
#: Values of :func:`label_grid`: class- and context-labelled image tokens, and unlabelled tokens.
CLASS_CODE, CONTEXT_CODE, UNLABELLED = 1, 0, -1


# ---------------------------------------------------------------------------------------------
# Layer-wise class similarity change rate (docs/method.md §4.5)


def series_label(sublayer: str, token_type: str) -> str:
    """The paper's legend entries: "attn - [CLS]", "mlp - Image", ..."""
    return f"{sublayer} - {'Image' if token_type == IMAGE else token_type}"


def token_selections(layout: TokenLayout) -> dict[str, list[int] | slice]:
    """Token positions of each series: every prefix kind the model has ([CLS], [DIST],
    registers), then the image tokens."""
    selections: dict[str, list[int] | slice] = {kind: layout.positions(kind) for kind in dict.fromkeys(layout.prefix)}
    selections[IMAGE] = image_tokens(layout)
    return selections


def sublayer_change_rates(
    block_input: np.ndarray, sublayers: dict[str, np.ndarray], layout: TokenLayout
) -> dict[str, float]:
    """Fraction of tokens whose correct-class logit of the projected sublayer output exceeds that
    of the projected block input ``hs_{b-1}`` (the MLP too is compared with the block input,
    docs/method.md §7.10), per sublayer and token type."""
    return {
        series_label(sublayer, token_type): change_rate(block_input, logits, tokens)
        for sublayer, logits in sublayers.items()
        for token_type, tokens in token_selections(layout).items()
    }


# ---------------------------------------------------------------------------------------------
# Residual stream composition (docs/method.md §4.6)


def residual_composition(
    output: np.ndarray, block_input: np.ndarray, attn: np.ndarray, mlp: np.ndarray
) -> dict[str, float]:
    """Percent of tokens whose top-1 class of the block output ``hs_b`` equals that of the block
    input (prev), the attention or the MLP output; and of tokens matching none ("composition").

    ``comp`` reproduces the original, which tests the attention condition twice and never the
    MLP one (docs/method.md §7.2); ``comp_corrected`` requires a difference from all three.
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
# Class- vs context-labelled tokens (docs/method.md §2.2, §4.7, §4.8)


def label_grid(
    image: np.ndarray,
    token: np.ndarray,
    is_class: np.ndarray,
    n_images: int,
    n_tokens: int,
    layout: TokenLayout,
) -> np.ndarray:
    """Scatter per-(image, image-token) labels onto the (n_images, n_tokens) sequence grid.

    ``token`` is the 0-based image-token index of the token-label table; image token t sits at
    sequence position t + (number of prefix tokens). Returns CLASS_CODE / CONTEXT_CODE per labelled
    position and UNLABELLED elsewhere (prefix tokens). Raises ValueError when the labels do not cover
    every image token exactly once.
    """
    image = np.asarray(image, dtype=np.int64)
    position = np.asarray(token, dtype=np.int64) + layout.n_prefix
    wanted = image_tokens(layout).indices(n_tokens)
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
    covered = counts.reshape(n_images, n_tokens)[:, image_tokens(layout)]
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
