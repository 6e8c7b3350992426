"""Which timm ViTs the class-embedding lens reproduces exactly, and where it reads them.

Three things make a model analysable (docs/configuration.md, "Supported models"):

- its blocks add two residual updates that one module each hands over whole: ``drop_path1`` /
  ``drop_path2`` see the update after LayerScale in pre-norm blocks (timm ``Block``,
  ``RelPosBlock``, BEiT ``Block``, ``EvaBlock``); in residual post-norm blocks the post-norms do;
- its MLP has value vectors as the columns of ``fc2``: the memory coefficients are the pre-GELU
  ``fc1`` output of a plain ``Mlp`` (the paper's choice) and the input of ``fc2`` of a gated MLP
  (``GluMlp``, ``SwiGLUPacked``, ``SwiGLU``), whose ``fc1`` is wider than ``fc2``'s input;
- its pooled output is a linear function of per-token projections: the [CLS] token, the
  distillation model's two heads, or the mean (or max, avg+max) over the pooled tokens where the
  final norm comes after the pool; the mean where it comes before. An attention pool (``map``)
  or a max over normalised tokens is not, and is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from ..errors import InputError


@cache
def block_updates() -> dict[type, tuple[str, str]]:
    """Block class -> names of the modules whose outputs are its attention and MLP updates."""
    from timm.models import beit, eva, vision_transformer, vision_transformer_relpos

    after_layer_scale = ("drop_path1", "drop_path2")
    post_norms = ("norm1", "norm2")
    return {
        vision_transformer.Block: after_layer_scale,
        vision_transformer_relpos.RelPosBlock: after_layer_scale,
        beit.Block: after_layer_scale,
        eva.EvaBlock: after_layer_scale,
        vision_transformer.ResPostBlock: post_norms,
        vision_transformer_relpos.ResPostRelPosBlock: post_norms,
        eva.EvaBlockPostNorm: post_norms,
    }


def supported_blocks() -> str:
    return ", ".join(sorted(f"{cls.__module__.split('.')[-1]}.{cls.__name__}" for cls in block_updates()))


def block_family(block: torch.nn.Module) -> tuple[str, str]:
    # The exact class: a subclass may add to the stream in another way.
    names = block_updates().get(type(block))
    if names is None:
        raise InputError(
            f"unsupported block type {type(block).__module__}.{type(block).__name__}: the lens hooks the "
            f"residual updates of {supported_blocks()}; pick an architecture built from one of them."
        )
    return names


def has_post_norm(block: torch.nn.Module) -> bool:
    """Whether the block adds a normalised sublayer output to the residual stream."""
    return block_family(block) == ("norm1", "norm2")


def layer_scale(block: torch.nn.Module, layer_type: str) -> torch.Tensor | None:
    """The LayerScale vector that multiplies a sublayer's output before it joins the stream
    (``ls1``/``ls2`` of timm ``Block`` and ``RelPosBlock``, ``gamma_1``/``gamma_2`` of BEiT and
    EVA blocks), or None where the block has none."""
    index = 1 if layer_type == "attn" else 2
    gamma = getattr(block, f"gamma_{index}", None)
    if gamma is None:
        gamma = getattr(getattr(block, f"ls{index}", None), "gamma", None)
    return gamma


@cache
def _mlp_kinds() -> dict[type, bool]:
    """MLP class -> whether its memory coefficients are the input of fc2 (gated) rather than
    the fc1 output."""
    from timm.layers import GluMlp, Mlp, SwiGLU

    return {Mlp: False, GluMlp: True, SwiGLU: True}


def gated_mlp(mlp: torch.nn.Module) -> bool:
    gated = _mlp_kinds().get(type(mlp))
    if gated is None:
        names = ", ".join(sorted(cls.__name__ for cls in _mlp_kinds()))
        raise InputError(
            f"unsupported MLP type {type(mlp).__name__}: the memory analyses read the value vectors of {names}."
        )
    return gated


def memory_modules(block: torch.nn.Module) -> tuple[tuple[torch.nn.Module, bool], tuple[torch.nn.Module, bool]]:
    """(module, whether its input rather than its output is read) holding the memory coefficients
    of the attention and the MLP sublayer: the columns of ``attn.proj`` and ``mlp.fc2`` are the
    value vectors they weigh."""
    if not isinstance(getattr(block.attn, "proj", None), torch.nn.Linear):
        raise InputError(
            f"unsupported attention type {type(block.attn).__name__}: it has no linear output projection 'proj'."
        )
    mlp = block.mlp
    return (block.attn.proj, True), ((mlp.fc2, True) if gated_mlp(mlp) else (mlp.fc1, False))


# ---------------------------------------------------------------------------------------------
# Pooling


@dataclass(frozen=True)
class Pooling:
    """How a model turns its last residual state into the input of its head.

    ``kind``: ``token`` (token 0), ``distilled`` (tokens 0 and 1 through ``head`` and
    ``head_dist``), ``avg``, ``max`` or ``avgmax`` over the tokens from ``first_token`` on.
    ``norm_first``: the final norm acts on every token before the pool (``norm``), not on the
    pooled vector (``fc_norm``).
    """

    kind: str
    first_token: int = 0
    norm_first: bool = True


def is_identity(module) -> bool:
    return module is None or isinstance(module, torch.nn.Identity)


@cache
def _model_classes() -> dict[type, str]:
    from timm.models import beit, deit, eva, vision_transformer, vision_transformer_relpos

    return {
        vision_transformer.VisionTransformer: "timm",
        deit.VisionTransformerDistilled: "distilled",
        eva.Eva: "timm",
        beit.Beit: "avg_or_token",
        vision_transformer_relpos.VisionTransformerRelPos: "avg_or_token",
    }


def pooling(model: torch.nn.Module) -> Pooling:
    """The model's own pooling, or an InputError saying why no per-token projection reproduces it."""
    style = _model_classes().get(type(model))
    if style is None:
        names = ", ".join(sorted(cls.__name__ for cls in _model_classes()))
        raise InputError(f"unsupported model class {type(model).__name__}: the lens knows the heads of {names}.")
    if not isinstance(getattr(model, "head", None), torch.nn.Linear):
        raise InputError("the model has no linear classification head (num_classes 0?): there are no class embeddings.")
    norm_first = is_identity(getattr(model, "fc_norm", None))
    if not norm_first and not is_identity(model.norm):
        raise InputError("the model normalises before and after pooling; the lens projects through one final norm.")
    if style == "distilled":
        return Pooling("distilled")
    pool = model.global_pool
    if getattr(model, "attn_pool", None) is not None:
        raise InputError(
            f"global_pool '{pool}' is an attention pool: a nonlinear function of all tokens that no "
            f"per-token class projection reproduces. Use a model with 'token' or 'avg' pooling."
        )
    if not pool:
        raise InputError("global_pool is empty: the model outputs logits per token, not one per image.")
    if style == "avg_or_token":
        pool = "avg" if pool == "avg" else "token"
    if pool == "token":
        return Pooling("token")
    if pool not in ("avg", "max", "avgmax"):
        raise InputError(f"global_pool '{pool}' is not one the lens knows (token, avg, max, avgmax).")
    if norm_first and pool != "avg":
        raise InputError(
            f"global_pool '{pool}' of normalised tokens: the head's input is a maximum over normalised "
            f"tokens, which no per-token class projection reproduces. Use fc_norm: true (pool, then "
            f"normalise) or global_pool: avg."
        )
    first = 0 if getattr(model, "pool_include_prefix", False) else model.num_prefix_tokens
    return Pooling(pool, first_token=first, norm_first=norm_first)


# ---------------------------------------------------------------------------------------------
# Models with non-trivial parameters for checks


def randomise_identity_like(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give norm scales, LayerScale gammas and biases random values (in place), and the heads
    random weights: at their initial ones and zeros a wrong norm or a skipped LayerScale would
    go unnoticed by an audit."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim > 1 and not name.startswith("head"):
                continue
            noise = torch.randn(parameter.shape, generator=generator)
            if name.endswith("bias"):
                parameter.copy_(0.5 * noise)
            elif parameter.ndim == 1:
                parameter.copy_(1.0 + 0.3 * noise)  # scales: positive, away from 1
            else:
                parameter.copy_(noise / parameter.shape[-1] ** 0.5)
    return model
