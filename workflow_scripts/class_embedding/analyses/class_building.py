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


def label_grid(is_class: np.ndarray, layout: TokenLayout) -> np.ndarray:
    """Put (n_images, n_image_tokens) class labels (from :func:`token_labels.read_token_labels`) on the
    (n_images, n_tokens) sequence grid: image token t sits at sequence position t + (number of prefix
    tokens). CLASS_CODE / CONTEXT_CODE per image token, UNLABELLED at the prefix tokens."""
    is_class = np.asarray(is_class, dtype=bool)
    grid = np.full((is_class.shape[0], layout.n_tokens), UNLABELLED, dtype=np.int8)
    grid[:, layout.image_tokens] = np.where(is_class, CLASS_CODE, CONTEXT_CODE)
    return grid


def labelled_values(values: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labelled tokens' values, flattened in (image, token) order, and whether each is
    class-labelled."""
    labelled = grid != UNLABELLED
    return values[labelled], grid[labelled] == CLASS_CODE
