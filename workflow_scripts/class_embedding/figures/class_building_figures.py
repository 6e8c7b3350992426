"""Notebook 2 targets on how blocks build the class representation (docs/method.md §4.5–§4.8, §5).

Built from the extraction tables alone (no model is re-run). Per-model figures take ``model`` (a
dict from ``describe_model``); the table takes every trained model as ``models``. Figures write
``output.pdf``, ``output.png`` and the plotted numbers as a tidy CSV ``output.data``; the table
writes ``output.csv``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import seaborn as sns

from ..analyses.box_statistics import BOX_STATS, box_stats
from ..analyses.class_building import (
    ATTN,
    CLASS,
    CONTEXT,
    MLP,
    SUBLAYERS,
    label_grid,
    labelled_values,
    residual_composition,
    series_label,
    sublayer_change_rates,
)
from ..analyses.identifiability import CLS, DISTILLATION, IMAGE, REGISTER, SIGNIFICANCE_LEVEL
from ..analyses.statistics import permutation_rng, permutation_test
from ..analyses.token_labels import read_token_labels
from ..errors import InputError
from ..extraction.reader import load_block, load_top1
from ..models.tokens import TokenLayout
from ..tables import write_csv
from .identifiability_figures import block_ci
from .plotting import (
    BOX_SATURATION,
    STAR_LINE,
    box_line_color,
    chance_line,
    draw_stat_boxes,
    new_figure,
    plot_text,
    remove_unused,
    save_figure,
)

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
#: Stacked in this order; legend entries as in the paper.
COMPOSITION_LABELS = {"prev": "previous", "attn": "attn", "mlp": "mlp", "comp": "composition"}
PAIRED = sns.color_palette("Paired")
SERIES_COLORS = {
    series_label(ATTN, CLS): PAIRED[0],
    series_label(ATTN, IMAGE): PAIRED[1],  # #1f78b4
    series_label(MLP, CLS): PAIRED[2],
    series_label(MLP, IMAGE): PAIRED[3],  # #33a02c
    series_label(ATTN, DISTILLATION): PAIRED[4],
    series_label(MLP, DISTILLATION): PAIRED[5],
    series_label(ATTN, REGISTER): PAIRED[6],
    series_label(MLP, REGISTER): PAIRED[7],
}


def class_building_data(model: dict) -> pd.DataFrame:
    """Per block b >= 1 (1-based b+1): sublayer change rates and residual composition, long."""
    extract = model["extract_dir"]
    input_logits = load_block(extract, 0, "logit")
    input_top1 = load_top1(extract, 0, "hs")
    rows = []
    for block in range(1, model["num_blocks"]):
        sublayer_logits = {s: load_block(extract, block, "logit", s) for s in SUBLAYERS}
        rates = sublayer_change_rates(input_logits, sublayer_logits, TokenLayout.of(model))
        output_top1 = load_top1(extract, block, "hs")
        composition = residual_composition(
            output_top1, input_top1, load_top1(extract, block, ATTN), load_top1(extract, block, MLP)
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
        input_logits = load_block(extract, block, "logit")
        input_top1 = output_top1
    return pd.DataFrame(rows, columns=["model", "display_name", "block", "panel", "series", "value"])


def draw_change_rates(ax, panel: pd.DataFrame, num_blocks: int) -> None:
    for series, line in panel.groupby("series", sort=False):
        ax.plot(line["block"], line["value"], color=SERIES_COLORS[series], label=series, **STAR_LINE)
    chance_line(ax)
    ax.set_xticks(range(2, num_blocks + 1))
    ax.set_ylim(0, 1)
    ax.set_xlabel("Block")
    ax.set_ylabel("Class similarity change rate")
    ax.set_title("class similarity change rate")
    ax.legend(loc="lower left")


def draw_composition(ax, panel: pd.DataFrame) -> None:
    """Stacked bars (overlapping categories, so totals exceed 100%), as pandas' bar(stacked)."""
    table = panel.pivot(index="block", columns="series", values="value")
    bottom = np.zeros(len(table))
    colors = sns.color_palette("Set2", len(COMPOSITION_LABELS))
    for (series, label), color in zip(COMPOSITION_LABELS.items(), colors):
        ax.bar(table.index, table[series], bottom=bottom, width=0.5, color=color, label=label)
        bottom += table[series].to_numpy()
    ax.set_xticks(table.index)
    ax.set_xlabel("Block")
    ax.set_ylabel("% of tokens")
    ax.set_title("residual stream composition")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))


def fig_class_building(model: dict, output, seed=None) -> None:
    data = class_building_data(model)
    fig, axes = new_figure(1, 2, (13, 5))
    draw_change_rates(axes[0, 0], data[data["panel"] == CHANGE_RATE], model["num_blocks"])
    draw_composition(axes[0, 1], data[data["panel"] == COMPOSITION])
    fig.suptitle(plot_text(model["display_name"]))
    save_figure(fig, data, output)


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

PANEL_COLUMNS = 6


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


def draw_label_boxes(ax, panel: pd.DataFrame) -> None:
    """Context and class boxes (no fliers) from precomputed statistics, seaborn-style."""
    colors = sns.color_palette(n_colors=len(LABEL_ORDER))
    line_color = box_line_color(colors)
    line = {"color": line_color, "solid_capstyle": "butt"}
    rows = panel.set_index("label").loc[list(LABEL_ORDER)]
    for position, (label, color) in enumerate(zip(LABEL_ORDER, colors)):
        stats = rows.loc[label, BOX_STATS].astype(float).to_dict()
        if np.isnan(stats["med"]):
            continue  # no token with this label
        fill = sns.desaturate(color, BOX_SATURATION)
        draw_stat_boxes(ax, [stats], [position], fill, line_color, line)
    ax.set_xticks(range(len(LABEL_ORDER)), LABEL_ORDER)
    ax.set_xlim(-0.6, len(LABEL_ORDER) - 0.4)


def fig_context_identifiability(model: dict, output, seed: int, n_permutations: int) -> None:
    data = context_identifiability_data(model, seed, n_permutations)
    n_blocks = model["num_blocks"]
    ncols = min(PANEL_COLUMNS, n_blocks)
    nrows = math.ceil(n_blocks / ncols)
    fig, axes = new_figure(nrows, ncols, (13, 2.5 * nrows), sharey=True)
    for ax, (block, panel) in zip(axes.flat, data.groupby("block")):
        draw_label_boxes(ax, panel)
        ax.set_title(f"block {block}" + (" *" if panel["significant"].iloc[0] else ""))
        ax.set_ylim(0, 1.05)
    for ax in axes[:, 0]:
        ax.set_ylabel("Class identifiability")
    remove_unused(fig, axes, n_blocks)
    fig.suptitle(plot_text(model["display_name"]))
    save_figure(fig, data, output)


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
    extract = model["extract_dir"]
    return load_block(extract, block, "logit", ATTN) - load_block(extract, block - 1, "logit")


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
