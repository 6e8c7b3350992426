"""The lens's head projection with one matmul per residual update instead of one per state.

The final LayerNorm followed by the head is ``E·LN(x) + b = (W·x − μ(x)·W·1) / σ(x) + c`` with
``W = E·diag(γ)`` and ``c = E·β + b``. ``W·x`` is linear in ``x`` and the residual stream after block
b is the stream before it plus the block's two sublayer updates, so ``W·hs_b`` is a running sum of
``W·hs_{−1}`` (the input of block 0) and the ``W·update`` the lens computes anyway for the updates'
own logits. Each state keeps its own ``μ`` and ``σ``. For 12 blocks: 25 matmuls instead of 36; the
result equals the direct projection up to float32 rounding.
"""

from __future__ import annotations

import timm.layers
import torch

from . import lens

# Norms whose forward is exactly F.layer_norm over the last axis (subclasses may compute something else).
LAYER_NORMS = (torch.nn.LayerNorm, timm.layers.LayerNorm)

# Direct and incremental logits of the last block's pooled-position token may differ by float32
# rounding only; more means a block does not add its updates to the stream the way the lens hooks them.
AGREEMENT_TOLERANCE = 1e-3


def agreement_tolerance(device: torch.device) -> float:
    """TF32 matmuls (allowed on a GPU) round their inputs to 10-bit mantissas: both paths then
    differ by about 1e-3 relative, so the check loosens to catch wrong sums only."""
    tf32 = device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
    return 10 * AGREEMENT_TOLERANCE if tf32 else AGREEMENT_TOLERANCE


class FoldedHead:
    """The head with the final norm's affine folded in: ``W`` (as Wᵀ, D × C), ``c`` and ``W·1``.

    ``eps`` is None where the final norm is the identity (no μ/σ step).
    """

    def __init__(self, model: torch.nn.Module):
        weight, bias = lens.linear_head(model)
        norm = final_layer_norm(model)
        if isinstance(norm, torch.nn.Identity):
            self.weight_t = weight.t().contiguous()
            self.bias = bias.clone()
            self.corrections = None
            self.eps = None
        else:
            gamma = norm.weight.float() if norm.weight is not None else torch.ones_like(weight[0])
            beta = norm.bias.float() if norm.bias is not None else torch.zeros_like(weight[0])
            folded = weight * gamma
            self.weight_t = folded.t().contiguous()
            self.bias = torch.addmv(bias, weight, beta)
            # Rows W·1 and c: the right-hand side of the rank-2 correction in :meth:`logits`.
            self.corrections = torch.stack((folded.sum(dim=1), self.bias))
            self.eps = norm.eps

    def raw(self, states: torch.Tensor) -> torch.Tensor:
        """``W·x`` of states (..., D) as float32 (..., C)."""
        flat = states.reshape(-1, states.shape[-1]).float()
        return (flat @ self.weight_t).reshape(*states.shape[:-1], -1)

    def logits(self, raw: torch.Tensor, states: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """Logits from ``W·x`` and the states' own statistics, written over ``raw`` when ``in_place``."""
        flat_raw = raw.view(-1, raw.shape[-1])
        if self.eps is None:
            return torch.add(raw, self.bias, out=raw if in_place else None)
        flat = states.reshape(-1, states.shape[-1]).float()
        # μ and 1/σ exactly as LayerNorm computes them (torch.var_mean is several times slower on CPU).
        _, mean, scale = torch.native_layer_norm(flat, flat.shape[-1:], None, None, self.eps)
        scaled = flat_raw.mul_(scale) if in_place else flat_raw * scale
        # −μ/σ·W·1 + c in one rank-2 update: two passes over the logits in all, no temporaries.
        corrections = torch.cat((-mean * scale, torch.ones_like(mean)), dim=1)
        return scaled.addmm_(corrections, self.corrections).view_as(raw)


def final_layer_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    """The one norm that ``lens.project`` applies before the head, if it can be folded: a LayerNorm
    or the identity. None for anything else (RMSNorm, both norms active, ...), where the lens
    has to use the direct projection: their statistics are not a mean and a deviation."""
    norms = [m for m in (model.norm, model.fc_norm) if not isinstance(m, torch.nn.Identity)]
    if not norms:
        return torch.nn.Identity()
    if len(norms) == 1 and type(norms[0]) in LAYER_NORMS and len(norms[0].normalized_shape) == 1:
        return norms[0]
    return None


def supports(model: torch.nn.Module) -> bool:
    return final_layer_norm(model) is not None


class IncrementalProjection:
    """Logits of the lens's states in forward order: :meth:`start` with the input of block 0, then
    per block its attention update, its MLP update and the stream after it (:meth:`update`, :meth:`stream`)."""

    def __init__(self, model: torch.nn.Module):
        if not supports(model):
            raise ValueError(f"the final norm of {type(model).__name__} cannot be folded into the head")
        self.model = model
        self.head = FoldedHead(model)
        self._stream_raw: torch.Tensor | None = None
        self._device = None

    def start(self, block_input: torch.Tensor) -> None:
        if self._device != block_input.device:
            for name in ("weight_t", "bias", "corrections"):
                value = getattr(self.head, name)
                if value is not None:
                    setattr(self.head, name, value.to(block_input.device))
            self._device = block_input.device
        self._stream_raw = self.head.raw(block_input)

    def update(self, states: torch.Tensor) -> torch.Tensor:
        """Logits of one sublayer update; its ``W·x`` joins the stream's running sum."""
        raw = self.head.raw(states)
        self._stream_raw.add_(raw)
        return self.head.logits(raw, states, in_place=True)

    def stream(self, states: torch.Tensor) -> torch.Tensor:
        """Logits of the residual stream after a block, from the running sum."""
        return self.head.logits(self._stream_raw, states)

    def check_against_direct(self, states: torch.Tensor, logits: torch.Tensor, context: str) -> None:
        """Compares token 0 of the last stream's logits with the direct projection (one row per
        image: negligible cost). A difference beyond rounding means some block's output is not its
        input plus the two hooked updates, and the running sum is wrong."""
        direct = lens.project(self.model, states[:, :1])
        error = (direct - logits[:, :1]).abs().max().item()
        scale = max(direct.abs().max().item(), 1.0)
        if error > agreement_tolerance(states.device) * scale:
            raise RuntimeError(
                f"incremental lens projection failed for {context}: the last block's logits differ from "
                f"the direct projection by {error:.3g}; this block type does not add the hooked updates "
                "to its stream. Use ClassEmbeddingLens(model, projection='direct')."
            )
