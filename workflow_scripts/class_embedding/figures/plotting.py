"""Shared plotting helpers of the figure targets: pyplot-free figures in the paper's style,
colours, box statistics, and writing a figure with its numbers."""

from __future__ import annotations

import colorsys
from pathlib import Path

import matplotlib.cbook
import matplotlib.colors
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from ..analyses.identifiability import CLS, DISTILLATION, IMAGE, REGISTER
from ..data import imagenet_s
from ..tables import atomic_path, write_csv

TOKEN_COLORS = {CLS: "#66c2a5", IMAGE: "#fc8d62"}  # Set2 green / orange, as in the paper
# Prefix tokens the paper's models lack: the next Set2 colours.
TOKEN_COLORS |= {DISTILLATION: "#8da0cb", REGISTER: "#e78ac3"}


CHANCE = 0.5


STAR = "*"


STAR_LINE = {"marker": STAR, "markersize": 9}


BOX_WIDTH = 0.8  # seaborn's default total width of one category's boxes


BOX_SATURATION = 0.75  # seaborn desaturates box fill colours by this much


def plot_text(text) -> str:
    """A user-given name (model display name, class name, panel title) as matplotlib text: its
    ``$`` escaped, so that matplotlib draws it instead of parsing mathtext (``"$5 bill"``, or two
    ``$`` in one label, would otherwise be drawn as maths or stop the figure). Every label drawn
    from a name goes through here; the figure's CSV keeps the name itself."""
    return str(text).replace("$", r"\$")


def model_colors(models: list[dict]) -> dict[str, tuple]:
    return dict(zip([m["display_name"] for m in models], sns.color_palette("Set2", len(models))))


def new_figure(nrows: int, ncols: int, figsize: tuple[float, float], **subplot_kw):
    """A pyplot-free figure (no global state, no backend) in the paper's "whitegrid" style."""
    with sns.axes_style("whitegrid"):
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False, **subplot_kw)
    return fig, axes


def chance_line(ax) -> None:
    ax.axhline(CHANCE, linestyle="--", color="grey", linewidth=1)


def label_blocks(ax, positions, blocks) -> None:
    """Categorical x axis whose ticks read the 1-based block numbers."""
    ax.set_xticks(list(positions), [str(b) for b in blocks])
    ax.set_xlabel("Block")


def save_figure(fig: Figure, data: pd.DataFrame, output) -> None:
    """Write the figure as PDF and PNG and its numbers as CSV, each atomically."""
    with atomic_path(output.pdf) as tmp:
        # No creation date: rerunning on the same data gives the same bytes.
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    with atomic_path(output.png) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    write_csv(data, output.data)


def remove_unused(fig: Figure, axes: np.ndarray, n_used: int) -> None:
    for ax in axes.flat[n_used:]:
        fig.delaxes(ax)


def draw_stat_boxes(ax, stats: list[dict], positions, fill, line_color, line: dict | None = None) -> None:
    """Boxes without fliers from precomputed statistics (``matplotlib.cbook.boxplot_stats``
    keys), seaborn-style: ``fill`` inside, ``line_color`` for the outline, and ``line`` for
    median and whiskers (default: plain lines of ``line_color``)."""
    line = line or {"color": line_color}
    ax.bxp(
        [{**row, "fliers": []} for row in stats],
        positions=positions,
        widths=0.8,
        capwidths=0.4,
        patch_artist=True,
        showfliers=False,
        manage_ticks=False,
        boxprops={"facecolor": fill, "edgecolor": line_color},
        medianprops=line,
        whiskerprops=line,
        capprops={"color": line_color},
    )


def box_line_color(colors) -> tuple:
    """seaborn's automatic box outline grey: 60% of the lowest HLS lightness of the palette."""
    lightness = min(colorsys.rgb_to_hls(*matplotlib.colors.to_rgb(c))[1] for c in colors)
    return (lightness * 0.6,) * 3


def short_name(category: str) -> str:
    """Panel title of a class: the first comma-separated part of its name, lower-case."""
    return category.split(",")[0].strip().lower()


def class_names(mapping: Path, stimuli: pd.DataFrame, n_classes: int) -> list[str]:
    """Class names by index: the dataset's synset mapping, else the stimuli's category names
    (datasets without a mapping file, e.g. CIFAR-100), else "class <i>"."""
    if mapping.is_file():
        return imagenet_s.read_synset_mapping(mapping)[1]
    names = [f"class {index}" for index in range(n_classes)]
    for index, category in zip(stimuli["class_index"], stimuli["category"]):
        names[int(index)] = str(category)
    return names
