"""The lens's head projection with one matmul per residual update instead of one per state.

The final LayerNorm followed by the head is ``E·LN(x) + b = W_c·x / σ(x) + c`` with
``W_c = E·diag(γ)·(I − 11ᵀ/D)`` and ``c = E·β + b``: centring each row of ``E·diag(γ)`` makes
``W_c·x = E·diag(γ)·(x − μ(x)·1)``, so the matmul of the raw state already subtracts the mean.
``W_c·x`` is linear in ``x`` and the residual stream after block b is the stream before it plus the
block's two sublayer updates, so ``W_c·hs_b`` is a running sum of ``W_c·hs_{−1}`` (the input of
block 0) and the ``W_c·update`` the lens computes anyway for the updates' own logits. Each state
only needs its own ``1/σ``. For 12 blocks: 25 matmuls instead of 36, and one scale-and-shift pass
per state; the result equals the direct projection up to float32 rounding.
"""

from __future__ import annotations

import timm.layers
import torch

from ..models import families
from .projection import linear_head, project

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


def inverse_deviation(flat: torch.Tensor, eps: float) -> torch.Tensor:
    """``1/σ`` of each row of (M, D), with LayerNorm's biased variance, as (M, 1).

    A mean, one centred copy and a vector norm: several times faster on a CPU than
    ``torch.var_mean`` or ``native_layer_norm`` (which also writes the normalised states).
    """
    centred = flat - flat.mean(dim=-1, keepdim=True)
    variance = torch.linalg.vector_norm(centred, dim=-1, keepdim=True).square_().div_(flat.shape[-1])
    return variance.add_(eps).rsqrt_()


class FoldedHead:
    """The head with the final norm folded in: ``W_c`` (as W_cᵀ, D × C) and ``c``.

    ``eps`` is None where the final norm is the identity: ``W_c`` is then the head itself and
    there is no ``1/σ`` step.
    """

    def __init__(self, model: torch.nn.Module):
        weight, bias = linear_head(model)
        norm = final_layer_norm(model)
        if isinstance(norm, torch.nn.Identity):
            self.weight_t = weight.t().contiguous()
            self.bias = bias.clone()
            self.eps = None
        else:
            gamma = norm.weight.float() if norm.weight is not None else torch.ones_like(weight[0])
            beta = norm.bias.float() if norm.bias is not None else torch.zeros_like(weight[0])
            folded = weight * gamma
            self.weight_t = (folded - folded.mean(dim=1, keepdim=True)).t().contiguous()
            self.bias = torch.addmv(bias, weight, beta)
            self.eps = norm.eps

    def raw(self, states: torch.Tensor) -> torch.Tensor:
        """``W_c·x`` of states (..., D) as float32 (..., C)."""
        flat = states.reshape(-1, states.shape[-1]).float()
        return (flat @ self.weight_t).reshape(*states.shape[:-1], -1)

    def logits(self, raw: torch.Tensor, states: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """Logits ``raw / σ + c`` from ``W_c·x`` and the states' own σ, written over ``raw`` when ``in_place``."""
        if self.eps is None:
            return torch.add(raw, self.bias, out=raw if in_place else None)
        flat_raw = raw.view(-1, raw.shape[-1])
        scale = inverse_deviation(states.reshape(-1, states.shape[-1]).float(), self.eps)
        return torch.addcmul(self.bias, flat_raw, scale, out=flat_raw if in_place else None).view_as(raw)


def final_layer_norm(model: torch.nn.Module) -> torch.nn.Module | None:
    """The one norm that ``projection.project`` applies before the head (the one the model's forward
    applies), if it can be folded: a LayerNorm or the identity. None for anything else (RMSNorm,
    ...), where the lens has to use the direct projection: their statistics are not a mean and a
    deviation."""
    norm = families.final_norm(model)
    if isinstance(norm, torch.nn.Identity):
        return norm
    if type(norm) in LAYER_NORMS and len(norm.normalized_shape) == 1:
        return norm
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
            self.head.weight_t = self.head.weight_t.to(block_input.device)
            self.head.bias = self.head.bias.to(block_input.device)
            self._device = block_input.device
        self._stream_raw = self.head.raw(block_input)

    def update(self, states: torch.Tensor) -> torch.Tensor:
        """Logits of one sublayer update; its ``W_c·x`` joins the stream's running sum."""
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
        direct = project(self.model, states[:, :1])
        error = (direct - logits[:, :1]).abs().max().item()
        scale = max(direct.abs().max().item(), 1.0)
        if error > agreement_tolerance(states.device) * scale:
            raise RuntimeError(
                f"incremental lens projection failed for {context}: the last block's logits differ from "
                f"the direct projection by {error:.3g}; this block type does not add the hooked updates "
                "to its stream. Use ClassEmbeddingLens(model, projection='direct')."
            )
