"""Statistics of the key-value memory figures and table, per model, computed from the cached value
projections (:mod:`memories`) and the extraction tables; the figures in
:mod:`class_embedding.figures.memory_figures` only draw them.

Each model dict is a ``describe_model`` entry plus ``memories``, the directory of its cached value
projections (``class_memories.parquet`` and ``memory_classes.parquet``). For a post-norm (GAP)
model every statistic is computed for both value projections: without the block post-norm, as the
paper (plotted), and scaled by it (the correction); the frames hold both (column
``includes_post_norm``; ``plotted`` marks the variant drawn).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..extraction.reader import column_arrays, layer_name, load_predictions, load_sublayer
from ..models.tokens import CLS, DISTILLATION, IMAGE, REGISTER, TokenLayout
from ..tables import read_table
from .box_statistics import box_stats
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
from .statistics import bootstrap_interval, permutation_rng, permutation_test

log = logging.getLogger(__name__)


#: Which of a model's two value-projection tables (its description's ``"memories"``): per class
#: its memories, and per memory its classes.
CLASS_TABLE = "classes"
MEMORY_TABLE = "memories"


class ValueProjections:
    """A model's cached value projections, looked up per (variant, layer type, block)."""

    def __init__(self, model: dict, table: str):
        path = model["memories"][table]
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
        activated, _ = load_sublayer(model["layers"][layer_name(layer_type, block)])
        n_memories = memories.rows(includes_post_norm, layer_type, block)["memory"].size
        member = class_memberships(projections, key, n_memories)
        yield key, {name: key_value_agreement(activated, c, member) for name, c in classes.items()}


def agreement_rate_data(model: dict, seed: int) -> pd.DataFrame:
    """Per class, block, type and variant: the % of agreeing tokens (all images of the class ×
    all tokens, [CLS] included) with the true class and with a random class (§4.11c,d)."""
    labels, _ = load_predictions(model["predictions"])
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


def accuracy_difference_data(model: dict, seed: int, n_permutations: int) -> pd.DataFrame:
    """Token-0 agreement of correctly minus incorrectly classified images, in percentage points,
    with the permutation p per block (§4.11e). All blocks of a type share the permutations.

    Token 0 is the [CLS] token, or for a GAP model its first image token: the paper plots GAP
    this way (a quirk kept as the paper's behaviour; column ``token_0``)."""
    labels, correct = load_predictions(model["predictions"])
    per_series: dict[tuple, list] = {}
    for key, agreement in sublayer_agreements(model, {"true": labels}):
        per_series.setdefault(key[:3], []).append(100.0 * agreement["true"][:, 0])
    rows = []
    for (includes_post_norm, plotted, layer_type), values in per_series.items():
        rng = permutation_rng(seed, model["name"], f"agreement_accuracy_{layer_type}_{includes_post_norm}")
        test = permutation_test(np.stack(values), correct, n_permutations, rng)
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


TOKEN_0_NAMES = {CLS: "cls", DISTILLATION: "dist", REGISTER: "register", IMAGE: "image"}


def token_0_kind(model: dict) -> str:
    """What token 0 is: [CLS], or (no class token) a register or the first image token."""
    return TOKEN_0_NAMES[TokenLayout.of(model).token_kinds()[0]]


def compositionality_data(model: dict) -> pd.DataFrame:
    """% of tokens whose sublayer prediction is the top class of one of its memories (§4.11f)."""
    memories = ValueProjections(model, MEMORY_TABLE)
    rows = []
    for key in memories.keys(model["num_blocks"]):
        includes_post_norm, _, layer_type, block = key
        activated, top1 = load_sublayer(model["layers"][layer_name(layer_type, block)])
        top_class = memories.rows(includes_post_norm, layer_type, block)["top_classes"][:, 0]
        match = compositionality(activated, top_class, top1)
        rows.append({**identity(model), **sublayer_columns(*key), "pct_tokens": float(100.0 * match.mean())})
    return pd.DataFrame(rows)


def per_class_matrix(frame: pd.DataFrame, value: str) -> np.ndarray:
    """(n_blocks, n_classes) values of one model, type and variant."""
    return frame.pivot(index="block", columns="class_index", values=value).sort_index().to_numpy()


def compare_series(
    model: dict, key: tuple, metric: str, per_class: pd.DataFrame, value: str, rng, n_bootstrap: int
) -> pd.DataFrame:
    """Mean over classes and its bootstrap band per normalized layer (``block_group`` averaged)
    of one (includes_post_norm, plotted, layer type)."""
    includes_post_norm, plotted, layer_type = key
    grouped = group_blocks(per_class_matrix(per_class, value), model.get("block_group", 1))
    # The notebook's literal percentiles: 50·(1 − 0.95) differs from 2.5 in the last bit.
    low, high = np.array([bootstrap_interval(row, rng, n_bootstrap, percentiles=(2.5, 97.5)) for row in grouped]).T
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


def compare_data(model: dict, seed: int, n_bootstrap: int) -> pd.DataFrame:
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
                frames.append(compare_series(model, key, metric, per_class[keep], value, rng, n_bootstrap))
    return pd.concat(frames, ignore_index=True)


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
