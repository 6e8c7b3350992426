"""Notebook 3 perturbation targets (docs/method.md §4.13, §5): the negative and positive perturbation
curves and the table of their AUCs, from the tables of the ``explain_perturbation`` rule.

Each takes ``models`` (dicts from ``describe_model`` plus the paths ``curves`` and ``correct``)
and the rule's ``output``; figures write ``output.pdf``, ``output.png`` and the plotted numbers
as ``output.data``, the table ``output.csv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import tables
from ..analyses.explain_auc import auc_table, paper_auc, read_correct
from ..models.tokens import TokenLayout
from ..tables import write_csv
from .plotting import new_figure, plot_text, save_figure

CURVES = {  # method -> (label, colour)
    "grads": ("cls-emb removal", "C0"),
    "grads_chefer": ("chefer removal", "C1"),
    "random": ("random removal", "grey"),
}
TITLES = {"negative": "negative perturbation", "positive": "positive perturbation"}


def curve_data(model: dict, curves_path: str | Path, direction: str) -> pd.DataFrame:
    """The three curves of one direction (random = mean over its permutations) against the
    percentage of image tokens removed, (N − n)/N·100, with the paper's x (i/N·100 for the
    i-th point of its reversed N − 1 values, off by one token, docs/method.md §7.4) beside it."""
    frame = tables.read_table(curves_path).to_pandas()
    n_tokens = TokenLayout.of(model).n_image_tokens
    rows = frame[(frame["direction"] == direction) & frame["method"].isin(list(CURVES))]
    curve = rows.groupby(["method", "kept"], observed=True, as_index=False)["accuracy"].mean()
    curve["method"] = curve["method"].astype(str)
    curve["label"] = curve["method"].map(lambda m: CURVES[m][0])
    curve["removed_percent"] = 100 * (n_tokens - curve["kept"]) / n_tokens
    curve["removed_percent_paper"] = np.where(
        curve["kept"] < n_tokens, 100 * (n_tokens - 1 - curve["kept"]) / n_tokens, np.nan
    )
    curve["direction"] = direction
    curve["model"] = model["name"]
    curve["display_name"] = model["display_name"]
    return curve.sort_values(["method", "kept"], ascending=[True, False], ignore_index=True)


def draw_curves(ax, data: pd.DataFrame, n_tokens: int, aucs: dict[str, float]) -> float:
    for method, (label, color) in CURVES.items():
        line = data[data["method"] == method]
        if line.empty:
            continue
        auc = aucs.get(method)
        ax.plot(
            line["removed_percent"], line["accuracy"], color=color,
            label=label if auc is None else f"{label} (AUC {auc:.3f})",
        )  # fmt: skip
    baseline = float(data.loc[data["kept"] == n_tokens, "accuracy"].iloc[0])
    ax.axhline(baseline, color="black", linestyle="--", linewidth=1, label="baseline accuracy")
    ax.set_xlabel("percentage of tokens removed")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 1)
    ax.legend(fontsize="small")
    return baseline


def perturbation_figure(models: list[dict], direction: str, output) -> None:
    fig, axes = new_figure(1, len(models), (6 * len(models), 4))
    frames = []
    for ax, model in zip(axes[0], models):
        n_tokens = TokenLayout.of(model).n_image_tokens
        data = curve_data(model, model["curves"], direction)
        aucs = {}
        for method in CURVES:
            line = data[data["method"] == method].sort_values("kept")
            if not line.empty:
                aucs[method] = float(paper_auc(line["kept"].to_numpy(), line["accuracy"].to_numpy(), n_tokens))
        baseline = draw_curves(ax, data, n_tokens, aucs)
        ax.set_title(plot_text(f"{model['display_name']}: {TITLES[direction]}"))
        frames.append(data.assign(auc_paper=data["method"].map(aucs), baseline_accuracy=baseline))
    save_figure(fig, pd.concat(frames, ignore_index=True), output)


def fig_perturbation_neg(models: list[dict], output, **_) -> None:
    perturbation_figure(models, "negative", output)


def fig_perturbation_pos(models: list[dict], output, **_) -> None:
    perturbation_figure(models, "positive", output)


TABLE_COLUMNS = [
    "model", "display_name", "method", "direction", "n_images", "n_kept_counts",
    "auc_paper", "auc_paper_low", "auc_paper_high",
    "auc_trapezoid", "auc_trapezoid_low", "auc_trapezoid_high",
]  # fmt: skip


def tab_explain_perturbation_auc(models: list[dict], output, seed: int, bootstrap: int, **_) -> None:
    """AUCs of every ordering and direction, and positive − negative, with 95% bootstrap
    intervals over images (``bootstrap`` resamples, seeded)."""
    rows = []
    for model in models:
        correct, kept = read_correct(model["correct"])
        n_images = next(iter(correct.values())).shape[-1]
        for row in auc_table(correct, kept, TokenLayout.of(model).n_image_tokens, samples=bootstrap, seed=seed):
            rows.append(
                {
                    "model": model["name"], "display_name": model["display_name"],
                    "n_images": n_images, "n_kept_counts": len(kept), **row,
                }
            )  # fmt: skip
    write_csv(pd.DataFrame(rows, columns=TABLE_COLUMNS), output.csv)
