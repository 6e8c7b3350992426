"""Notebook 1 targets (docs/method.md §5): identifiability tables and figures from the extracted tables.

One function per target, named like the target; each takes the trained ``models`` (dicts in
config order, the rule's ``params.models``) and the rule's ``output`` and writes its files atomically. Figures
write ``output.pdf``, ``output.png`` and the plotted numbers as a tidy CSV ``output.data``; tables
write ``output.csv``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..analyses.box_statistics import BOX_STATS, box_stats
from ..analyses.identifiability import (
    CLS,
    DISTILLATION,
    IMAGE,
    REGISTER,
    SIGNIFICANCE_LEVEL,
    accuracy,
    change_rate,
    group_blocks,
    identifiability_rates,
    identifiable_token_counts,
    image_tokens,
    token_types,
    wilcoxon_greater,
)
from ..analyses.token_states import block_ci
from ..extraction.reader import load_block, load_correct
from ..models.tokens import TokenLayout
from ..tables import write_csv
from .plotting import (
    BOX_SATURATION,
    BOX_WIDTH,
    CHANCE,
    STAR_LINE,
    TOKEN_COLORS,
    box_line_color,
    chance_line,
    label_blocks,
    model_colors,
    new_figure,
    plot_text,
    remove_unused,
    save_figure,
)

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Loading


def random_twin(model: dict) -> dict | None:
    """The model's random twin as a model dict (architecture fields inherited), or None."""
    twin = model.get("random_twin")
    if not twin:
        return None
    return {
        **model,
        "name": twin["name"],
        "layers": twin["layers"],
        "predictions": twin["predictions"],
        "display_name": f"{model['display_name']} (random)",
        "random_twin": None,
    }


# ---------------------------------------------------------------------------------------------
# Tables (docs/method.md §4.1)

TABLE_COLUMNS = [
    "model",
    "display_name",
    "block",
    "n_images",
    "n_image_tokens",
    "pct_tokens",
    "pct_images",
    "n_identifiable_images",
    "pct_tokens_paper",
    "pct_images_paper",
    "n_identifiable_images_paper",
    "accuracy",
]
TABLE_COLUMNS_RANDOM = ["trained_model", *TABLE_COLUMNS]


def last_block_rates(model: dict) -> dict:
    """Identifiability rates of the last residual stream, corrected and paper convention."""
    last = model["num_blocks"] - 1
    ranks = load_block(model["layers"], last, "rank")
    correct = load_correct(model["predictions"])
    if correct.size != ranks.shape[0]:
        raise ValueError(f"{model['name']}: {correct.size} predictions but {ranks.shape[0]} images in hs_{last}")
    corrected = identifiability_rates(ranks, image_tokens(TokenLayout.of(model)))
    paper = identifiability_rates(ranks, image_tokens(TokenLayout.of(model), paper_convention=True))
    return {
        "model": model["name"],
        "display_name": model["display_name"],
        "block": last + 1,
        "n_images": corrected["n_images"],
        "n_image_tokens": corrected["n_image_tokens"],
        "pct_tokens": corrected["pct_tokens"],
        "pct_images": corrected["pct_images"],
        "n_identifiable_images": corrected["n_identifiable_images"],
        # The original drops token 0 even without a class token (docs/method.md §7.9).
        "pct_tokens_paper": paper["pct_tokens"],
        "pct_images_paper": paper["pct_images"],
        "n_identifiable_images_paper": paper["n_identifiable_images"],
        "accuracy": accuracy(correct),
    }


def tab_identifiability_rates(models: list[dict], output, seed=None) -> None:
    rows = [last_block_rates(model) for model in models]
    write_csv(pd.DataFrame(rows, columns=TABLE_COLUMNS), output.csv)


def tab_identifiability_random(models: list[dict], output, seed=None) -> None:
    rows = [
        {"trained_model": model["name"], **last_block_rates(twin)}
        for model in models
        if (twin := random_twin(model)) is not None
    ]
    # Header only when no model has a twin, so downstream readers still find the columns.
    write_csv(pd.DataFrame(rows, columns=TABLE_COLUMNS_RANDOM), output.csv)


# ---------------------------------------------------------------------------------------------
# fig_identifiability_hist (docs/method.md §4.1, first commit)

MAX_HIST_BINS = 50


def count_bins(max_count: int) -> np.ndarray:
    """Histogram edges for integer counts 0..max_count: one bin per count when they fit in 50."""
    if max_count + 1 <= MAX_HIST_BINS:
        return np.arange(max_count + 2) - 0.5
    return np.linspace(0, max_count, MAX_HIST_BINS + 1)


def fig_identifiability_hist(models: list[dict], output, seed=None) -> None:
    frames = []
    for model in models:
        ranks = load_block(model["layers"], model["num_blocks"] - 1, "rank")
        corrected_tokens = image_tokens(TokenLayout.of(model))
        paper_tokens = image_tokens(TokenLayout.of(model), paper_convention=True)
        edges = count_bins(ranks[:, corrected_tokens].shape[1])
        paper, _ = np.histogram(identifiable_token_counts(ranks, paper_tokens), edges)
        corrected, _ = np.histogram(identifiable_token_counts(ranks, corrected_tokens), edges)
        frames.append(
            pd.DataFrame(
                {
                    "model": model["name"],
                    "display_name": model["display_name"],
                    "bin_left": edges[:-1],
                    "bin_right": edges[1:],
                    "n_images": paper,
                    "n_images_corrected": corrected,
                }
            )
        )
    data = pd.concat(frames, ignore_index=True)

    ncols = min(3, len(models))
    nrows = math.ceil(len(models) / ncols)
    fig, axes = new_figure(nrows, ncols, (13, 3.5 * nrows))
    for ax, model in zip(axes.flat, models):
        panel = data[data["model"] == model["name"]]
        # Paper convention plotted; GAP's corrected counts are in the CSV.
        edges = np.append(panel["bin_left"], panel["bin_right"].iloc[-1])
        # Each bin's left edge stands in for its images, so hist draws the precomputed counts.
        ax.hist(edges[:-1], edges, weights=panel["n_images"], color=TOKEN_COLORS[IMAGE])
        ax.set_title(plot_text(model["display_name"]))
        ax.set_xlabel("Identifiable image tokens per image")
        ax.set_ylabel("Images")
    remove_unused(fig, axes, len(models))
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_identifiability_evolution (docs/method.md §4.2)


def evolution_data(model: dict) -> pd.DataFrame:
    """Per block and token type: CI box statistics and the Wilcoxon p vs the random twin."""
    twin = random_twin(model)
    rows = []
    for block in range(model["num_blocks"]):
        ci = block_ci(model, block)
        if twin is None:
            p_value = np.nan
        else:
            # All tokens including [CLS], paired by image and token (docs/method.md §4.2).
            p_value = wilcoxon_greater(ci, block_ci(twin, block))
        for token_type, values in token_types(ci, TokenLayout.of(model)).items():
            rows.append(
                {
                    "model": model["name"],
                    "display_name": model["display_name"],
                    "random_model": twin["name"] if twin else None,
                    "block": block + 1,
                    "token_type": token_type,
                    "n_values": values.size,
                    **box_stats(values),
                    "p_value": p_value,
                    "p_value_rounded": round(p_value, 3),
                    "significant": bool(p_value < SIGNIFICANCE_LEVEL),
                }
            )
        log.info("%s block %d: p = %.3g", model["name"], block + 1, p_value)
    return pd.DataFrame(rows)


def box_fill(token_type: str) -> tuple:
    return sns.desaturate(TOKEN_COLORS[token_type], BOX_SATURATION)


def draw_boxes(ax, panel: pd.DataFrame, hue_order: list[str]) -> None:
    """Seaborn-style dodged boxplots (no fliers) from precomputed statistics."""
    blocks = sorted(panel["block"].unique())
    width = BOX_WIDTH / len(hue_order)
    line_color = box_line_color([TOKEN_COLORS[t] for t in hue_order])
    for i, token_type in enumerate(hue_order):
        rows = panel[panel["token_type"] == token_type].sort_values("block")
        offset = (i - (len(hue_order) - 1) / 2) * width
        positions = np.arange(len(blocks)) + offset
        stats = [{**row, "fliers": []} for row in rows[BOX_STATS].to_dict("records")]
        ax.bxp(
            stats,
            positions=positions,
            widths=width,
            capwidths=width / 2,
            patch_artist=True,
            showfliers=False,
            manage_ticks=False,
            boxprops={"facecolor": box_fill(token_type), "edgecolor": line_color},
            medianprops={"color": line_color, "solid_capstyle": "butt"},
            whiskerprops={"color": line_color, "solid_capstyle": "butt"},
            capprops={"color": line_color},
        )
    label_blocks(ax, range(len(blocks)), blocks)


def fig_identifiability_evolution(models: list[dict], output, seed=None) -> None:
    data = pd.concat([evolution_data(model) for model in models], ignore_index=True)

    fig, axes = new_figure(len(models), 1, (13, 4.3 * len(models)))
    for ax, model in zip(axes[:, 0], models):
        panel = data[data["model"] == model["name"]]
        hue_order = [t for t in (CLS, DISTILLATION, REGISTER, IMAGE) if t in set(panel["token_type"])]
        draw_boxes(ax, panel, hue_order)
        chance_line(ax)
        per_block = panel.drop_duplicates("block").sort_values("block").reset_index(drop=True)
        star_x = per_block.index[per_block["significant"]]
        ax.plot(star_x, np.full(len(star_x), 1.1), color="grey", linestyle="", **STAR_LINE)
        ax.set_ylim(0, 1.17)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("Class identifiability")
        ax.set_title(plot_text(model["display_name"]))
        line_color = box_line_color([TOKEN_COLORS[t] for t in hue_order])
        handles = [Patch(facecolor=box_fill(t), edgecolor=line_color, label=t) for t in hue_order]
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5))
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_identifiability_mean_evolution (docs/method.md §4.3)

PANEL_TITLES = {CLS: "[CLS] token", IMAGE: "image tokens"}


def mean_evolution_data(model: dict) -> pd.DataFrame:
    """Mean CI per token type and normalized block (``block_group`` blocks averaged)."""
    per_block: dict[str, list[float]] = {}
    for block in range(model["num_blocks"]):
        for token_type, values in token_types(block_ci(model, block), TokenLayout.of(model)).items():
            per_block.setdefault(token_type, []).append(float(values.mean()))
    group = model.get("block_group", 1)
    frames = []
    for token_type, means in per_block.items():
        grouped = group_blocks(np.array(means), group)
        normalized = np.arange(1, grouped.size + 1)
        frames.append(
            pd.DataFrame(
                {
                    "model": model["name"],
                    "display_name": model["display_name"],
                    "token_type": token_type,
                    "normalized_block": normalized,
                    "first_block": (normalized - 1) * group + 1,
                    "last_block": normalized * group,
                    "mean_ci": grouped,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def fig_identifiability_mean_evolution(models: list[dict], output, seed=None) -> None:
    data = pd.concat([mean_evolution_data(model) for model in models], ignore_index=True)
    colors = model_colors(models)

    fig, axes = new_figure(1, 2, (13, 3.5), sharey=True)
    for ax, token_type in zip(axes[0], (CLS, IMAGE)):
        panel = data[data["token_type"] == token_type]
        for name, line in panel.groupby("display_name", sort=False):
            ax.plot(line["normalized_block"], line["mean_ci"], color=colors[name], **STAR_LINE)
        chance_line(ax)
        ax.set_title(PANEL_TITLES[token_type])
        ax.set_ylim(0.4, 1.05)
        # Models of different depth share normalized blocks; the paper hides their numbers.
        n_normalized = int(data["normalized_block"].max())
        ax.set_xticks(range(1, n_normalized + 1), [""] * n_normalized)
        ax.set_xlabel("Normalized block")
    axes[0, 0].set_ylabel("Mean class identifiability")
    handles = [Line2D([], [], color=color, label=plot_text(name), **STAR_LINE) for name, color in colors.items()]
    handles.append(Line2D([], [], color="grey", linestyle="--", linewidth=1, label="Chance Level"))
    fig.legend(handles=handles, loc="outside right center")
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_change_rate (docs/method.md §4.4)


def change_rate_data(model: dict) -> pd.DataFrame:
    """Fraction of image tokens whose correct-class logit rises across each block b >= 1."""
    paper_tokens = image_tokens(TokenLayout.of(model), paper_convention=True)
    corrected_tokens = image_tokens(TokenLayout.of(model))
    rows = []
    before = load_block(model["layers"], 0, "logit")
    for block in range(1, model["num_blocks"]):
        after = load_block(model["layers"], block, "logit")
        rows.append(
            {
                "model": model["name"],
                "display_name": model["display_name"],
                "block": block + 1,
                # The original drops token 0 even without a class token (docs/method.md §7.9).
                "rate_paper": change_rate(before, after, paper_tokens),
                "rate_corrected": change_rate(before, after, corrected_tokens),
            }
        )
        before = after
    return pd.DataFrame(rows)


def fig_change_rate(models: list[dict], output, seed=None) -> None:
    data = pd.concat([change_rate_data(model) for model in models], ignore_index=True)

    ncols = 2
    nrows = math.ceil(len(models) / ncols)
    fig, axes = new_figure(nrows, ncols, (13, 13 / 4 * nrows))
    low = min(CHANCE, float(data["rate_paper"].min()) - 0.02) if len(data) else CHANCE
    for ax, model in zip(axes.flat, models):
        panel = data[data["model"] == model["name"]]
        ax.plot(panel["block"], panel["rate_paper"], marker="o", color=TOKEN_COLORS[IMAGE])
        ax.set_xticks(range(2, model["num_blocks"] + 1))
        ax.set_ylim(low, 1.02)
        ax.set_title(plot_text(model["display_name"]))
        ax.set_xlabel("Block")
        ax.set_ylabel("Change rate")
    remove_unused(fig, axes, len(models))
    save_figure(fig, data, output)
