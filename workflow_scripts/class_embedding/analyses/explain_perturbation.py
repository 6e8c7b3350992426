"""The explainability perturbation test (docs/method.md §4.13): keep the n most (negative) or least
(positive) important image tokens of an ordering and measure top-1 accuracy.

Orderings rank the image tokens of each image, most important first: ``grads`` (the summed
class-embedding gradient map, descending), ``grads_chefer`` (Chefer relevance, descending),
``linear_probe`` (the residual-stream probe ranks of the true class summed over blocks,
ascending) and ``random`` (one permutation per repeat, the same for every image: torch's
``randperm(N)`` under the seeds first_seed, first_seed + 1, …; with first seed 0 and N = 49
exactly the paper's orderings).
Tokens are dropped as the embedded sequence enters the first block
(:class:`class_embedding.analyses.model_runs.TokenSelection`), so kept tokens keep their positions:
absolute embeddings are already added, relative position biases and rotary embeddings are gathered
to the kept positions (:mod:`class_embedding.analyses.token_removal`). At a fixed number n of kept
tokens every image and every ordering gives a sequence of n image tokens after the prefix tokens
([CLS], [DIST], registers: never dropped), so all of them are forwarded together in large batches
(one batch per n, chunked by a token budget) instead of one image at a time.

A random ordering has no direction: its reverse is another random permutation. Each is
evaluated once and listed under both directions (the paper draws one random curve in both
plots). The unperturbed case (all N tokens kept) is the same for every ordering, is evaluated
once and added to every curve as a corrected extra point; the paper's curves stop at N − 1.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from ..errors import InputError
from ..models.tokens import TokenLayout
from ..tables import read_table
from .explain_auc import DIRECTIONS
from .model_runs import TokenSelection, require_class_token

# ---------------------------------------------------------------------------------------------
# Orderings


def importance_ordering(importance: np.ndarray) -> np.ndarray:
    """(n_images, N) image-token indices (0-based), most important first; ties by position."""
    return np.argsort(-importance, axis=1, kind="stable")


def random_orderings(n_tokens: int, repeats: int, first_seed: int = 0) -> np.ndarray:
    """(repeats, N) permutations of the image tokens: repeat p is ``torch.randperm(N)`` of a CPU
    generator seeded with ``first_seed + p``, the original's random orderings for first seed 0."""
    permutations = [
        torch.randperm(n_tokens, generator=torch.Generator().manual_seed(first_seed + repeat))
        for repeat in range(repeats)
    ]
    return torch.stack(permutations).numpy() if permutations else np.zeros((0, n_tokens), np.int64)


def linear_probe_ordering(ranks_path, n_images: int, n_tokens: int, n_prefix: int = 1) -> np.ndarray:
    """Per image, the image tokens by their residual-stream probe rank of the true class summed
    over blocks, ascending (most identifiable first), ties by position (docs/method.md §4.13).

    ``ranks_path`` is the model's probe ranks table: image, layer (hs_<b>|attn_<b>|mlp_<b>),
    token (sequence position: the ``n_prefix`` prefix tokens, then the image tokens), rank.
    """
    table = read_table(ranks_path, columns=["image", "layer", "token", "rank"]).to_pandas()
    table = table[table["layer"].astype(str).str.startswith("hs_") & (table["token"] >= n_prefix)]
    if table.empty:
        raise InputError(f"{ranks_path} has no hs_<b> rows of image tokens: rebuild the linear probes.")
    n_blocks = table["layer"].nunique()
    expected = n_images * n_tokens * n_blocks
    if (
        len(table) != expected
        or table["image"].max() != n_images - 1
        or table["token"].max() != n_prefix + n_tokens - 1
    ):
        raise InputError(
            f"{ranks_path}: expected hs ranks of {n_images} images × {n_tokens} image tokens × {n_blocks} "
            f"blocks ({expected} rows), found {len(table)}: rebuild the probes for the current stimuli."
        )
    summed = np.zeros((n_images, n_tokens), np.int64)
    np.add.at(summed, (table["image"].to_numpy(), table["token"].to_numpy() - n_prefix), table["rank"].to_numpy())
    return np.argsort(summed, axis=1, kind="stable")


# ---------------------------------------------------------------------------------------------
# Evaluation


def kept_counts(n_tokens: int, step: int = 1) -> np.ndarray:
    """Numbers of kept image tokens to evaluate: 1, 1 + step, … plus N − 1 and N (the
    unperturbed extra point); every n in 1..N with step 1."""
    counts = set(range(1, n_tokens, step)) | {max(n_tokens - 1, 1), n_tokens}
    return np.array(sorted(counts), dtype=np.int64)


def kept_positions(ordering: np.ndarray, n: int, direction: str, n_prefix: int = 1) -> np.ndarray:
    """(n_images, n_prefix + n) ascending sequence positions to keep: the prefix tokens and the
    first n image tokens of the ordering (negative) or of its reverse (positive)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction '{direction}': expected one of {DIRECTIONS}")
    chosen = ordering[:, :n] if direction == "negative" else ordering[:, ordering.shape[1] - n :]
    positions = np.sort(chosen, axis=1) + n_prefix
    prefix = np.broadcast_to(np.arange(n_prefix, dtype=positions.dtype), (len(ordering), n_prefix))
    return np.concatenate([prefix, positions], axis=1)


@dataclass
class Curve:
    method: str
    repeat: int
    direction: str
    ordering: np.ndarray  # (n_images, N)


def build_curves(orderings: dict[str, np.ndarray], random: np.ndarray, n_images: int) -> list[Curve]:
    """Every (method, direction) of the per-image orderings, and each random permutation once."""
    curves = [
        Curve(method, 0, direction, ordering) for method, ordering in orderings.items() for direction in DIRECTIONS
    ]
    curves += [
        Curve("random", repeat, "negative", np.broadcast_to(permutation, (n_images, permutation.size)))
        for repeat, permutation in enumerate(random)
    ]
    return curves


def predict(model, selection: TokenSelection, images: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    selection.set_positions(positions)
    return model(images).argmax(dim=-1)


def evaluate_curves(
    model,
    images: torch.Tensor,
    targets: np.ndarray,
    curves: list[Curve],
    kept: np.ndarray,
    *,
    tokens_per_batch: int,
    device: torch.device,
) -> np.ndarray:
    """Correctness (n_curves, n_kept, n_images) of the model's top-1 prediction with only the
    kept tokens of each curve's ordering. ``images`` are the preprocessed stimuli (n_images, C, H, W)."""
    require_class_token(model)
    model = model.to(device).eval()
    n_images = len(targets)
    layout = TokenLayout.of_timm(model)
    n_tokens, n_prefix = layout.n_image_tokens, layout.n_prefix
    if any(curve.ordering.shape != (n_images, n_tokens) for curve in curves):
        raise ValueError(f"every ordering must be ({n_images}, {n_tokens})")
    target_tensor = torch.as_tensor(targets, device=device)
    images = images.to(device)
    correct = np.zeros((len(curves), len(kept), n_images), dtype=bool)
    with TokenSelection(model) as selection, torch.inference_mode():
        for k, n in enumerate(tqdm(kept, desc="kept tokens", file=sys.stderr, mininterval=10)):
            if n == n_tokens:  # nothing dropped: the same for every curve
                positions = np.tile(np.arange(n_prefix + n_tokens), (n_images, 1))
                sequences = [(0, positions)]
            else:
                sequences = [
                    (c, kept_positions(curve.ordering, n, curve.direction, n_prefix)) for c, curve in enumerate(curves)
                ]
            curve_index = np.repeat([c for c, _ in sequences], n_images)
            image_index = np.tile(np.arange(n_images), len(sequences))
            positions = torch.from_numpy(np.concatenate([p for _, p in sequences])).to(device)
            chunk = max(1, tokens_per_batch // (int(n) + n_prefix))
            hits = []
            for start in range(0, len(image_index), chunk):
                members = torch.from_numpy(image_index[start : start + chunk]).to(device)
                predicted = predict(model, selection, images[members], positions[start : start + chunk])
                hits.append((predicted == target_tensor[members]).cpu().numpy())
            hits = np.concatenate(hits)
            if n == n_tokens:
                correct[:, k, :] = hits
            else:
                correct[curve_index, k, image_index] = hits
    return correct


def one_at_a_time(
    model, images: torch.Tensor, targets: np.ndarray, curves: list[Curve], kept: np.ndarray, device: torch.device
) -> np.ndarray:
    """The same correctness, every (curve, n, image) forwarded alone (tests, benchmark)."""
    model = model.to(device).eval()
    n_prefix = TokenLayout.of_timm(model).n_prefix
    correct = np.zeros((len(curves), len(kept), len(targets)), dtype=bool)
    with TokenSelection(model) as selection, torch.inference_mode():
        for c, curve in enumerate(curves):
            for k, n in enumerate(kept):
                positions = torch.from_numpy(kept_positions(curve.ordering, int(n), curve.direction, n_prefix))
                for i in range(len(targets)):
                    predicted = predict(model, selection, images[i : i + 1].to(device), positions[i : i + 1].to(device))
                    correct[c, k, i] = predicted.item() == targets[i]
    return correct


# ---------------------------------------------------------------------------------------------
# Tables


def curve_rows(curves: list[Curve], kept: np.ndarray, values: np.ndarray, value_name: str, images=None) -> pa.Table:
    """Tidy rows of per-curve values (n_curves, n_kept[, n_images]); random curves are listed
    under both directions (see the module docstring)."""
    columns = {"method": [], "repeat": [], "direction": [], "kept": [], value_name: []}
    if images is not None:
        columns["image"] = []
    for curve, curve_values in zip(curves, values):
        directions = DIRECTIONS if curve.method == "random" else (curve.direction,)
        for direction in directions:
            size = curve_values.size
            columns["method"].append(np.full(size, curve.method))
            columns["repeat"].append(np.full(size, curve.repeat, np.int16))
            columns["direction"].append(np.full(size, direction))
            if images is None:
                columns["kept"].append(kept.astype(np.int16))
            else:
                columns["kept"].append(np.repeat(kept.astype(np.int16), len(images)))
                columns["image"].append(np.tile(images.astype(np.int32), len(kept)))
            columns[value_name].append(curve_values.reshape(-1))
    table = {name: np.concatenate(parts) for name, parts in columns.items()}
    return pa.table(
        {
            "method": pa.array(table["method"]).dictionary_encode(),
            "repeat": pa.array(table["repeat"]),
            "direction": pa.array(table["direction"]).dictionary_encode(),
            "kept": pa.array(table["kept"]),
            **({"image": pa.array(table["image"])} if images is not None else {}),
            value_name: pa.array(table[value_name]),
        }
    )


def curves_table(curves: list[Curve], kept: np.ndarray, correct: np.ndarray) -> pa.Table:
    """The perturbation-curve table: accuracy per (method, repeat, direction, kept)."""
    return curve_rows(curves, kept, correct.mean(axis=2).astype(np.float64), "accuracy")


def correct_table(curves: list[Curve], kept: np.ndarray, correct: np.ndarray, images: np.ndarray) -> pa.Table:
    """Per-image correctness behind the curves (bootstrap intervals over images)."""
    return curve_rows(curves, kept, correct, "correct", images=images)


# ---------------------------------------------------------------------------------------------
# Rule entry point


def stimulus_tensor(dataset, batch_size: int, workers: int) -> torch.Tensor:
    """Every preprocessed stimulus in one (n_images, C, H, W) tensor."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    return torch.cat(list(loader))


def run_perturbation(setup, maps_path, probe_ranks, output, settings: dict, extraction: dict) -> None:
    """Rule explain_perturbation: every ordering × direction × kept count of the stimuli.

    ``setup`` is a :class:`class_embedding.analyses.model_runs.Setup`; ``probe_ranks`` the linear probes'
    ranks.parquet or None (no linear_probe ordering then).
    """
    from .. import tables
    from ..models import building
    from . import gradients

    n_images = len(setup.images)
    if not np.array_equal(setup.images, np.arange(n_images)):
        raise InputError("the stimuli table must number its images 0..n−1 in order: rebuild stimuli.parquet.")
    layout = TokenLayout.of_timm(setup.model)
    n_tokens = layout.n_image_tokens
    maps = gradients.read_maps(maps_path, n_images=n_images)
    orderings = {method: importance_ordering(maps[method]) for method in gradients.METHODS}
    if probe_ranks:
        orderings["linear_probe"] = linear_probe_ordering(probe_ranks, n_images, n_tokens, layout.n_prefix)
    first_seed = settings["random_permutation_seed"]
    random = random_orderings(n_tokens, settings["random_permutations"], first_seed)
    curves = build_curves(orderings, random, n_images)
    kept = kept_counts(n_tokens, settings["kept_step"])
    device = building.pick_device(extraction["device"])
    images = stimulus_tensor(setup.dataset, extraction["batch_size"], extraction["workers"])
    correct = evaluate_curves(
        setup.model, images, setup.targets, curves, kept,
        tokens_per_batch=settings["tokens_per_batch"], device=device,
    )  # fmt: skip
    metadata = {key: value for key, value in setup.metadata.items() if key != "block"}
    metadata.update(
        device=str(device), n_image_tokens=int(n_tokens), kept_step=settings["kept_step"],
        random_permutations=settings["random_permutations"], random_permutation_seed=first_seed,
        random_directions="each random permutation is evaluated once and listed under both directions",
    )  # fmt: skip
    tables.write_table(curves_table(curves, kept, correct), output.curves, metadata)
    tables.write_table(correct_table(curves, kept, correct, setup.images), output.correct, metadata)
