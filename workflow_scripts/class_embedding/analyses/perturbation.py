"""Attention and token perturbations of a [CLS] ViT (docs/method.md §4.9, §4.10), through hooks only.

- Attention perturbation: in every block the post-softmax attention weights are modified before
  they multiply the values. With ``fused_attn`` off, timm's ``Attention.forward`` passes the
  weights through ``attn_drop`` (a Dropout, the identity in eval) right before ``attn @ v``; a
  forward hook on that module returns the modified weights.
- Token perturbation: only the prefix tokens and the image tokens of one label are kept,
  selected from the embedded sequence as it enters the first block (a pre-hook), so they keep
  their absolute position embeddings; relative position biases and rotary embeddings, applied
  inside every attention, are gathered to the kept positions (:mod:`.token_removal`). The kept
  tokens then attend exactly as in the full sequence with the removed keys masked out.

Each image's last block output is projected with the lens (model's own norm + head) and reduced
to the rank of the correct class per token. Images are batched: all images together for the
attention perturbation, grouped by kept length for the token perturbation (exact, no padding).
Results are pyarrow tables (one row per image and token) plus a per-image predictions table.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from .. import tables
from ..errors import InputError
from ..extraction import lens, projection, selection
from ..models import building, families
from ..models.tokens import TokenLayout
from .model_runs import Setup, TokenSelection, attention_modules, require_class_token
from .perturbation_masks import ATTENTION_TYPES, kept_token_mask
from .token_labels import read_token_labels

# ---------------------------------------------------------------------------------------------
# Attention perturbation (docs/method.md §4.9)


def perturb_attention(weights: torch.Tensor, kind: str, inplace: bool = False, n_prefix: int = 1) -> torch.Tensor:
    """Modified post-softmax weights (..., N, N); rows are queries, column 0 is [CLS], the first
    ``n_prefix`` positions are the prefix tokens ([CLS], [DIST], registers).

    ``self_only``: every image-token row becomes one-hot on its own position;
    ``no_cls``: image-token rows lose their weight on [CLS] (no renormalisation).
    The prefix rows are left untouched by both. ``inplace`` saves a copy of the largest tensor of
    the forward where no gradient needs the original weights.
    """
    if kind not in ATTENTION_TYPES:
        raise ValueError(f"unknown attention perturbation '{kind}': expected one of {ATTENTION_TYPES}")
    perturbed = weights if inplace else weights.clone()
    if kind == "self_only":
        n_tokens = weights.shape[-1]
        perturbed[..., n_prefix:, :] = 0
        image_tokens = torch.arange(n_prefix, n_tokens, device=weights.device)
        perturbed[..., image_tokens, image_tokens] = 1
    else:
        perturbed[..., n_prefix:, 0] = 0
    return perturbed


def perturbation_hook(kind: str, n_prefix: int):
    def hook(module, inputs, weights):
        return perturb_attention(weights, kind, inplace=not torch.is_grad_enabled(), n_prefix=n_prefix)

    return hook


@contextmanager
def perturbed_attention(model, kind: str):
    """Within the block, every block's attention uses :func:`perturb_attention` weights.

    Fused attention is switched off (it never materialises the weights) and restored on exit,
    with the hooks removed, so the model is unchanged afterwards.
    """
    if kind not in ATTENTION_TYPES:
        raise ValueError(f"unknown attention perturbation '{kind}': expected one of {ATTENTION_TYPES}")
    require_class_token(model)
    n_prefix = TokenLayout.of_timm(model).n_prefix
    attentions = attention_modules(model)
    fused = [attn.fused_attn for attn in attentions]
    handles = []
    try:
        for attn in attentions:
            attn.fused_attn = False
            handles.append(attn.attn_drop.register_forward_hook(perturbation_hook(kind, n_prefix)))
        yield model
    finally:
        for handle in handles:
            handle.remove()
        for attn, was_fused in zip(attentions, fused):
            attn.fused_attn = was_fused


# ---------------------------------------------------------------------------------------------
# Token perturbation (docs/method.md §4.10)


def length_groups(keep: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Image batches whose members keep the same number of tokens (each at most ``batch_size``).

    Groups in increasing kept length, images in stimulus order within a group.
    """
    lengths = keep.sum(axis=1)
    batches = []
    for length in np.unique(lengths):
        members = np.flatnonzero(lengths == length)
        batches += [members[start : start + batch_size] for start in range(0, members.size, batch_size)]
    return batches


def kept_positions(keep: np.ndarray) -> torch.Tensor:
    """(B, K) ascending kept positions of images that all keep K tokens."""
    _, positions = np.nonzero(keep)
    return torch.from_numpy(positions.reshape(keep.shape[0], -1))


# ---------------------------------------------------------------------------------------------
# Running the model and reducing the last block


@dataclass
class LastBlock:
    """Per batch: rank and logit of the correct class for every token of the last block, and
    the model's logits."""

    rank: torch.Tensor
    logit: torch.Tensor
    model_logits: torch.Tensor


def pooled_from(model) -> int | None:
    """First sequence position the head pools, None for a head that reads fixed tokens ([CLS],
    distillation): with fewer tokens kept an average is NaN and a max an error."""
    pool = families.pooling(model)
    return None if pool.kind in ("token", "distilled") else pool.first_token


def last_block(model, images: torch.Tensor, targets: torch.Tensor, context: str, predict: bool = True) -> LastBlock:
    """Forward ``images``; project the last block output with the lens (docs/method.md §4.9).

    ``predict=False`` where the head has nothing to pool (only prefix tokens kept, an average
    pool): the blocks run, the per-token ranks are defined, the model's logits are NaN.
    """
    captured = {}

    def capture(module, inputs, output):
        captured["state"] = output

    handle = model.blocks[-1].register_forward_hook(capture)
    try:
        if predict:
            model_logits = model(images)
        else:
            model.forward_features(images)
            model_logits = torch.full((len(images), model.num_classes), float("nan"), device=images.device)
    finally:
        handle.remove()
    state = captured["state"]
    if predict:
        lens.audit(model, state, model_logits, context)
    logits = projection.project(model, state)
    token_targets = targets.view(-1, 1).expand(logits.shape[:2])
    return LastBlock(
        rank=selection.rank_of(logits, token_targets).cpu(),
        logit=logits.gather(-1, token_targets.unsqueeze(-1)).squeeze(-1).cpu(),
        model_logits=model_logits.float().cpu(),
    )


def predictions_table(images: np.ndarray, targets: np.ndarray, model_logits: torch.Tensor) -> pa.Table:
    """One row per image: label, the perturbed model's prediction, correctness, true-class logit.
    An image without logits (NaN: nothing to pool) has prediction −1 and counts as not correct."""
    predicted = model_logits.isfinite().all(-1).numpy()
    pred = np.where(predicted, model_logits.nan_to_num().argmax(-1).numpy(), -1)
    return pa.table(
        {
            "image": pa.array(images.astype(np.int32)),
            "label": pa.array(targets.astype(np.int16)),
            "pred": pa.array(pred.astype(np.int16)),
            "correct": pa.array(predicted & (pred == targets)),
            "logit": pa.array(model_logits.numpy()[np.arange(len(targets)), targets].astype(np.float32)),
        }
    )


def token_rows(
    images: np.ndarray, positions: np.ndarray, rank: np.ndarray, logit: np.ndarray, position_name: str
) -> pa.Table:
    """One row per (image, position), sorted by image then position."""
    order = np.lexsort((positions, images))
    return pa.table(
        {
            "image": pa.array(images[order].astype(np.int32)),
            position_name: pa.array(positions[order].astype(np.int16)),
            "rank": pa.array(rank[order].astype(np.int16)),
            "logit": pa.array(logit[order].astype(np.float32)),
        }
    )


@dataclass
class PerturbationResult:
    tokens: pa.Table
    predictions: pa.Table


#: On CPU, forward at most this many attention weights (B·H·N², float32: 8 MiB) at once: the
#: materialised weights of larger batches leave the cache and slow the forward (2× measured for
#: batch 64 vs 8 of the 14×14 demo model), while batches of a few images already fill the cores.
CPU_ATTENTION_ELEMENTS = 1 << 21


def forward_chunk(model, device: torch.device) -> int | None:
    """Images per forward under the attention perturbation; None = the whole batch (GPU)."""
    if device.type != "cpu":
        return None
    n_tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    return max(1, CPU_ATTENTION_ELEMENTS // (model.blocks[0].attn.num_heads * n_tokens**2))


def attention_perturbation(
    model,
    dataset,
    images: np.ndarray,
    targets: np.ndarray,
    kind: str,
    *,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
) -> PerturbationResult:
    """docs/method.md §4.9: every image through the model perturbed in every block (``kind``).

    ``dataset[i]`` is the preprocessed image of stimulus ``images[i]`` with class ``targets[i]``.
    Rows: image, token (0 = [CLS]), rank, logit.
    """
    model = model.to(device).eval()
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda"
    )
    chunk = forward_chunk(model, device) or batch_size
    parts, start = [], 0
    with perturbed_attention(model, kind), torch.inference_mode():
        for batch in tqdm(loader, desc=f"attention {kind}", file=sys.stderr, mininterval=5):
            for images_chunk in batch.split(chunk):
                chunk_targets = torch.from_numpy(targets[start : start + len(images_chunk)]).to(device)
                parts.append(
                    last_block(model, images_chunk.to(device), chunk_targets, f"attn_{kind}, images {start}..")
                )
                start += len(images_chunk)
    rank = torch.cat([p.rank for p in parts]).numpy()
    n_images, n_tokens = rank.shape
    return PerturbationResult(
        tokens=token_rows(
            np.repeat(images, n_tokens),
            np.tile(np.arange(n_tokens), n_images),
            rank.reshape(-1),
            torch.cat([p.logit for p in parts]).numpy().reshape(-1),
            "token",
        ),
        predictions=predictions_table(images, targets, torch.cat([p.model_logits for p in parts])),
    )


def token_perturbation(
    model,
    dataset,
    images: np.ndarray,
    targets: np.ndarray,
    keep: np.ndarray,
    *,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
) -> PerturbationResult:
    """docs/method.md §4.10: every image with only its ``keep`` positions (bool (n_images, N), column 0 =
    [CLS], kept) entering the first block. Images are batched by kept length.

    Rows: image, position (sequence position, 0 = [CLS], t = image token t-1), rank, logit; the
    predictions table also gives each image's number of kept image tokens. A model that averages
    its image tokens predicts nothing for an image that keeps none: pred −1, not correct, logit NaN.
    """
    if not keep[:, 0].all():
        raise ValueError("the [CLS] position 0 must be kept for every image")
    model = model.to(device).eval()
    batches = length_groups(keep, batch_size)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=workers, pin_memory=device.type == "cuda"
    )
    row_images, row_positions, ranks, logits = [], [], [], []
    model_logits = torch.empty(len(images), model.num_classes)
    first_pooled = pooled_from(model)
    with TokenSelection(model) as selection, torch.inference_mode():
        for members, batch in tqdm(
            zip(batches, loader), total=len(batches), desc="tokens", file=sys.stderr, mininterval=5
        ):
            positions = kept_positions(keep[members])
            selection.set_positions(positions.to(device))
            result = last_block(
                model,
                batch.to(device),
                torch.from_numpy(targets[members]).to(device),
                f"tokens, images {members[:3]}..",
                predict=first_pooled is None or positions.shape[1] > first_pooled,
            )
            row_images.append(np.repeat(images[members], positions.shape[1]))
            row_positions.append(positions.numpy().reshape(-1))
            ranks.append(result.rank.numpy().reshape(-1))
            logits.append(result.logit.numpy().reshape(-1))
            model_logits[torch.from_numpy(members)] = result.model_logits
    predictions = predictions_table(images, targets, model_logits)
    predictions = predictions.append_column("n_kept_image_tokens", pa.array((keep.sum(axis=1) - 1).astype(np.int16)))
    return PerturbationResult(
        tokens=token_rows(*(np.concatenate(parts) for parts in (row_images, row_positions, ranks, logits)), "position"),
        predictions=predictions,
    )


# ---------------------------------------------------------------------------------------------
# Rule entry points


def write_result(result: PerturbationResult, output, metadata: dict) -> None:
    tables.write_table(result.tokens, output.ranks, metadata)
    tables.write_table(result.predictions, output.predictions, metadata)


def run_attention(setup: Setup, kind: str, output, settings: dict) -> None:
    device = building.pick_device(settings["device"])
    result = attention_perturbation(
        setup.model, setup.dataset, setup.images, setup.targets, kind,
        batch_size=settings["batch_size"], device=device, workers=settings["workers"],
    )  # fmt: skip
    write_result(result, output, {**setup.metadata, "perturbation": f"attn_{kind}", "device": str(device)})


def run_tokens(setup: Setup, mask: str, token_labels: str | Path, output, settings: dict) -> None:
    layout = TokenLayout.of_timm(setup.model)
    class_mask = read_token_labels(token_labels, layout, model=setup.metadata.get("model"))  # row i = image i
    if not np.array_equal(setup.images, np.arange(class_mask.shape[0])):
        raise InputError(
            f"{token_labels} labels {class_mask.shape[0]} images but the stimuli are {len(setup.images)}: rebuild it."
        )
    device = building.pick_device(settings["device"])
    result = token_perturbation(
        setup.model, setup.dataset, setup.images, setup.targets, kept_token_mask(class_mask, mask, layout.n_prefix),
        batch_size=settings["batch_size"], device=device, workers=settings["workers"],
    )  # fmt: skip
    write_result(result, output, {**setup.metadata, "perturbation": f"tokens_no_{mask}", "device": str(device)})
