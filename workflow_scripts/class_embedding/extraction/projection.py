"""A state's class logits: the final norm the model's forward applies, then its head (float32).
The lens (:mod:`.lens`) and its incremental form (:mod:`.incremental_projection`) both read
states through these."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from ..models import families


def project(model: VisionTransformer, states: torch.Tensor) -> torch.Tensor:
    """Class logits of hidden states (..., D), in float32: each state through the final norm the
    model's forward applies (:func:`families.final_norm`) and the head. That is what the model
    itself outputs when the state stands at every token position, whatever its pooling."""
    states = normalise(model, states)
    weight, bias = linear_head(model)
    return torch.addmm(bias, states.reshape(-1, states.shape[-1]), weight.t()).reshape(*states.shape[:-1], -1)


def normalise(model: VisionTransformer, states: torch.Tensor) -> torch.Tensor:
    """States (..., D) through the final norm the model's forward applies, in float32."""
    return families.final_norm(model)(states).float()


def linear_head(model: VisionTransformer) -> tuple[torch.Tensor, torch.Tensor]:
    """The class-embedding matrix (C, D) and bias (C,) that the lens applies after the final norm, in float32.

    A distilled model outputs the mean of its [CLS] head and its distillation head; their mean is
    the one linear map that both tokens feed, so the lens projects every token through it.
    """
    weight, bias = model.head.weight.float(), model.head.bias.float()
    if getattr(model, "head_dist", None) is not None:
        weight = (weight + model.head_dist.weight.float()) / 2
        bias = (bias + model.head_dist.bias.float()) / 2
    return weight, bias
