"""Key–value memories (docs/method.md §4.11): value vectors projected onto the class embeddings.

Notation for block b: the MLP value matrix ``W = fc2.weight`` (D×M, column k = value vector of
memory k) and the attention value matrix ``W = proj.weight`` (D×D, column k = value vector of the
k-th coefficient of the concatenated head outputs); ``E = head.weight`` (C×D; in distilled
models its mean with ``head_dist``, the lens's projection); ``P = E·W`` (head bias not used).
The memories activated by a token are not recomputed here: extraction stores the five most
activated ones per token (``mem_top5``: the largest coefficients, the pre-GELU ``fc1`` output of
a plain MLP, else the input of ``fc2``; :func:`class_embedding.models.families.memory_modules`)
and the top-1 class of the projected sublayer output (``top5[..., 0]``).

Everything here is numpy: the value vectors' projections come from
:mod:`.value_projections` (the one job that reads the weights) through Parquet tables.
"""

from __future__ import annotations

import zlib

import numpy as np

TOP_K = 5
LAYER_TYPES = ("attn", "mlp")

# ---------------------------------------------------------------------------------------------
# Seed of the random baseline model


def value_baseline_seed(seed: int, name: str) -> int:
    """Torch seed of the on-the-fly random model of §4.11a: independent of the random twin's."""
    return int(seed) * 1_000_003 + zlib.crc32(f"{name}_value_baseline".encode()) % 1_000_003


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
