"""Key–value memories (docs/method.md §4.11): value vectors projected onto the class embeddings.

Notation for block b: the MLP value matrix ``W = fc2.weight`` (D×M, column k = value vector of
memory k) and the attention value matrix ``W = proj.weight`` (D×D, column k = value vector of the
k-th coefficient of the concatenated head outputs); ``E = head.weight`` (C×D; in distilled
models its mean with ``head_dist``, the lens's projection); ``P = E·W`` (head bias not used).
The memories activated by a token are not recomputed here: extraction stores the five most
activated ones per token (``mem_top5``) and the top-1 class of the projected sublayer output
(``top5[..., 0]``).

Post-norm blocks (timm ``ResPostBlock``, the GAP model) add ``norm(sublayer(x))`` to the residual
stream. That LayerNorm acts on the whole sublayer output, so one value vector's contribution is
not exactly linear; we take the norm's affine scaling ``weight ⊙ w_k`` as the image of value
vector k (the shared bias shifts every memory alike and is left out). The original ignores the
post-norm (docs/method.md §7.12), which is why its GAP panels are flat; that variant
(``includes_post_norm=False``) is the one plotted, the scaled one is computed beside it.
LayerScale is not applied (it is the identity in all of the paper's models).

Everything here is numpy and pyarrow, plus attribute access on an already built timm model, so
both the torch rule that reads the weights and the plotting rules can import it.
"""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa

from .. import tables

TOP_K = 5
LAYER_TYPES = ("attn", "mlp")

# ---------------------------------------------------------------------------------------------
# Seed of the random baseline model


def value_baseline_seed(seed: int, name: str) -> int:
    """Torch seed of the on-the-fly random model of §4.11a: independent of the random twin's."""
    return int(seed) * 1_000_003 + zlib.crc32(f"{name}_value_baseline".encode()) % 1_000_003


# ---------------------------------------------------------------------------------------------
# Value vectors of a timm model


def has_post_norm(model) -> bool:
    """Whether the blocks add a normalised sublayer output (ResPostBlock) to the residual."""
    from ..models import families  # torch: only the rule that reads the weights gets here

    return families.has_post_norm(model.blocks[0])


def head_embeddings(model) -> np.ndarray:
    """The C×D matrix the lens projects through (a distilled model's: the mean of its two heads)."""
    from ..extraction import lens

    return as_array(lens.linear_head(model)[0])


def as_array(parameter) -> np.ndarray:
    return parameter.detach().float().cpu().numpy()


def value_matrix(block, layer_type: str, includes_post_norm: bool) -> np.ndarray:
    """D×M value vectors of one sublayer, as columns; optionally scaled by the block's post-norm."""
    linear = block.mlp.fc2 if layer_type == "mlp" else block.attn.proj
    values = as_array(linear.weight)
    if includes_post_norm:
        norm = block.norm2 if layer_type == "mlp" else block.norm1
        values = as_array(norm.weight)[:, None] * values
    return values


def value_variants(model) -> list[bool]:
    """``includes_post_norm`` values to compute; the first, the paper's, is the one the figures plot."""
    return [False, True] if has_post_norm(model) else [False]


# ---------------------------------------------------------------------------------------------
# Projections of value vectors onto the classes


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def class_value_agreement(class_embeddings: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per class, the largest cosine between its embedding and any value vector (§4.11a), (C,).

    Computed on normalised copies: the model's weights are never touched (unlike the original,
    docs/method.md §7.12).
    """
    cosines = unit_rows(class_embeddings) @ unit_rows(values.T).T
    return cosines.max(axis=1)


def top_memories(projections: np.ndarray, k: int = TOP_K) -> np.ndarray:
    """V5(c): the k memories with the largest P[c, ·] per class, in decreasing order, (C, k)."""
    return np.argsort(-projections, axis=1, kind="stable")[:, :k]


def top_classes(projections: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Per memory the k classes with the largest P[·, m] and those projections, each (M, k).

    Column 0 is κ(m), the memory's top class (§4.11f).
    """
    classes = np.argsort(-projections, axis=0, kind="stable")[:k].T
    return classes, np.take_along_axis(projections, classes.T, axis=0).T


# ---------------------------------------------------------------------------------------------
# Per-token statistics from the activated memories


def memory_membership(class_top_memories: np.ndarray, n_memories: int) -> np.ndarray:
    """Boolean (C, M): whether memory m is among the top memories V5(c) of class c."""
    member = np.zeros((class_top_memories.shape[0], n_memories), dtype=bool)
    np.put_along_axis(member, class_top_memories, True, axis=1)
    return member


def key_value_agreement(activated: np.ndarray, classes: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Whether any of a token's activated memories is a top memory of its image's class (§4.11c).

    ``activated``: (n_images, n_tokens, 5) memory ids; ``classes``: (n_images,) the class to test
    (the true class, or the random-class baseline); ``member``: :func:`memory_membership`.
    Returns bool (n_images, n_tokens).
    """
    return member[classes[:, None, None], activated].any(axis=-1)


def compositionality(activated: np.ndarray, memory_top_class: np.ndarray, sublayer_top1: np.ndarray) -> np.ndarray:
    """Whether the top class κ of any activated memory is the sublayer's top-1 class (§4.11f).

    ``activated``: (n_images, n_tokens, 5); ``memory_top_class``: κ per memory, (M,);
    ``sublayer_top1``: (n_images, n_tokens). Returns bool (n_images, n_tokens).
    """
    return (memory_top_class[activated] == sublayer_top1[..., None]).any(axis=-1)


def rate_per_class(token_values: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """% of true token values over all images × tokens of each class (§4.11d).

    Returns the classes present (ascending) and their rates.
    """
    present, image_class = np.unique(classes, return_inverse=True)
    per_image = np.count_nonzero(token_values, axis=1)
    hits = np.bincount(image_class, weights=per_image, minlength=present.size)
    images = np.bincount(image_class, minlength=present.size)
    return present, 100.0 * hits / (images * token_values.shape[1])


def random_classes(classes: np.ndarray, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """The random-class baseline: one uniform draw of a class per class folder, per image."""
    present, image_class = np.unique(classes, return_inverse=True)
    return rng.integers(0, num_classes, size=present.size)[image_class]


# ---------------------------------------------------------------------------------------------
# Per-model cache of the weight-derived quantities


def fixed_size_lists(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=dtype), values.shape[-1])


def sublayer_projections(model, baseline, block: int, layer_type: str, includes_post_norm: bool):
    """(class-side table columns, memory-side table columns) of one sublayer and variant."""
    embeddings = head_embeddings(model)
    values = value_matrix(model.blocks[block], layer_type, includes_post_norm)
    baseline_values = value_matrix(baseline.blocks[block], layer_type, includes_post_norm)
    projections = embeddings @ values
    memory_classes, memory_projections = top_classes(projections)
    num_classes, num_memories = projections.shape
    keys = {"includes_post_norm": includes_post_norm, "layer_type": layer_type, "block": block}
    per_class = {
        **{key: [value] * num_classes for key, value in keys.items()},
        "class_index": np.arange(num_classes, dtype=np.int32),
        "agreement_score": class_value_agreement(embeddings, values).astype(np.float32),
        "random_agreement_score": class_value_agreement(head_embeddings(baseline), baseline_values).astype(np.float32),
        "top_memories": fixed_size_lists(top_memories(projections).astype(np.int32), pa.int32()),
    }
    per_memory = {
        **{key: [value] * num_memories for key, value in keys.items()},
        "memory": np.arange(num_memories, dtype=np.int32),
        "top_classes": fixed_size_lists(memory_classes.astype(np.int32), pa.int32()),
        "top_projections": fixed_size_lists(memory_projections.astype(np.float32), pa.float32()),
    }
    return per_class, per_memory


def value_projection_tables(model, baseline) -> tuple[pa.Table, pa.Table]:
    """Everything the memory figures need from the weights, for every block, type and variant.

    ``baseline`` is a random model of the same architecture (class-value agreement baseline).
    Returns the per-class table (agreement scores, V5) and the per-memory table (top classes).
    """
    per_class, per_memory = [], []
    for includes_post_norm in value_variants(model):
        for layer_type in LAYER_TYPES:
            for block in range(len(model.blocks)):
                classes, memories = sublayer_projections(model, baseline, block, layer_type, includes_post_norm)
                per_class.append(pa.table(classes))
                per_memory.append(pa.table(memories))
    return pa.concat_tables(per_class), pa.concat_tables(per_memory)


def write_value_projections(model, baseline, classes_path, memories_path, metadata: dict) -> None:
    """Write :func:`value_projection_tables` to the per-model cache (two Parquet files)."""
    per_class, per_memory = value_projection_tables(model, baseline)
    tables.write_table(per_class, classes_path, metadata)
    tables.write_table(per_memory, memories_path, metadata)
