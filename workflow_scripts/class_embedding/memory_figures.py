"""Notebook 2 targets on key–value memories (METHOD §4.11, §5): figures and the value-vector table.

One function per target, named like the target, with the signature of :mod:`figures` targets:
``target(models, output, seed, **options)``. Each model dict is a ``describe_model`` entry plus
``memories``, the directory of its cached value projections (:mod:`memories`,
``class_memories.parquet`` and ``memory_classes.parquet``). The activated memories and the
sublayer predictions come from the extraction tables ``attn_<b>``/``mlp_<b>.parquet``.

For a post-norm (GAP) model every statistic is computed for both value projections: without the
block post-norm, as the paper (plotted; METHOD §7.12), and scaled by it (the correction); the
CSVs hold both (column ``includes_post_norm``; ``plotted`` marks the variant drawn).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import seaborn as sns
from matplotlib.lines import Line2D

from .class_building import permutation_rng, permutation_test
from .errors import InputError
from .figures import (
    STAR_LINE,
    box_line_color,
    box_stats,
    label_blocks,
    model_colors,
    new_figure,
    remove_unused,
    save_figure,
    write_csv,
)
from .identifiability import SIGNIFICANCE_LEVEL, group_blocks, wilcoxon_greater
from .memories import (
    LAYER_TYPES,
    TOP_K,
    compositionality,
    key_value_agreement,
    memory_membership,
    random_classes,
    rate_per_class,
)
from .tables import read_table

log = logging.getLogger(__name__)

CLASS_TABLE = "class_memories.parquet"
MEMORY_TABLE = "memory_classes.parquet"
PERMUTATIONS = 300  # METHOD §4.11e
BOOTSTRAP_RESAMPLES = 1000  # seaborn's default for its 95% CI bands
TYPE_COLORS = {"attn": "#1f78b4", "mlp": "#33a02c"}  # "Paired" blue / green, as in notebook 2
MEAN_COLOR = "red"
BASELINE_COLOR = "grey"

# ---------------------------------------------------------------------------------------------
# Loading


def column_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """Table columns as numpy arrays; fixed-size list columns become (rows, width) arrays."""
    arrays = {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(column.type):
            arrays[name] = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
        else:
            arrays[name] = column.to_numpy(zero_copy_only=False)
    return arrays


def load_sublayer(extract_dir: str | Path, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Activated memories (n_images, n_tokens, 5) and the top-1 class (n_images, n_tokens) of the
    projected sublayer output, from ``<layer>.parquet``."""
    path = Path(extract_dir) / f"{layer}.parquet"
    columns = column_arrays(read_table(path, columns=["image", "token", "top5", "mem_top5"]))
    image, token = columns["image"], columns["token"]
    n_tokens = int(token.max()) + 1
    n_images = image.size // n_tokens
    grid = np.array_equal(image, np.repeat(np.arange(n_images), n_tokens)) and np.array_equal(
        token, np.tile(np.arange(n_tokens), n_images)
    )
    if not grid:
        raise InputError(
            f"{path}: rows are not a complete image x token grid sorted by image and token; rerun the extraction."
        )
    activated = columns["mem_top5"].astype(np.int64).reshape(n_images, n_tokens, TOP_K)
    return activated, columns["top5"][:, 0].reshape(n_images, n_tokens)


def load_predictions(extract_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """True class and correctness of every image, in image order."""
    path = Path(extract_dir) / "predictions.parquet"
    columns = column_arrays(read_table(path, columns=["image", "label", "correct"]))
    order = np.argsort(columns["image"], kind="stable")
    if not np.array_equal(columns["image"][order], np.arange(order.size)):
        raise InputError(f"{path}: images are not 0..n-1, each once; rerun the extraction.")
    return columns["label"][order].astype(np.int64), columns["correct"][order].astype(bool)


class ValueProjections:
    """A model's cached value projections, looked up per (variant, layer type, block)."""

    def __init__(self, model: dict, table: str):
        path = Path(model["memories"]) / table
        self.columns = column_arrays(read_table(path))
        # Post-norm models carry both variants; the paper's, without the post-norm, comes first
        # and is plotted.
        self.variants = sorted({bool(v) for v in self.columns["includes_post_norm"]})

    def rows(self, includes_post_norm: bool, layer_type: str, block: int) -> dict[str, np.ndarray]:
        keep = (
            (self.columns["includes_post_norm"] == includes_post_norm)
            & (self.columns["layer_type"] == layer_type)
            & (self.columns["block"] == block)
        )
        return {name: values[keep] for name, values in self.columns.items()}

    def keys(self, num_blocks: int):
        """(includes_post_norm, plotted, layer_type, block) of every sublayer and variant."""
        for includes_post_norm in self.variants:
            for layer_type in LAYER_TYPES:
                for block in range(num_blocks):
                    yield includes_post_norm, includes_post_norm == self.variants[0], layer_type, block


def identity(model: dict) -> dict:
    return {"model": model["name"], "display_name": model["display_name"]}


def sublayer_columns(includes_post_norm: bool, plotted: bool, layer_type: str, block: int) -> dict:
    return {"includes_post_norm": includes_post_norm, "plotted": plotted, "layer_type": layer_type, "block": block + 1}


# ---------------------------------------------------------------------------------------------
# Statistics per model


def class_value_data(model: dict) -> pd.DataFrame:
    """Box statistics of the per-class agreement scores, the random model's mean and the
    Wilcoxon p (trained > random, paired by class) per block, type and variant (§4.11a)."""
    projections = ValueProjections(model, CLASS_TABLE)
    rows = []
    for includes_post_norm, plotted, layer_type, block in projections.keys(model["num_blocks"]):
        sub = projections.rows(includes_post_norm, layer_type, block)
        trained, random = sub["agreement_score"], sub["random_agreement_score"]
        p_value = wilcoxon_greater(trained, random)
        log.info(
            "%s %s block %d (post-norm %s): p = %.3g", model["name"], layer_type, block + 1, includes_post_norm, p_value
        )
        rows.append(
            {
                **identity(model),
                **sublayer_columns(includes_post_norm, plotted, layer_type, block),
                "n_classes": trained.size,
                **box_stats(trained),
                "random_mean": float(random.mean()),
                "p_value": p_value,
                "significant": bool(p_value < SIGNIFICANCE_LEVEL),
            }
        )
    return pd.DataFrame(rows)


def class_memberships(projections: ValueProjections, key: tuple, n_memories: int) -> np.ndarray:
    includes_post_norm, _, layer_type, block = key
    sub = projections.rows(includes_post_norm, layer_type, block)
    member = np.zeros((int(sub["class_index"].max()) + 1, n_memories), dtype=bool)
    member[sub["class_index"]] = memory_membership(sub["top_memories"], n_memories)
    return member


def sublayer_agreements(model: dict, classes: dict[str, np.ndarray]):
    """Yield (sublayer key, {name: per-token agreement}) for every variant, type and block.

    ``classes`` maps a name to the per-image class whose top memories are tested.
    """
    projections = ValueProjections(model, CLASS_TABLE)
    memories = ValueProjections(model, MEMORY_TABLE)
    for key in projections.keys(model["num_blocks"]):
        includes_post_norm, _, layer_type, block = key
        activated, _ = load_sublayer(model["extract_dir"], f"{layer_type}_{block}")
        n_memories = memories.rows(includes_post_norm, layer_type, block)["memory"].size
        member = class_memberships(projections, key, n_memories)
        yield key, {name: key_value_agreement(activated, c, member) for name, c in classes.items()}


def agreement_rate_data(model: dict, seed: int) -> pd.DataFrame:
    """Per class, block, type and variant: the % of agreeing tokens (all images of the class ×
    all tokens, [CLS] included) with the true class and with a random class (§4.11c,d)."""
    labels, _ = load_predictions(model["extract_dir"])
    random = random_classes(labels, model["num_classes"], permutation_rng(seed, model["name"], "random_class"))
    frames = []
    for key, agreement in sublayer_agreements(model, {"true": labels, "random": random}):
        present, rates = rate_per_class(agreement["true"], labels)
        _, random_rates = rate_per_class(agreement["random"], labels)
        frames.append(
            pd.DataFrame(
                {
                    **identity(model),
                    **sublayer_columns(*key),
                    "class_index": present,
                    "rate": rates,
                    "random_class_rate": random_rates,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def accuracy_difference_data(model: dict, seed: int) -> pd.DataFrame:
    """Token-0 agreement of correctly minus incorrectly classified images, in percentage points,
    with the permutation p per block (§4.11e). All blocks of a type share the permutations.

    Token 0 is the [CLS] token, or for a GAP model its first image token: the paper plots GAP
    this way (a quirk kept as the paper's behaviour; column ``token_0``)."""
    labels, correct = load_predictions(model["extract_dir"])
    per_series: dict[tuple, list] = {}
    for key, agreement in sublayer_agreements(model, {"true": labels}):
        per_series.setdefault(key[:3], []).append(100.0 * agreement["true"][:, 0])
    rows = []
    for (includes_post_norm, plotted, layer_type), values in per_series.items():
        rng = permutation_rng(seed, model["name"], f"agreement_accuracy_{layer_type}_{includes_post_norm}")
        test = permutation_test(np.stack(values), correct, PERMUTATIONS, rng)
        for block in range(len(values)):
            rows.append(
                {
                    **identity(model),
                    **sublayer_columns(includes_post_norm, plotted, layer_type, block),
                    "token_0": token_0_kind(model),
                    "n_correct": int(np.count_nonzero(correct)),
                    "n_incorrect": int(np.count_nonzero(~correct)),
                    "diff": float(test["diff"][block]),
                    "p_value": float(test["p_value"][block]),
                    "p_value_corrected": float(test["p_value_corrected"][block]),
                    "significant": bool(test["p_value"][block] < SIGNIFICANCE_LEVEL),
                }
            )
    return pd.DataFrame(rows)


def token_0_kind(model: dict) -> str:
    return "cls" if model["class_token"] else "image"


def compositionality_data(model: dict) -> pd.DataFrame:
    """% of tokens whose sublayer prediction is the top class of one of its memories (§4.11f)."""
    memories = ValueProjections(model, MEMORY_TABLE)
    rows = []
    for key in memories.keys(model["num_blocks"]):
        includes_post_norm, _, layer_type, block = key
        activated, top1 = load_sublayer(model["extract_dir"], f"{layer_type}_{block}")
        top_class = memories.rows(includes_post_norm, layer_type, block)["top_classes"][:, 0]
        match = compositionality(activated, top_class, top1)
        rows.append({**identity(model), **sublayer_columns(*key), "pct_tokens": float(100.0 * match.mean())})
    return pd.DataFrame(rows)


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
# fig_class_value_agreement (METHOD §4.11a)


def draw_type_boxes(ax, panel: pd.DataFrame, layer_type: str) -> None:
    """One box per block from precomputed statistics (no fliers), in the layer type's colour."""
    color = sns.desaturate(TYPE_COLORS[layer_type], 0.75)
    line = box_line_color([TYPE_COLORS[layer_type]])
    stats = [{**row, "fliers": []} for row in panel[["mean", "med", "q1", "q3", "whislo", "whishi"]].to_dict("records")]
    ax.bxp(
        stats,
        positions=range(len(stats)),
        widths=0.8,
        capwidths=0.4,
        patch_artist=True,
        showfliers=False,
        manage_ticks=False,
        boxprops={"facecolor": color, "edgecolor": line},
        medianprops={"color": line},
        whiskerprops={"color": line},
        capprops={"color": line},
    )


def fig_class_value_agreement(models: list[dict], output, seed=None) -> None:
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
        ax.set_title(f"{model['display_name']} - {layer_type}")
    handles = [
        Line2D([], [], color=BASELINE_COLOR, linestyle="--", marker="o", markersize=3, label="random model (mean)")
    ]
    fig.legend(handles=handles, loc="outside upper center")
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_key_value_agreement_rate (METHOD §4.11c,d)


def fig_key_value_agreement_rate(models: list[dict], output, seed=0) -> None:
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
        ax.set_title(f"{model['display_name']} - {layer_type}")
    handles = [
        Line2D([], [], color=MEAN_COLOR, marker="D", label="mean over classes"),
        Line2D([], [], color=BASELINE_COLOR, linestyle="--", marker="D", markersize=3, label="random class (mean)"),
    ]
    fig.legend(handles=handles, loc="outside upper center", ncols=2)
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_agreement_accuracy_diff (METHOD §4.11e)


def fig_agreement_accuracy_diff(models: list[dict], output, seed=0) -> None:
    """Every model, as the paper: GAP models have no [CLS], so their token 0 is an image token."""
    data = pd.concat([accuracy_difference_data(model, seed) for model in models], ignore_index=True)
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
        quirk = "" if model["class_token"] else " (token 0: an image token)"
        ax.set_title(f"{model['display_name']} - {layer_type}{quirk}")
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_memory_compositionality (METHOD §4.11f)


def fig_memory_compositionality(models: list[dict], output, seed=None) -> None:
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
        ax.set_title(model["display_name"])
        ax.legend(loc="upper left")
    remove_unused(fig, axes, len(models))
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# fig_memory_compare (METHOD §5, notebook 2 "compare_all")


def bootstrap_interval(values: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Percentile 95% bootstrap interval of the mean over the last axis, per row."""
    low, high = [], []
    for row in values:
        means = row[rng.integers(0, row.size, (BOOTSTRAP_RESAMPLES, row.size))].mean(axis=1)
        low.append(np.percentile(means, 2.5))
        high.append(np.percentile(means, 97.5))
    return np.array(low), np.array(high)


def per_class_matrix(frame: pd.DataFrame, value: str) -> np.ndarray:
    """(n_blocks, n_classes) values of one model, type and variant."""
    return frame.pivot(index="block", columns="class_index", values=value).sort_index().to_numpy()


def compare_series(model: dict, key: tuple, metric: str, per_class: pd.DataFrame, value: str, rng) -> pd.DataFrame:
    """Mean over classes and its bootstrap band per normalized layer (``block_group`` averaged)
    of one (includes_post_norm, plotted, layer type)."""
    includes_post_norm, plotted, layer_type = key
    grouped = group_blocks(per_class_matrix(per_class, value), model.get("block_group", 1))
    low, high = bootstrap_interval(grouped, rng)
    layers = np.arange(1, grouped.shape[0] + 1)
    return pd.DataFrame(
        {
            **identity(model),
            "includes_post_norm": includes_post_norm,
            "plotted": plotted,
            "metric": metric,
            "layer_type": layer_type,
            "normalized_layer": layers,
            "mean": grouped.mean(axis=1),
            "ci_low": low,
            "ci_high": high,
        }
    )


def compare_data(model: dict, seed: int) -> pd.DataFrame:
    projections = ValueProjections(model, CLASS_TABLE)
    scalar = {name: values for name, values in projections.columns.items() if values.ndim == 1}
    scores = pd.DataFrame({**scalar, "block": scalar["block"] + 1})
    rates = agreement_rate_data(model, seed)
    rng = permutation_rng(seed, model["name"], "memory_compare_bootstrap")
    metrics = [("class_value_agreement", scores, "agreement_score"), ("key_value_agreement_rate", rates, "rate")]
    frames = []
    for includes_post_norm in projections.variants:
        plotted = includes_post_norm == projections.variants[0]
        for metric, per_class, value in metrics:
            for layer_type in LAYER_TYPES:
                keep = (per_class["includes_post_norm"] == includes_post_norm) & (per_class["layer_type"] == layer_type)
                key = (includes_post_norm, plotted, layer_type)
                frames.append(compare_series(model, key, metric, per_class[keep], value, rng))
    return pd.concat(frames, ignore_index=True)


COMPARE_PANELS = [
    ("class_value_agreement", "attn", "attn - class-value agreement"),
    ("class_value_agreement", "mlp", "mlp - class-value agreement"),
    ("key_value_agreement_rate", "attn", "attn - key-value agreement (%)"),
    ("key_value_agreement_rate", "mlp", "mlp - key-value agreement (%)"),
]


def fig_memory_compare(models: list[dict], output, seed=0) -> None:
    data = pd.concat([compare_data(model, seed) for model in models], ignore_index=True)
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
    handles = [Line2D([], [], color=color, label=name, **STAR_LINE) for name, color in colors.items()]
    fig.legend(handles=handles, loc="outside upper center", ncols=4)
    save_figure(fig, data, output)


# ---------------------------------------------------------------------------------------------
# tab_value_vector_classes (METHOD §4.11g)

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


def chosen_memories(memories: dict[str, np.ndarray], model: dict, chosen) -> np.ndarray:
    """The configured memory ids (a list, or a dict by model name), or the 5 with the largest
    maximum class projection when the model has none."""
    if isinstance(chosen, dict):
        chosen = chosen.get(model["name"])
    if chosen is None:
        order = np.argsort(-memories["top_projections"][:, 0], kind="stable")
        return memories["memory"][order[:TOP_K]]
    chosen = np.asarray(chosen, dtype=np.int64)
    invalid = chosen[(chosen < 0) | (chosen >= memories["memory"].size)]
    if invalid.size:
        raise InputError(
            f"value-vector memories {invalid.tolist()} do not exist in {model['name']} "
            f"(it has {memories['memory'].size}); fix memories.value_vectors.neurons in the config."
        )
    return chosen


def value_vector_rows(model: dict, categories: dict[int, str], block_index, layer_type: str, chosen) -> list[dict]:
    memories_table = ValueProjections(model, MEMORY_TABLE)
    block = model["num_blocks"] - 2 if block_index is None else int(block_index)
    if not 0 <= block < model["num_blocks"]:
        raise InputError(
            f"value-vector block index {block} is outside 0..{model['num_blocks'] - 1} for {model['name']}."
        )
    includes_post_norm = memories_table.variants[0]
    memories = memories_table.rows(includes_post_norm, layer_type, block)
    rows = []
    for memory in chosen_memories(memories, model, chosen):
        for rank, (class_index, projection) in enumerate(
            zip(memories["top_classes"][memory], memories["top_projections"][memory])
        ):
            rows.append(
                {
                    **identity(model),
                    "includes_post_norm": includes_post_norm,
                    "layer_type": layer_type,
                    "block": block + 1,
                    "block_index": block,
                    "memory": int(memory),
                    "max_projection": float(memories["top_projections"][memory, 0]),
                    "rank": rank + 1,
                    "class_index": int(class_index),
                    "projection": float(projection),
                    # The original printed only classes with stimuli; the others stay unnamed here.
                    "category": categories.get(int(class_index)),
                    "in_stimuli": int(class_index) in categories,
                }
            )
    return rows


def stimulus_categories(path: str | Path) -> dict[int, str]:
    stimuli = column_arrays(read_table(path, columns=["class_index", "category"]))
    return dict(zip(stimuli["class_index"].astype(int).tolist(), stimuli["category"].tolist()))


def tab_value_vector_classes(
    models: list[dict], output, seed=None, block_index=None, layer_type="mlp", neurons=None
) -> None:
    """The 5 classes each chosen value vector promotes most (largest P[c, k]), with names.

    ``block_index`` (0-based; default L-2, the paper's block index 10 of 12), ``layer_type`` and
    ``neurons`` (memory ids, or a dict of ids by model; default the 5 with the largest maximum
    class projection) come from ``memories.value_vectors`` of the config.
    """
    rows = []
    for model in models:
        rows += value_vector_rows(model, stimulus_categories(model["stimuli"]), block_index, layer_type, neurons)
    write_csv(pd.DataFrame(rows, columns=TABLE_COLUMNS), output.csv)
