"""Which timm ViTs the class-embedding lens reproduces exactly, and where it reads them.

Three things make a model analysable (docs/configuration.md, "Supported models"):

- its blocks add two residual updates that one module each hands over whole: ``drop_path1`` /
  ``drop_path2`` see the update after LayerScale in pre-norm blocks (timm ``Block``,
  ``RelPosBlock``, BEiT ``Block``, ``EvaBlock``); in residual post-norm blocks the post-norms do;
- its MLP has value vectors as the columns of ``fc2``: the memory coefficients are the pre-GELU
  ``fc1`` output of a plain ``Mlp`` (the paper's choice) and the input of ``fc2`` of a gated MLP
  (``GluMlp``, ``SwiGLUPacked``, ``SwiGLU``), whose ``fc1`` is wider than ``fc2``'s input, or of
  any MLP with an inner norm (``scale_mlp_norm``, EVA's and BEiT's ``scale_mlp``);
- the model's output is its head applied, after the final norm its forward really applies, to one
  token's state ([CLS]), to the pool of the tokens (norm after the pool: ``fc_norm``), or to each
  token before an average (norm before the pool), or it is the distillation model's two heads on
  [CLS] and [DIST]. The lens projects every token as the model would if that token's state were
  at every position (docs/configuration.md says what the numbers then mean per pooling). An
  attention pool (``map``) or a max over normalised tokens matches no such projection and is
  refused, as are model classes whose head the lens does not know.
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
    """MLP class -> whether it gates: its fc1 (or fc1_g and fc1_x) is wider than fc2's input."""
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
    value vectors they weigh.

    A plain ``Mlp`` keeps the paper's reading, the pre-GELU ``fc1`` output. A gated MLP, or any
    MLP with an inner norm between activation and ``fc2`` (``scale_mlp_norm``, EVA and BEiT
    ``scale_mlp``), is read at ``fc2``'s input: the norm's weight and bias stay in the
    coefficient, so coefficients times ``fc2``'s columns plus its bias are the MLP output."""
    if not isinstance(getattr(block.attn, "proj", None), torch.nn.Linear):
        raise InputError(
            f"unsupported attention type {type(block.attn).__name__}: it has no linear output projection 'proj'."
        )
    mlp = block.mlp
    # An inner norm's per-memory weight and bias reorder the memories after fc1, so fc1's top-5
    # is not that of the coefficients multiplying the value vectors.
    at_fc2 = gated_mlp(mlp) or not is_identity(getattr(mlp, "norm", None))
    return (block.attn.proj, True), ((mlp.fc2, True) if at_fc2 else (mlp.fc1, False))


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


# Why the lens cannot read some timm ViT classes a user may try (by class name: no import needed).
REFUSED_CLASSES = {
    "Cait": "adds its [CLS] token only in the class-attention blocks after the patch-token blocks, so the "
    "token its head reads never enters the residual stream the lens hooks",
    "NaFlexVit": "embeds each image as a variable-length sequence of patches without a fixed token grid, "
    "which the token labels need",
}


def head_style(model: torch.nn.Module) -> str:
    """The kind of head a supported model class has, or an InputError saying why the lens cannot read it."""
    style = _model_classes().get(type(model))
    if style is None:
        name = type(model).__name__
        known = ", ".join(sorted(cls.__name__ for cls in _model_classes()))
        why = REFUSED_CLASSES.get(name, "is a model class whose head the lens does not know")
        raise InputError(f"timm's {name} {why}; the lens reads {known}.")
    heads = [model.head] + ([model.head_dist] if style == "distilled" else [])
    if not all(isinstance(head, torch.nn.Linear) for head in heads):
        raise InputError(
            f"the model has no classification head (num_classes {model.num_classes}), so there are no class "
            f"embeddings to project onto; set kwargs.num_classes to the dataset's number of classes."
        )
    return style


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The norm the model's forward applies to the last residual state before its head (the
    identity where it applies none): ``norm``, or ``fc_norm`` after the pool. timm's
    ``VisionTransformerDistilled.forward_head`` never applies ``fc_norm``: with ``fc_norm: true``
    its ``norm`` is the identity and its heads read the raw tokens."""
    if _model_classes().get(type(model)) == "distilled":
        return model.norm
    norm, fc_norm = getattr(model, "norm", None), getattr(model, "fc_norm", None)
    if is_identity(fc_norm):
        return torch.nn.Identity() if norm is None else norm
    if not is_identity(norm):
        raise InputError("the model normalises before and after pooling; the lens projects through one final norm.")
    return fc_norm


def pooling(model: torch.nn.Module) -> Pooling:
    """The model's own pooling, or an InputError saying why no per-token projection reproduces it."""
    style = head_style(model)
    final_norm(model)  # refuses a norm before and after the pool
    norm_first = is_identity(getattr(model, "fc_norm", None))
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
