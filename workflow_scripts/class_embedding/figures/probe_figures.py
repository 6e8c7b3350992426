"""Notebook 4 targets (docs/method.md §4.14, §5): linear probes beside the class projection.

Per-model figures; each takes ``model`` (a dict from ``describe_model``) plus the files it reads
and writes ``output.pdf``, ``output.png`` and the plotted numbers as a tidy CSV ``output.data``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from ..analyses.explain_auc import paper_auc
from ..analyses.statistics import bootstrap_interval
from ..extraction.reader import LAYER_KINDS, load_block, load_correct
from ..models.tokens import TokenLayout
from ..tables import read_table
from .plotting import new_figure, plot_text, save_figure

PANEL_TITLES = {"probe": "linear probing", "projection": "cls projection"}
KIND_COLORS = dict(zip(LAYER_KINDS, sns.color_palette(n_colors=len(LAYER_KINDS))))

# ---------------------------------------------------------------------------------------------
# Probe vs projection accuracy per image token


def first_image_token(model: dict) -> int:
    return TokenLayout.of(model).n_prefix


def probe_token_accuracy(model: dict, accuracy_table: str | Path) -> pd.DataFrame:
    """Probe top-1 accuracy of every (layer, image token) on the stimuli."""
    frame = read_table(accuracy_table).to_pandas()
    frame = frame[frame["token"] >= first_image_token(model)]
    return frame[["kind", "block", "token", "accuracy"]].assign(panel="probe")


def projection_token_accuracy(model: dict) -> pd.DataFrame:
    """The class projection's top-1 accuracy (rank 0) of every (layer, image token) on the stimuli."""
    rows = []
    for kind in LAYER_KINDS:
        for block in range(model["num_blocks"]):
            ranks = load_block(model["layers"], block, "rank", layer=kind)
            accuracy = (ranks == 0).mean(axis=0)
            for token in range(first_image_token(model), ranks.shape[1]):
                rows.append({"kind": kind, "block": block, "token": token, "accuracy": float(accuracy[token])})
    return pd.DataFrame(rows).assign(panel="projection")


def token_summary(per_token: pd.DataFrame, seed: int, n_bootstrap: int) -> pd.DataFrame:
    """Mean over image tokens with a 95% bootstrap interval, per (panel, kind, block)."""
    rng = np.random.default_rng(seed)
    rows = []
    for (panel, kind, block), group in per_token.groupby(["panel", "kind", "block"], sort=False):
        values = group["accuracy"].to_numpy()
        low, high = bootstrap_interval(values, rng, n_bootstrap)
        rows.append(
            {
                "panel": panel,
                "kind": kind,
                "block": int(block) + 1,
                "n_tokens": len(values),
                "accuracy": float(values.mean()),
                "ci_low": low,
                "ci_high": high,
            }
        )
    return pd.DataFrame(rows)


def accuracy_data(model: dict, accuracy_table: str | Path, seed: int, n_bootstrap: int) -> pd.DataFrame:
    per_token = pd.concat([probe_token_accuracy(model, accuracy_table), projection_token_accuracy(model)])
    return token_summary(per_token, seed, n_bootstrap).assign(model=model["name"])


def draw_accuracy_panels(axes, data: pd.DataFrame, model: dict) -> None:
    for ax, panel in zip(axes, PANEL_TITLES):
        for kind in LAYER_KINDS:
            line = data[(data["panel"] == panel) & (data["kind"] == kind)].sort_values("block")
            ax.plot(line["block"], line["accuracy"], color=KIND_COLORS[kind], label=kind)
            ax.fill_between(
                line["block"], line["ci_low"], line["ci_high"], color=KIND_COLORS[kind], alpha=0.2, linewidth=0
            )
        ax.set_title(PANEL_TITLES[panel])
        ax.set_xticks(range(1, model["num_blocks"] + 1))
        ax.set_xlabel("Block")
        ax.set_ylabel("Top-1 accuracy")
        ax.set_ylim(bottom=0)
        ax.legend(title="layer", loc="upper left")


def fig_probe_vs_projection_acc(model: dict, probe_accuracy: str, output, seed: int, n_bootstrap: int, **_) -> None:
    data = accuracy_data(model, probe_accuracy, seed, n_bootstrap)
    fig, axes = new_figure(1, 2, (13, 5), sharey=True)
    draw_accuracy_panels(axes[0], data, model)
    fig.suptitle(plot_text(model["display_name"]))
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# Perturbation test: class-projection explanation vs probe ordering


CURVES = [  # (label, method, direction, colour, line style)
    ("NEG cls-based removal", "grads", "negative", "C0", "-"),
    ("NEG probe removal", "linear_probe", "negative", "C1", "-"),
    ("POS cls-based removal", "grads", "positive", "C0", "--"),
    ("POS probe removal", "linear_probe", "positive", "C1", "--"),
    ("random removal", "random", None, "grey", "-"),
]


def perturbation_data(model: dict, curves_table: str | Path) -> pd.DataFrame:
    """The five curves against the percentage of image tokens removed, with their AUCs.

    Random removal is the mean over its permutations (and both directions, when both are given).
    """
    curves = read_table(curves_table).to_pandas()
    n_image_tokens = TokenLayout.of(model).n_image_tokens
    frames = []
    for label, method, direction, _, _ in CURVES:
        rows = curves[curves["method"] == method]
        if direction is not None:
            rows = rows[rows["direction"] == direction]
        if rows.empty:
            raise ValueError(f"{curves_table}: no rows for method '{method}'{f' ({direction})' if direction else ''}")
        curve = rows.groupby("kept", as_index=False)["accuracy"].mean().sort_values("kept", ascending=False)
        frames.append(
            curve.assign(
                curve=label,
                method=method,
                direction=direction or "mean",
                removed_percent=100 * (n_image_tokens - curve["kept"]) / n_image_tokens,
                auc_paper=float(paper_auc(curve["kept"].to_numpy(), curve["accuracy"].to_numpy(), n_image_tokens)),
            )
        )
    return pd.concat(frames, ignore_index=True).assign(model=model["name"])


def draw_perturbation(ax, data: pd.DataFrame, baseline: float) -> None:
    for label, _, _, color, style in CURVES:
        line = data[data["curve"] == label]
        ax.plot(
            line["removed_percent"],
            line["accuracy"],
            color=color,
            linestyle=style,
            label=f"{label} (AUC {line['auc_paper'].iloc[0]:.3f})",
        )
    ax.axhline(baseline, color="black", linestyle=":", linewidth=1, label=f"baseline accuracy ({baseline:.3f})")
    ax.set_xlabel("Percentage of tokens removed")
    ax.set_ylabel("Top-1 accuracy")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")


def baseline_accuracy(model: dict) -> float:
    """The unperturbed model's accuracy on the stimuli (all image tokens kept)."""
    return float(np.mean(load_correct(model["predictions"])))


def fig_probe_perturbation(model: dict, curves: str, output, **_) -> None:
    data = perturbation_data(model, curves)
    baseline = baseline_accuracy(model)
    fig, axes = new_figure(1, 1, (6, 4))
    draw_perturbation(axes[0, 0], data, baseline)
    axes[0, 0].set_title(plot_text(model["display_name"]))
    save_figure(fig, data.assign(baseline_accuracy=baseline), output)


def fig_linear_probing_all(
    model: dict, probe_accuracy: str, curves: str, output, seed: int, n_bootstrap: int, **_
) -> None:
    accuracy = accuracy_data(model, probe_accuracy, seed, n_bootstrap)
    perturbation = perturbation_data(model, curves)
    baseline = baseline_accuracy(model)
    fig, axes = new_figure(1, 3, (13, 4))
    draw_accuracy_panels(axes[0, :2], accuracy, model)
    axes[0, 1].sharey(axes[0, 0])
    draw_perturbation(axes[0, 2], perturbation, baseline)
    axes[0, 2].set_title("perturbation test")
    fig.suptitle(plot_text(model["display_name"]))
    data = pd.concat(
        [accuracy, perturbation.assign(panel="perturbation", baseline_accuracy=baseline)], ignore_index=True
    )
    save_figure(fig, data, output)
