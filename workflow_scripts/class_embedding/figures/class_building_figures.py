"""Notebook 2 figures on how blocks build the class representation (docs/method.md §4.5–§4.7, §5).

Built from the extraction tables alone (no model is re-run); the statistics they draw, and the table
``tab_context_change_rate_diff``, are computed in :mod:`class_embedding.analyses.class_building_statistics`.
Each figure takes ``model`` (a dict from ``describe_model``) and writes ``output.pdf``,
``output.png`` and the plotted numbers as a tidy CSV ``output.data``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns

from ..analyses.box_statistics import BOX_STATS
from ..analyses.class_building import ATTN, MLP, series_label
from ..analyses.class_building_statistics import (
    CHANGE_RATE,
    COMPOSITION,
    LABEL_ORDER,
    class_building_data,
    context_identifiability_data,
)
from ..analyses.identifiability import CLS, DISTILLATION, IMAGE, REGISTER
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

# ---------------------------------------------------------------------------------------------
# fig_class_building_{model} (docs/method.md §4.5, §4.6)

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
# fig_context_identifiability_{model} (docs/method.md §4.7)

PANEL_COLUMNS = 6


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
