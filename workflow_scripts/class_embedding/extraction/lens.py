"""The class-embedding lens: project hidden states through the model's own final norm and head.

One forward pass yields, for every block b, the residual stream after the block (``hs_b``) and
the two residual updates of its sublayers (``attn_b``, ``mlp_b``). Each state is projected and
reduced right where a hook receives it (docs/method.md §3, docs/method.md §10): rank of the true class, its
logit and the top-5 classes, plus the five most activated key–value memories of each sublayer
(docs/method.md §4.11b). No hidden state outlives its hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from timm.models.vision_transformer import VisionTransformer

from ..models import families
from . import incremental_projection, selection
from .projection import normalise, project
from .reader import LAYER_KINDS

TOP_K = selection.TOP_K


def layer_names(num_blocks: int) -> list[str]:
    return [f"{kind}_{b}" for kind in LAYER_KINDS for b in range(num_blocks)]


def has_class_token(model: VisionTransformer) -> bool:
    return model.cls_token is not None


def pooled_logits(
    model: VisionTransformer, last_state: torch.Tensor, pooling: families.Pooling | None = None
) -> torch.Tensor:
    """What the lens says the model outputs, from its last residual state (B, N, D), pooled as the
    model pools (``pooling``: the model's own unless given): the projection of the pooled token,
    the mean of the per-token projections where the norm comes before the average pool, and for
    a distilled model the mean of its two heads on their own tokens after the lens's final norm.
    """
    pool = families.pooling(model) if pooling is None else pooling
    if pool.kind == "token":
        return project(model, last_state[:, 0])
    if pool.kind == "distilled":
        normed = normalise(model, last_state[:, :2])
        first = torch.nn.functional.linear(normed[:, 0], model.head.weight.float(), model.head.bias.float())
        second = torch.nn.functional.linear(normed[:, 1], model.head_dist.weight.float(), model.head_dist.bias.float())
        return (first + second) / 2
    tokens = last_state[:, pool.first_token :]
    if pool.norm_first:  # only "avg" gets here
        return project(model, tokens).mean(dim=1)
    mean, peak = tokens.mean(dim=1), tokens.amax(dim=1)
    pooled = {"avg": mean, "max": peak, "avgmax": (mean + peak) / 2}[pool.kind]
    return project(model, pooled)


def output_for_last_state(model: VisionTransformer, images: torch.Tensor, last_state: torch.Tensor) -> torch.Tensor:
    """``model(images)`` with the output of its last block replaced by ``last_state`` (R, N, D),
    whose batch size may differ: the model's own norms, pool and head act on it."""
    handle = model.blocks[-1].register_forward_hook(lambda module, inputs, output: last_state)
    try:
        return model(images)
    finally:
        handle.remove()


def audited_positions(n_prefix: int, n_tokens: int) -> list[int]:
    """Every prefix token and the first, a middle and the last image token: the projection acts on
    each token alike, so a few show whether it is the model's."""
    return sorted({*range(n_prefix), n_prefix, (n_prefix + n_tokens) // 2, n_tokens - 1})


def residual_update_modules(block: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Modules whose outputs are exactly what the attention and MLP sublayers add to the stream.

    Pre-norm blocks add ``drop_path(ls(sublayer(norm(x))))``: the drop-path module (the identity
    in eval mode) sees the update after LayerScale, whichever way a family scales it. Residual
    post-norm blocks add ``norm(sublayer(x))``, so their post-norm is part of the update that
    the lens projects (docs/method.md §3, GAP model).
    """
    attn_name, mlp_name = families.block_family(block)
    return getattr(block, attn_name), getattr(block, mlp_name)


@dataclass
class LayerReduction:
    """Reduced statistics of one layer for one batch, all of shape (B, N[, 5])."""

    rank: torch.Tensor
    logit: torch.Tensor
    top5: torch.Tensor
    mem_top5: torch.Tensor | None = None

    def cpu(self) -> LayerReduction:
        return LayerReduction(
            *(None if t is None else t.cpu() for t in (self.rank, self.logit, self.top5, self.mem_top5))
        )


@dataclass
class BatchRecord:
    layers: dict[str, LayerReduction] = field(default_factory=dict)
    memory_top5: dict[str, torch.Tensor] = field(default_factory=dict)
    last_state: torch.Tensor | None = None


def register_memory_hook(module: torch.nn.Module, hook, from_input: bool):
    """Register ``hook`` to see the module's input (a pre-hook) or its output."""
    return module.register_forward_pre_hook(hook) if from_input else module.register_forward_hook(hook)


class ClassEmbeddingLens:
    """Hooks on a timm VisionTransformer that reduce every block's states during the forward.

    Use as a context manager around ``model(images)`` after :meth:`set_targets`; the hooks are
    removed on exit. ``record`` holds the reductions of the last batch.

    ``projection="incremental"`` (the default) projects each sublayer update once and obtains the
    streams' logits from running sums (see :mod:`.incremental_projection`); ``"direct"`` projects
    every state through :func:`project`. They agree up to float32 rounding. Models whose final norm
    is neither a LayerNorm nor the identity always use the direct projection.
    """

    def __init__(self, model: VisionTransformer, projection: str = "incremental"):
        if projection not in ("incremental", "direct"):
            raise ValueError(f"projection must be 'incremental' or 'direct', not {projection!r}")
        self.model = model
        self.targets: torch.Tensor | None = None
        self.record = BatchRecord()
        self._handles: list = []
        self._incremental = (
            incremental_projection.IncrementalProjection(model)
            if projection == "incremental" and incremental_projection.supports(model)
            else None
        )
        self.projection = "incremental" if self._incremental else "direct"

    def set_targets(self, targets: torch.Tensor) -> None:
        self.targets = targets
        self.record = BatchRecord()

    def _logits(self, name: str, states: torch.Tensor, is_last: bool = False) -> torch.Tensor:
        if self._incremental is None:
            return project(self.model, states)
        if name.startswith("hs"):
            logits = self._incremental.stream(states)
            if is_last:
                self._incremental.check_against_direct(states, logits, type(self.model).__name__)
            return logits
        return self._incremental.update(states)

    def _reduce(self, name: str, states: torch.Tensor, is_last: bool = False) -> None:
        logits = self._logits(name, states, is_last)
        targets = self.targets.view(-1, 1).expand(logits.shape[:2])
        rank, logit, top5 = selection.rank_logit_top5(logits, targets)
        self.record.layers[name] = LayerReduction(rank, logit, top5, self.record.memory_top5.pop(name, None))

    def _state_hook(self, name: str, keep_last: bool = False):
        def hook(module, inputs, output):
            if keep_last:
                self.record.last_state = output
            self._reduce(name, output, is_last=keep_last)

        return hook

    def _memory_hook(self, name: str, from_input: bool):
        # Attention memories are the coefficients entering the output projection (the
        # concatenated head outputs); MLP memories are the fc1 outputs before GELU (docs/method.md
        # §4.11b), or the input of fc2 in gated MLPs and MLPs with an inner norm
        # (families.memory_modules).
        def hook(module, inputs, output=None):
            coefficients = inputs[0] if from_input else output
            self.record.memory_top5[name] = selection.top5(coefficients)

        return hook

    def __enter__(self) -> ClassEmbeddingLens:
        blocks = list(self.model.blocks)
        if self._incremental is not None:
            start = self._incremental.start
            self._handles.append(blocks[0].register_forward_pre_hook(lambda module, inputs: start(inputs[0])))
        for b, block in enumerate(blocks):
            attn_update, mlp_update = residual_update_modules(block)
            self._handles += [
                register_memory_hook(module, self._memory_hook(f"{kind}_{b}", from_input), from_input)
                for kind, (module, from_input) in zip(("attn", "mlp"), families.memory_modules(block))
            ]
            self._handles += [
                attn_update.register_forward_hook(self._state_hook(f"attn_{b}")),
                mlp_update.register_forward_hook(self._state_hook(f"mlp_{b}")),
                block.register_forward_hook(self._state_hook(f"hs_{b}", keep_last=b == len(blocks) - 1)),
            ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def audit(
    model: VisionTransformer,
    last_state: torch.Tensor,
    logits: torch.Tensor,
    context: str,
    pooling: families.Pooling | None = None,
) -> None:
    """Lens audit of one batch: the lens's projection of the last residual state, pooled as the
    model pools, reproduces the model's own logits (RuntimeError otherwise)."""
    pooled = pooled_logits(model, last_state, pooling)
    check_close(pooled, logits, f"{context}: the pooled projection of the last block differs from the model's logits")


def audit_projection(model: VisionTransformer, images: torch.Tensor, last_state: torch.Tensor, context: str) -> None:
    """Lens audit of the per-token projection (one forward more): for tokens of the first image,
    :func:`project` of the token's last residual state equals the model's own output when that
    state stands at every token position. A norm or head that the model's forward does not apply
    (a distilled model's unused ``fc_norm``) fails it, whatever the pooling."""
    n_tokens = last_state.shape[1]
    states = last_state[0, audited_positions(model.num_prefix_tokens, n_tokens)]
    constant = states[:, None, :].expand(-1, n_tokens, -1).contiguous()
    own = output_for_last_state(model, images[:1], constant)
    what = "a token's projection differs from the model's own output with that token's state at every position"
    check_close(project(model, states), own, f"{context}: {what}")


def check_close(lens_logits: torch.Tensor, logits: torch.Tensor, what: str) -> None:
    error = (lens_logits - logits.float()).abs().max().item()
    scale = max(logits.float().abs().max().item(), 1.0)
    if error > 1e-3 * scale:
        raise RuntimeError(
            f"lens audit failed for {what} by {error:.3g}; the model does not compute its logits as the lens "
            f"projects them."
        )
