"""Notebook 2 targets on key–value memories (docs/method.md §4.11, §5): figures and the value-vector table.

One function per target, named like the target: ``target(models, output, seed, n_permutations,
n_bootstrap, **options)``, each taking what it needs. The numbers come from
:mod:`class_embedding.analyses.memory_statistics` (which describes the model dicts); here they are
drawn. For a post-norm (GAP) model the CSVs hold both value projections, without the block
post-norm as the paper (plotted; docs/method.md §7.12) and scaled by it (column ``includes_post_norm``;
``plotted`` marks the variant drawn).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D

from ..analyses.memories import (
    LAYER_TYPES,
)
from ..analyses.memory_statistics import (
    accuracy_difference_data,
    agreement_rate_data,
    class_value_data,
    compare_data,
    compositionality_data,
    stimulus_categories,
    token_0_kind,
    value_vector_rows,
)
from ..analyses.statistics import permutation_rng
from ..tables import write_csv
from .plotting import (
    STAR_LINE,
    box_line_color,
    draw_stat_boxes,
    label_blocks,
    model_colors,
    new_figure,
    plot_text,
    remove_unused,
    save_figure,
)

log = logging.getLogger(__name__)

TYPE_COLORS = {"attn": "#1f78b4", "mlp": "#33a02c"}  # "Paired" blue / green, as in notebook 2
MEAN_COLOR = "red"
BASELINE_COLOR = "grey"

# ---------------------------------------------------------------------------------------------
# Shared layout


def type_grid(models: list[dict]):
    """One row per model and one column per layer type (the notebook's 7×2 grids, 10×20).

    Returns the figure and its (axes, model, layer type) panels.
    """
    fig, axes = new_figure(len(models), 2, (10, max(20 / 7 * len(models), 3.2)))
    panels = [(ax, model, layer_type) for row, model in zip(axes, models) for ax, layer_type in zip(row, LAYER_TYPES)]
    return fig, panels


def plotted_panel(data: pd.DataFrame, model: dict, layer_type: str) -> pd.DataFrame:
    keep = (data["model"] == model["name"]) & (data["layer_type"] == layer_type) & data["plotted"]
    return data[keep].sort_values("block")


def star_blocks(ax, positions, significant, height: float) -> None:
    """Grey stars above the significant blocks."""
    x = np.asarray(positions)[np.asarray(significant, dtype=bool)]
    ax.plot(x, np.full(x.size, height), color="grey", linestyle="", **STAR_LINE)


def upper_limit(values, default: float, margin: float) -> float:
    """The paper's axis limit, raised when the data (here: small demo models) reach it."""
    return max(default, float(np.nanmax(values)) + margin) if len(values) else default


# ---------------------------------------------------------------------------------------------
# fig_class_value_agreement (docs/method.md §4.11a)


def draw_type_boxes(ax, panel: pd.DataFrame, layer_type: str) -> None:
    """One box per block from precomputed statistics (no fliers), in the layer type's colour."""
    color = sns.desaturate(TYPE_COLORS[layer_type], 0.75)
    line = box_line_color([TYPE_COLORS[layer_type]])
    stats = panel[["mean", "med", "q1", "q3", "whislo", "whishi"]].to_dict("records")
    draw_stat_boxes(ax, stats, range(len(stats)), color, line)


def fig_class_value_agreement(models: list[dict], output, **_) -> None:
    data = pd.concat([class_value_data(model) for model in models], ignore_index=True)
    top = upper_limit(data["whishi"], 0.85, 0.1)
    fig, panels = type_grid(models)
    for ax, model, layer_type in panels:
        panel = plotted_panel(data, model, layer_type)
        positions = range(len(panel))
        draw_type_boxes(ax, panel, layer_type)
        ax.plot(positions, panel["random_mean"], color=BASELINE_COLOR, linestyle="--", marker="o", markersize=3)
        star_blocks(ax, positions, panel["significant"], top - 0.05)
        label_blocks(ax, positions, panel["block"])
        ax.set_ylim(0, top)
        ax.set_ylabel("Class-value agreement")
        ax.set_title(plot_text(f"{model['display_name']} - {layer_type}"))
    handles = [
        Line2D([], [], color=BASELINE_COLOR, linestyle="--", marker="o", markersize=3, label="random model (mean)")
    ]
    fig.legend(handles=handles, loc="outside upper center")
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_key_value_agreement_rate (docs/method.md §4.11c,d)


def fig_key_value_agreement_rate(models: list[dict], output, seed: int, **_) -> None:
    data = pd.concat([agreement_rate_data(model, seed) for model in models], ignore_index=True)
    # Stripplot jitter drawn from the config seed, so reruns give the same picture.
    jitter = permutation_rng(seed, "fig_key_value_agreement_rate", "jitter")
    fig, panels = type_grid(models)
    for ax, model, layer_type in panels:
        panel = plotted_panel(data, model, layer_type)
        blocks = sorted(panel["block"].unique())
        position = panel["block"].map({b: i for i, b in enumerate(blocks)}).to_numpy()
        ax.scatter(
            position + jitter.uniform(-0.1, 0.1, position.size),
            panel["rate"],
            s=8,
            alpha=0.3,
            color=TYPE_COLORS[layer_type],
            linewidths=0,
        )
        means = panel.groupby("block")[["rate", "random_class_rate"]].mean()
        ax.plot(range(len(blocks)), means["rate"], color=MEAN_COLOR, marker="D")
        ax.plot(
            range(len(blocks)),
            means["random_class_rate"],
            color=BASELINE_COLOR,
            linestyle="--",
            marker="D",
            markersize=3,
        )
        label_blocks(ax, range(len(blocks)), blocks)
        ax.set_ylim(0, 100)
        ax.set_ylabel("Key-value agreement rate (%)")
        ax.set_title(plot_text(f"{model['display_name']} - {layer_type}"))
    handles = [
        Line2D([], [], color=MEAN_COLOR, marker="D", label="mean over classes"),
        Line2D([], [], color=BASELINE_COLOR, linestyle="--", marker="D", markersize=3, label="random class (mean)"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=2)
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_agreement_accuracy_diff (docs/method.md §4.11e)


def fig_agreement_accuracy_diff(models: list[dict], output, seed: int, n_permutations: int, **_) -> None:
    """Every model, as the paper: GAP models have no [CLS], so their token 0 is an image token."""
    data = pd.concat([accuracy_difference_data(model, seed, n_permutations) for model in models], ignore_index=True)
    top = upper_limit(data["diff"], 72, 8)
    bottom = min(-5.0, float(np.nanmin(data["diff"])) - 3)
    fig, panels = type_grid(models)
    for ax, model, layer_type in panels:
        panel = plotted_panel(data, model, layer_type)
        ax.plot(panel["block"], panel["diff"], marker="o", color=TYPE_COLORS[layer_type])
        ax.axhline(0, linestyle="--", color="grey", linewidth=1)
        star_blocks(ax, panel["block"], panel["significant"], top - 3)
        ax.set_xticks(panel["block"])
        ax.set_xlabel("Block")
        ax.set_ylim(bottom, top)
        ax.set_ylabel("Agreement difference (pp)")
        kind = token_0_kind(model)
        quirk = "" if kind == "cls" else f" (token 0: {'an image' if kind == 'image' else 'a ' + kind} token)"
        ax.set_title(plot_text(f"{model['display_name']} - {layer_type}{quirk}"))
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_memory_compositionality (docs/method.md §4.11f)


def fig_memory_compositionality(models: list[dict], output, **_) -> None:
    data = pd.concat([compositionality_data(model) for model in models], ignore_index=True)
    top = upper_limit(data["pct_tokens"], 75, 5)
    ncols = 2
    nrows = math.ceil(len(models) / ncols)
    fig, axes = new_figure(nrows, ncols, (13, 15 / 4 * nrows))
    for ax, model in zip(axes.flat, models):
        for layer_type in LAYER_TYPES:
            panel = plotted_panel(data, model, layer_type)
            ax.plot(panel["block"], panel["pct_tokens"], marker="o", color=TYPE_COLORS[layer_type], label=layer_type)
        ax.set_xticks(range(1, model["num_blocks"] + 1))
        ax.set_xlabel("Block")
        ax.set_ylim(0, top)
        ax.set_ylabel("% tokens matching a memory's class")
        ax.set_title(plot_text(model["display_name"]))
        ax.legend(loc="upper left")
    remove_unused(fig, axes, len(models))
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_memory_compare (docs/method.md §5, notebook 2 "compare_all")


COMPARE_PANELS = [
    ("class_value_agreement", "attn", "attn - class-value agreement"),
    ("class_value_agreement", "mlp", "mlp - class-value agreement"),
    ("key_value_agreement_rate", "attn", "attn - key-value agreement (%)"),
    ("key_value_agreement_rate", "mlp", "mlp - key-value agreement (%)"),
]


def fig_memory_compare(models: list[dict], output, seed: int, n_bootstrap: int, **_) -> None:
    data = pd.concat([compare_data(model, seed, n_bootstrap) for model in models], ignore_index=True)
    colors = model_colors(models)
    scores = data[(data["metric"] == "class_value_agreement") & data["plotted"]]
    limits = {
        "class_value_agreement": (
            min(0.08, float(scores["ci_low"].min()) - 0.02),
            upper_limit(scores["ci_high"], 0.45, 0.03),
        ),
        "key_value_agreement_rate": (0, 85),
    }
    fig, axes = new_figure(1, 4, (13, 3))
    n_layers = int(data["normalized_layer"].max())
    for ax, (metric, layer_type, title) in zip(axes[0], COMPARE_PANELS):
        for model in models:
            line = data[
                (data["model"] == model["name"])
                & (data["metric"] == metric)
                & (data["layer_type"] == layer_type)
                & data["plotted"]
            ]
            color = colors[model["display_name"]]
            ax.plot(line["normalized_layer"], line["mean"], color=color, **STAR_LINE)
            ax.fill_between(
                line["normalized_layer"], line["ci_low"], line["ci_high"], color=color, alpha=0.2, linewidth=0
            )
        ax.set_ylim(*limits[metric])
        ax.set_xticks(range(1, n_layers + 1))
        ax.set_xlabel("Normalized layer")
        ax.set_title(title, fontsize="medium")
    handles = [Line2D([], [], color=color, label=plot_text(name), **STAR_LINE) for name, color in colors.items()]
    fig.legend(handles=handles, loc="outside upper center", ncols=4)
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# tab_value_vector_classes (docs/method.md §4.11g)

TABLE_COLUMNS = [
    "model",
    "display_name",
    "includes_post_norm",
    "layer_type",
    "block",
    "block_index",
    "memory",
    "max_projection",
    "rank",
    "class_index",
    "projection",
    "category",
    "in_stimuli",
]


def tab_value_vector_classes(models: list[dict], output, block_index=None, layer_type="mlp", neurons=None, **_) -> None:
    """The 5 classes each chosen value vector promotes most (largest P[c, k]), with names.

    ``block_index`` (0-based; default L-2, the paper's block index 10 of 12), ``layer_type`` and
    ``neurons`` (memory ids, or a dict of ids by model; default the 5 with the largest maximum
    class projection) come from ``memories.value_vectors`` of the config.
    """
    rows = []
    for model in models:
        rows += value_vector_rows(model, stimulus_categories(model["stimuli"]), block_index, layer_type, neurons)
    write_csv(pd.DataFrame(rows, columns=TABLE_COLUMNS), output.csv)
