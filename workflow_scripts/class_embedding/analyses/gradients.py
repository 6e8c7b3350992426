"""Explanations from the class embedding space (docs/method.md §4.12), through hooks on a timm ViT.

Class-embedding gradient maps: for every block b the attention sublayer's residual update a_b
(after W_O, before the residual add) is projected with the lens (the model's own final norm and
head, :func:`class_embedding.extraction.lens.project`); the loss of its [CLS] token for a target class is
differentiated with respect to the block's post-softmax attention weights A_b. Only the [CLS]
query row of the gradient is kept: G_b[h, 0, :].

All blocks of a batch of images in one backward pass: during the forward, a hook on each
block's ``attn.attn_drop`` (the identity in eval, applied to the weights right before
``weights @ values`` when fused attention is off) replaces the weights by a detached leaf copy
with the same values, and a pre-hook on every block detaches the block's input. Block b's loss
then reaches only its own leaf (a later block sees the residual stream detached), so one
backward of the summed losses of every block and image yields each ∂ℓ_b/∂A_b exactly, instead of
one backward per block and image.

Chefer et al. relevance (the baseline): one plain forward and one backward of the target logit
give ∂score/∂A_b of every block through the whole network; R = I, R ← R + mean_h max(∂score/∂A_b ⊙
A_b, 0)·R block after block; relevance of the image tokens = R[0, P:] after the P prefix tokens.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..extraction import lens, projection
from ..models.tokens import TokenLayout
from .model_runs import attention_modules, require_class_token

#: Loss of a block's [CLS] projection. ``double_softmax`` is the paper's: cross-entropy applied
#: to the already softmaxed projection (docs/method.md §7.6); ``cross_entropy`` applies it to the logits.
LOSSES = ("double_softmax", "cross_entropy")
METHODS = ("grads", "grads_chefer")


def projection_loss(logits: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """Summed loss of class logits (B, C) for the target classes (B,)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}': expected one of {LOSSES}")
    if loss == "double_softmax":
        logits = logits.softmax(dim=-1)
    return F.cross_entropy(logits, targets, reduction="sum")


@contextmanager
def unfused_attention(model):
    """Every block's attention materialises its weights (and passes them through ``attn_drop``)
    within the block; the fused setting is restored on exit."""
    require_class_token(model)
    attentions = attention_modules(model)
    fused = [attn.fused_attn for attn in attentions]
    try:
        for attn in attentions:
            attn.fused_attn = False
        yield attentions
    finally:
        for attn, was_fused in zip(attentions, fused):
            attn.fused_attn = was_fused


@contextmanager
def hooks(registrations):
    handles = []
    try:
        for module, kind, function in registrations:
            register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            handles.append(register(function))
        yield
    finally:
        for handle in handles:
            handle.remove()


def block_gradients(model, images: torch.Tensor, targets: torch.Tensor, loss: str = "double_softmax") -> torch.Tensor:
    """(B, L, H, N) gradient of each block's [CLS] projection loss for ``targets`` with respect
    to the [CLS] query row of that block's attention weights, all blocks in one backward."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}': expected one of {LOSSES}")
    blocks = list(model.blocks)
    leaves: list[torch.Tensor | None] = [None] * len(blocks)
    updates: list[torch.Tensor | None] = [None] * len(blocks)

    def detach_input(module, args):
        return (args[0].detach(), *args[1:])

    def leaf_weights(b):
        def hook(module, inputs, weights):
            leaves[b] = weights.detach().requires_grad_(True)
            return leaves[b]

        return hook

    def keep_update(b):
        def hook(module, inputs, output):
            updates[b] = output

        return hook

    registrations = []
    for b, block in enumerate(blocks):
        attn_update, _ = lens.residual_update_modules(block)
        registrations += [
            (block, "pre", detach_input),
            (block.attn.attn_drop, "post", leaf_weights(b)),
            (attn_update, "post", keep_update(b)),
        ]
    with unfused_attention(model), hooks(registrations), torch.enable_grad():
        model(images)
        total = sum(projection_loss(projection.project(model, update[:, 0]), targets, loss) for update in updates)
        grads = torch.autograd.grad(total, leaves)
    return torch.stack([grad[:, :, 0, :] for grad in grads], dim=1)


def chefer_relevance(model, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, N) relevance of every sequence position for the target logit (Chefer et al. 2021):
    row 0 ([CLS]) of R after R = I, R ← R + Ā_b R for b = 0, 1, …; position 0 is [CLS] itself."""
    weights: list[torch.Tensor] = []

    def keep_weights(module, inputs, output):
        weights.append(output)

    registrations = [(block.attn.attn_drop, "post", keep_weights) for block in model.blocks]
    with unfused_attention(model), hooks(registrations), torch.enable_grad():
        # An input that requires a gradient builds the graph even when the parameters do not.
        logits = model(images.detach().requires_grad_(True))
        score = logits.gather(1, targets.view(-1, 1)).sum()
        grads = torch.autograd.grad(score, weights)
    # R = (I + Ā_L−1) ⋯ (I + Ā_0), so its row 0 is e_0ᵀ multiplied by the factors from the last
    # block down: a vector–matrix product per block instead of the N×N products of R itself.
    batch, _, n_tokens, _ = weights[0].shape
    row = torch.zeros(batch, 1, n_tokens, device=images.device)
    row[:, 0, 0] = 1
    for attention, grad in zip(reversed(weights), reversed(grads)):
        cam = (grad * attention).clamp(min=0).mean(dim=1).detach()
        row = row + torch.bmm(row, cam)
    return row[:, 0]


def head_maps(gradients: torch.Tensor, n_prefix: int = 1) -> torch.Tensor:
    """Head-specific importance −G_b[h, 0, n_prefix:] of every image token: (B, L, H, grid²)."""
    return -gradients[..., n_prefix:]


def summed_map(gradients: torch.Tensor, n_prefix: int = 1) -> torch.Tensor:
    """The class-embedding explanation −Σ_b Σ_h G_b[h, 0, n_prefix:] (docs/method.md §4.12): (B, grid²)."""
    return -gradients[..., n_prefix:].sum(dim=(1, 2))


def explanation_maps(
    model,
    loader,
    targets: np.ndarray,
    *,
    loss: str,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Summed gradient map and Chefer relevance of the image tokens of every image, for its
    target class: {method: (n_images, grid²) float32}, rows in loader order."""
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    n_prefix = TokenLayout.of_timm(model).n_prefix
    maps = {method: [] for method in METHODS}
    start = 0
    for batch in loader:
        batch_targets = torch.as_tensor(targets[start : start + len(batch)], device=device)
        batch = batch.to(device)
        maps["grads"].append(summed_map(block_gradients(model, batch, batch_targets, loss), n_prefix).cpu())
        maps["grads_chefer"].append(chefer_relevance(model, batch, batch_targets)[:, n_prefix:].cpu())
        start += len(batch)
    if start != len(targets):
        raise InputError(f"the images gave {start} inputs but there are {len(targets)} targets")
    return {method: torch.cat(parts).float().numpy() for method, parts in maps.items()}


def maps_table(images: np.ndarray, maps: dict[str, np.ndarray]) -> pa.Table:
    """Tidy rows (image, method, token, importance); ``token`` is the sequence position of the
    image token (1..N−1; 0 would be [CLS]), as in the extraction and probe tables."""
    columns = {"image": [], "method": [], "token": [], "importance": []}
    for method, values in maps.items():
        n_images, n_tokens = values.shape
        columns["image"].append(np.repeat(images.astype(np.int32), n_tokens))
        columns["method"].append(np.full(n_images * n_tokens, method))
        columns["token"].append(np.tile(np.arange(1, n_tokens + 1, dtype=np.int16), n_images))
        columns["importance"].append(values.reshape(-1).astype(np.float32))
    return pa.table(
        {
            "image": pa.array(np.concatenate(columns["image"])),
            "method": pa.array(np.concatenate(columns["method"])).dictionary_encode(),
            "token": pa.array(np.concatenate(columns["token"])),
            "importance": pa.array(np.concatenate(columns["importance"])),
        }
    )


def read_maps(path, n_images: int | None = None) -> dict[str, np.ndarray]:
    """maps.parquet back to {method: (n_images, N−1)}, rows = images 0..n−1."""
    from ..tables import read_table

    frame = read_table(path).to_pandas()
    result = {}
    for method, rows in frame.groupby("method", observed=True, sort=False):
        rows = rows.sort_values(["image", "token"], kind="stable")
        images = np.unique(rows["image"].to_numpy())
        n_tokens = rows["token"].nunique()
        if not np.array_equal(images, np.arange(images.size)) or len(rows) != images.size * n_tokens:
            raise InputError(f"{path}: method '{method}' does not cover images 0..n−1 × every token once: rebuild it.")
        if n_images is not None and images.size != n_images:
            raise InputError(f"{path} has maps of {images.size} images but the stimuli are {n_images}: rebuild it.")
        result[str(method)] = rows["importance"].to_numpy().reshape(images.size, n_tokens)
    missing = set(METHODS) - set(result)
    if missing:
        raise InputError(f"{path} has no rows for {sorted(missing)}: rebuild it.")
    return result


# ---------------------------------------------------------------------------------------------
# Rule entry point


def run_maps(setup, output_path, settings: dict, extraction: dict) -> None:
    """Gradient maps and Chefer relevance of every stimulus for its true class (rule explain_maps).

    ``setup`` is a :class:`class_embedding.analyses.model_runs.Setup` (model and stimuli in stimulus order).
    """
    from .. import tables
    from ..models import building

    device = building.pick_device(extraction["device"])
    loader = torch.utils.data.DataLoader(
        setup.dataset, batch_size=settings["batch_size"], num_workers=extraction["workers"],
        pin_memory=device.type == "cuda",
    )  # fmt: skip
    maps = explanation_maps(setup.model, loader, setup.targets, loss=settings["loss"], device=device)
    metadata = {key: value for key, value in setup.metadata.items() if key != "block"}
    tables.write_table(
        maps_table(setup.images, maps), output_path, {**metadata, "loss": settings["loss"], "device": str(device)}
    )
