"""Statistics of the class-building figures and table (docs/method.md §4.5–§4.8), per model, computed
from the extraction tables and token labels: the sublayer change rates and residual composition, and
the class- vs context-labelled permutation tests; the figures in
:mod:`class_embedding.figures.class_building_figures` only draw them.

Per-model statistics take ``model`` (a dict from ``describe_model``); the table
``tab_context_change_rate_diff`` takes every trained model as ``models`` and writes ``output.csv``.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import InputError
from ..extraction.reader import load_block, load_top1
from ..models.tokens import TokenLayout
from ..tables import write_csv
from .box_statistics import BOX_STATS, box_stats
from .class_building import (
    ATTN,
    CLASS,
    CONTEXT,
    MLP,
    SUBLAYERS,
    label_grid,
    labelled_values,
    residual_composition,
    sublayer_change_rates,
)
from .identifiability import SIGNIFICANCE_LEVEL
from .statistics import permutation_rng, permutation_test
from .token_labels import read_token_labels
from .token_states import block_ci

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Loading


def load_label_grid(model: dict, n_images: int, n_tokens: int) -> np.ndarray:
    """Class/context label of every sequence position (see :func:`class_building.label_grid`) of the
    model's (n_images, n_tokens) extraction grid."""
    path, layout = model["token_labels"], TokenLayout.of(model)
    is_class = read_token_labels(path, layout, model=model["name"])
    if (n_images, n_tokens) != (is_class.shape[0], layout.n_tokens):
        raise InputError(
            f"{path} does not fit {model['name']} ({n_images} images, {n_tokens} tokens, "
            f"token_grid {layout.grid_name}): it labels {is_class.shape[0]} images of {layout.n_image_tokens} "
            f"image tokens, {layout.n_tokens} tokens with the prefix. Check the model's token_grid and dataset "
            f"in the config, or delete {path} so that it is rebuilt."
        )
    return label_grid(is_class, layout)


# ---------------------------------------------------------------------------------------------
# fig_class_building_{model} (docs/method.md §4.5, §4.6)

CHANGE_RATE = "change_rate"
COMPOSITION = "composition"


def class_building_data(model: dict) -> pd.DataFrame:
    """Per block b >= 1 (1-based b+1): sublayer change rates and residual composition, long."""
    layers = model["layers"]
    input_logits = load_block(layers, 0, "logit")
    input_top1 = load_top1(layers, 0, "hs")
    rows = []
    for block in range(1, model["num_blocks"]):
        sublayer_logits = {s: load_block(layers, block, "logit", s) for s in SUBLAYERS}
        rates = sublayer_change_rates(input_logits, sublayer_logits, TokenLayout.of(model))
        output_top1 = load_top1(layers, block, "hs")
        composition = residual_composition(
            output_top1, input_top1, load_top1(layers, block, ATTN), load_top1(layers, block, MLP)
        )
        for panel, values in ((CHANGE_RATE, rates), (COMPOSITION, composition)):
            rows += [
                {
                    "model": model["name"],
                    "display_name": model["display_name"],
                    "block": block + 1,
                    "panel": panel,
                    "series": series,
                    "value": value,
                }
                for series, value in values.items()
            ]
        log.info("%s block %d: %s, %s", model["name"], block + 1, rates, composition)
        input_logits = load_block(layers, block, "logit")
        input_top1 = output_top1
    return pd.DataFrame(rows, columns=["model", "display_name", "block", "panel", "series", "value"])


# ---------------------------------------------------------------------------------------------
# Class- vs context-labelled tokens: the permutation tests (docs/method.md §4.7, §4.8)

LABEL_ORDER = (CONTEXT, CLASS)


def context_test(
    model: dict, values_per_block: list[np.ndarray], analysis: str, seed: int, n_permutations: int
) -> tuple[dict, np.ndarray, np.ndarray]:
    """Stack the labelled tokens' values of each block and test class > context on all blocks.

    Returns the test result (one entry per block), the stacked values and the class mask.
    """
    grid = load_label_grid(model, *values_per_block[0].shape)
    stacked, is_class = [], None
    for values in values_per_block:
        block_values, is_class = labelled_values(values, grid)
        stacked.append(block_values)
    stacked = np.array(stacked, dtype=np.float64)
    rng = permutation_rng(seed, model["name"], analysis)
    return permutation_test(stacked, is_class, n_permutations, rng), stacked, is_class


def significance_columns(result: dict, index: int, n_permutations: int) -> dict:
    return {
        "diff": float(result["diff"][index]),
        "p_value": float(result["p_value"][index]),
        "p_value_corrected": float(result["p_value_corrected"][index]),
        "significant": bool(result["p_value"][index] < SIGNIFICANCE_LEVEL),
        "n_permutations": n_permutations,
    }


# ---------------------------------------------------------------------------------------------
# fig_context_identifiability_{model} (docs/method.md §4.7)


def context_identifiability_data(model: dict, seed: int, n_permutations: int) -> pd.DataFrame:
    """Per block and label: CI box statistics of the labelled image tokens, and the test."""
    blocks = range(model["num_blocks"])
    result, values, is_class = context_test(
        model, [block_ci(model, b) for b in blocks], "context_identifiability", seed, n_permutations
    )
    rows = []
    for block in blocks:
        for label in LABEL_ORDER:
            group = values[block, is_class == (label == CLASS)]
            stats = box_stats(group) if group.size else dict.fromkeys(BOX_STATS, np.nan)
            rows.append(
                {
                    "model": model["name"],
                    "display_name": model["display_name"],
                    "block": block + 1,
                    "label": label,
                    "n_values": group.size,
                    **stats,
                    **significance_columns(result, block, n_permutations),
                }
            )
        log.info(
            "%s block %d: diff %.4f, p %.4f", model["name"], block + 1, result["diff"][block], result["p_value"][block]
        )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# tab_context_change_rate_diff (docs/method.md §4.8)

TABLE_COLUMNS = [
    "model",
    "display_name",
    "layer",
    "paper_index",
    "block",
    "diff",
    "p_value",
    "p_value_corrected",
    "significant",
    "n_class_tokens",
    "n_context_tokens",
    "n_permutations",
]


def attention_delta(model: dict, block: int) -> np.ndarray:
    """Δ_attn: correct-class logit of the projected attention output of ``block`` minus that of
    the block input hs_{block-1} (docs/method.md §4.5)."""
    layers = model["layers"]
    return load_block(layers, block, "logit", ATTN) - load_block(layers, block - 1, "logit")


def context_change_rate_rows(model: dict, seed: int, n_permutations: int) -> list[dict]:
    blocks = range(1, model["num_blocks"])
    if not blocks:
        return []
    result, _, is_class = context_test(
        model,
        [attention_delta(model, b) for b in blocks],
        "context_change_rate",
        seed,
        n_permutations,
    )
    n_class = int(np.count_nonzero(is_class))
    return [
        {
            "model": model["name"],
            "display_name": model["display_name"],
            "layer": ATTN,
            # The original's row label: 0..L-2 for the 0-based blocks 1..L-1 (docs/method.md §7.11).
            "paper_index": block - 1,
            "block": block + 1,
            **significance_columns(result, i, n_permutations),
            "n_class_tokens": n_class,
            "n_context_tokens": is_class.size - n_class,
        }
        for i, block in enumerate(blocks)
    ]


def tab_context_change_rate_diff(models: list[dict], output, seed: int, n_permutations: int) -> None:
    rows = [row for model in models for row in context_change_rate_rows(model, seed, n_permutations)]
    write_csv(pd.DataFrame(rows, columns=TABLE_COLUMNS), output.csv)
