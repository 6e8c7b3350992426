"""Perturbation tables (docs/method.md §4.9, §4.10, §5) from the perturbation and extraction tables.

No torch here: the table rules run in the analysis environment. Each table gives the paper's
statistic beside the unperturbed comparison it was printed with, plus the corrected variant of
docs/method.md §7.8 (image tokens only, pooled) and the accuracies (written but never reported in the
original, §7.24).

Model dicts are :func:`describe_model` entries; their ``"perturbations"`` give, per perturbation
rule and variant, the ``ranks`` table (attention: image, token, rank, logit; tokens: image,
position, rank, logit) and the ``predictions`` table of the perturbed run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..extraction.reader import load_block, load_correct, read_grid
from ..models.tokens import TokenLayout
from ..tables import read_table, write_csv
from .identifiability import accuracy
from .perturbation_masks import (
    ATTENTION_TYPES,
    KEPT_LABEL,
    MASK_TYPES,
    kept_token_mask,
)
from .token_labels import read_token_labels


def percent_rank0(ranks: np.ndarray) -> float:
    """Pooled % of rank-0 entries (NaN when there are none)."""
    return float(100.0 * np.mean(ranks == 0)) if ranks.size else float("nan")


def perturbed_correct(path: Path, n_images: int) -> np.ndarray:
    table = read_table(path, columns=["image", "correct"])
    image = table.column("image").to_numpy()
    if not np.array_equal(np.sort(image), np.arange(n_images)):
        raise InputError(f"{path}: expected images 0..{n_images - 1}, each once; delete it and rerun.")
    return table.column("correct").to_numpy(zero_copy_only=False)[np.argsort(image)]


def model_columns(model: dict) -> dict:
    return {"model": model["name"], "display_name": model["display_name"], "block": model["num_blocks"]}


def unperturbed_last_block(model: dict) -> tuple[np.ndarray, np.ndarray]:
    """Ranks (n_images, N) of the unperturbed last residual stream and per-image correctness."""
    return load_block(model["layers"], model["num_blocks"] - 1, "rank"), load_correct(model["predictions"])


# ---------------------------------------------------------------------------------------------
# tab_attn_perturbation (docs/method.md §4.9)

ATTN_COLUMNS = [
    "model", "display_name", "perturbation", "block", "n_images", "n_tokens",
    "n_identifiable_tokens", "pct_tokens_paper", "pct_image_tokens_unperturbed",
    "pct_image_tokens", "accuracy", "accuracy_unperturbed",
]  # fmt: skip


def attention_row(model: dict, kind: str, unperturbed: np.ndarray, unperturbed_correct: np.ndarray) -> dict:
    tables = model["perturbations"]["attn_perturbation"][kind]
    ranks = read_grid(tables["ranks"], ["rank"])["rank"]
    if ranks.shape != unperturbed.shape:
        raise InputError(
            f"{tables['ranks']} has {ranks.shape} (images, tokens) but the unperturbed "
            f"last block has {unperturbed.shape}: rerun the perturbation."
        )
    return {
        **model_columns(model),
        "perturbation": kind,
        "n_images": ranks.shape[0],
        "n_tokens": ranks.shape[1],
        "n_identifiable_tokens": int(np.count_nonzero(ranks == 0)),
        # The paper's statistic counts [CLS] too; its comparison does not (docs/method.md §7.8).
        "pct_tokens_paper": percent_rank0(ranks),
        "pct_image_tokens_unperturbed": percent_rank0(unperturbed[:, TokenLayout.of(model).image_tokens]),
        "pct_image_tokens": percent_rank0(ranks[:, TokenLayout.of(model).image_tokens]),
        "accuracy": accuracy(perturbed_correct(tables["predictions"], ranks.shape[0])),
        "accuracy_unperturbed": accuracy(unperturbed_correct),
    }


def tab_attn_perturbation(models: list[dict], output, seed=None) -> None:
    rows = []
    for model in models:
        unperturbed, correct = unperturbed_last_block(model)
        rows += [attention_row(model, kind, unperturbed, correct) for kind in ATTENTION_TYPES]
    write_csv(pd.DataFrame(rows, columns=ATTN_COLUMNS), output.csv)


# ---------------------------------------------------------------------------------------------
# tab_context_perturbation (docs/method.md §4.10)

CONTEXT_COLUMNS = [
    "model", "display_name", "mask", "kept_label", "block", "n_images",
    "n_images_only_cls", "n_kept_image_tokens", "pct_kept_tokens_paper",
    "pct_kept_label_unperturbed", "pct_kept_image_tokens", "accuracy", "accuracy_unperturbed",
]  # fmt: skip


def load_kept_ranks(path: Path, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Image and rank of every row of a token-perturbation table, checked against ``keep``."""
    table = read_table(path, columns=["image", "position", "rank"])
    table = table.sort_by([("image", "ascending"), ("position", "ascending")])
    image = table.column("image").to_numpy().astype(np.int64)
    position = table.column("position").to_numpy().astype(np.int64)
    expected_image, expected_position = np.nonzero(keep)
    if not (np.array_equal(image, expected_image) and np.array_equal(position, expected_position)):
        raise InputError(
            f"{path}: its tokens are not the prefix tokens plus the kept tokens of the token labels; rerun it."
        )
    return image, table.column("rank").to_numpy()


def context_row(
    model: dict, mask: str, class_mask: np.ndarray, unperturbed: np.ndarray, unperturbed_correct: np.ndarray
) -> dict:
    tables = model["perturbations"]["token_perturbation"][mask]
    n_prefix = TokenLayout.of(model).n_prefix
    keep = kept_token_mask(class_mask, mask, n_prefix)
    if keep.shape != unperturbed.shape:
        raise InputError(f"token labels {keep.shape} do not match hs_* of {model['name']} {unperturbed.shape}.")
    image, rank = load_kept_ranks(tables["ranks"], keep)
    n_images = keep.shape[0]
    kept_per_image = keep.sum(axis=1)
    identifiable_per_image = np.bincount(image, weights=rank == 0, minlength=n_images)
    is_image_token = np.ones_like(keep)
    is_image_token[:, :n_prefix] = False
    return {
        **model_columns(model),
        "mask": mask,
        "kept_label": KEPT_LABEL[mask],
        "n_images": n_images,
        "n_images_only_cls": int(np.count_nonzero(kept_per_image == n_prefix)),
        "n_kept_image_tokens": int(kept_per_image.sum() - n_images * n_prefix),
        # Mean of per-image rates that include [CLS]; images keeping only [CLS] count with it
        # alone (docs/method.md §7.8).
        "pct_kept_tokens_paper": float(100.0 * np.mean(identifiable_per_image / kept_per_image)),
        "pct_kept_label_unperturbed": percent_rank0(unperturbed[keep & is_image_token]),
        # Rows are in keep's row-major order, so this picks the kept image tokens.
        "pct_kept_image_tokens": percent_rank0(rank[is_image_token[keep]]),
        "accuracy": accuracy(perturbed_correct(tables["predictions"], n_images)),
        "accuracy_unperturbed": accuracy(unperturbed_correct),
    }


def tab_context_perturbation(models: list[dict], output, seed=None) -> None:
    rows = []
    for model in models:
        unperturbed, correct = unperturbed_last_block(model)
        class_mask = read_token_labels(model["token_labels"], TokenLayout.of(model), model=model["name"])
        rows += [context_row(model, mask, class_mask, unperturbed, correct) for mask in MASK_TYPES]
    write_csv(pd.DataFrame(rows, columns=CONTEXT_COLUMNS), output.csv)
