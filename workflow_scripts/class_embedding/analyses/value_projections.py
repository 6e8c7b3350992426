"""The value vectors of a model's weights projected onto its class embeddings (docs/method.md §4.11),
written once per model as Parquet tables that the memory figures read (:mod:`.memories`).

Post-norm blocks (timm ``ResPostBlock``, the GAP model) add ``norm(sublayer(x))`` to the residual
stream. That LayerNorm acts on the whole sublayer output, so one value vector's contribution is
not exactly linear; we take the norm's affine scaling ``weight ⊙ w_k`` as the image of value
vector k (the shared bias shifts every memory alike and is left out). The original ignores the
post-norm (docs/method.md §7.12), which is why its GAP panels are flat; that variant
(``includes_post_norm=False``) is the one plotted, the scaled one is computed beside it.
Where a block has LayerScale (DeiT-III, DINOv2, BEiT, …; none of the paper's models), its vector
scales every value vector of that sublayer, as it scales the update the lens projects.
An MLP's inner norm (``scale_mlp_norm``, EVA/BEiT ``scale_mlp``) is not folded in: its weight and
bias stay in the coefficients, which extraction reads at ``fc2``'s input, so the value vectors are
``fc2``'s columns for every MLP kind (docs/method.md §4.11).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from .. import tables
from ..extraction import projection
from ..models import families
from .memories import LAYER_TYPES, class_value_agreement, top_classes, top_memories

# ---------------------------------------------------------------------------------------------
# Value vectors of a timm model


def has_post_norm(model) -> bool:
    """Whether the blocks add a normalised sublayer output (ResPostBlock) to the residual."""
    return families.has_post_norm(model.blocks[0])


def head_embeddings(model) -> np.ndarray:
    """The C×D matrix the lens projects through (a distilled model's: the mean of its two heads)."""
    return as_array(projection.linear_head(model)[0])


def as_array(parameter) -> np.ndarray:
    return parameter.detach().float().cpu().numpy()


def value_matrix(block, layer_type: str, includes_post_norm: bool) -> np.ndarray:
    """D×M value vectors of one sublayer, as columns, times its LayerScale where it has one;
    optionally scaled by the block's post-norm."""
    linear = block.mlp.fc2 if layer_type == "mlp" else block.attn.proj
    values = as_array(linear.weight)
    gamma = families.layer_scale(block, layer_type)
    if gamma is not None:
        values = as_array(gamma)[:, None] * values
    if includes_post_norm:
        norm = block.norm2 if layer_type == "mlp" else block.norm1
        values = as_array(norm.weight)[:, None] * values
    return values


def value_variants(model) -> list[bool]:
    """``includes_post_norm`` values to compute; the first, the paper's, is the one the figures plot."""
    return [False, True] if has_post_norm(model) else [False]


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
