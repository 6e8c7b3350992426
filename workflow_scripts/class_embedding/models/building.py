"""Building timm ViTs from a config entry (:class:`ModelSpec`) and checking them against it."""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

from ..errors import InputError
from . import families, preprocessing
from .checkpoints import load_checkpoint, sha256, unsafe_types
from .spec import ModelSpec
from .tokens import TokenLayout

log = logging.getLogger(__name__)


def build_model(spec: ModelSpec | dict, name: str, ignore: tuple[str, ...] = ()):
    """An untrained timm model of the entry's architecture, checked against what the config
    declares (except the keys in ``ignore``)."""
    import timm

    spec = ModelSpec.from_params(spec, name)
    try:
        model = timm.create_model(spec.arch, pretrained=False, **spec.kwargs)
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise InputError(
                f"models.{name}.arch: '{spec.arch}' is not a timm model; pick one from timm.list_models()."
            ) from None
        raise
    except (TypeError, AssertionError) as err:  # timm asserts on kwargs it refuses (global_pool of a distilled model)
        raise InputError(
            f"models.{name}: timm cannot build '{spec.arch}' with kwargs {spec.kwargs}: "
            f"{reason(err)}; change the kwargs."
        ) from None
    check_declared(model, spec, name, ignore)
    return model.eval()


def load_model(spec: ModelSpec | dict, name: str, checkpoint: str | os.PathLike) -> torch.nn.Module:
    """The configured model with the weights of ``checkpoint`` (a timm state dict), as every job
    that runs a model loads it."""
    return load_checkpoint(build_model(spec, name), checkpoint, name)


def reason(err: Exception) -> str:
    """An exception's message as the middle of a sentence."""
    text = str(err).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else "it refuses them"


def final_norm(model) -> str:
    """Which final norm the lens projects through, the one the model's forward applies: ``norm``
    ([CLS] models; also where none is applied) or ``fc_norm`` (GAP models, whose ``norm`` is the
    identity)."""
    return "fc_norm" if families.final_norm(model) is getattr(model, "fc_norm", None) else "norm"


def cannot_analyse(name: str, arch: str, reason: object) -> InputError:
    return InputError(
        f"models.{name} (arch {arch}) cannot be analysed with the class-embedding lens: {reason} "
        f"docs/configuration.md (Supported models) lists what can."
    )


def check_declared(model, spec: ModelSpec, name: str, ignore: tuple[str, ...] = ()) -> None:
    """The lens can read the model (its class, head, pooling and tokens), and the config's
    description of it (blocks, classes, tokens, final norm) matches it, except for the keys in
    ``ignore``."""
    try:
        families.pooling(model)
        layout = TokenLayout.of_timm(model)
    except InputError as err:
        raise cannot_analyse(name, spec.arch, err) from None
    declared = {
        "num_blocks": len(model.blocks),
        "num_classes": model.num_classes,
        "class_token": layout.class_token,
        "distillation_token": layout.distillation_token,
        "register_tokens": layout.register_tokens,
        "token_grid": layout.grid_name,
        "final_norm": final_norm(model),
    }
    for key, actual in declared.items():
        if key in ignore:
            continue
        declared_value = getattr(spec, key)
        if key == "token_grid":
            declared_value = TokenLayout.of(spec).grid_name
        if declared_value is not None and declared_value != actual:
            raise InputError(f"models.{name}.{key} is {declared_value} but the timm model '{spec.arch}' has {actual}.")


def check_input_grid(model, spec: ModelSpec, name: str) -> None:
    """The images the configured preprocessing gives are cut into the declared token grid
    (a ``dynamic_img_size`` model takes any size, and the token count alone would not tell a 2×8
    grid from a 4×4 one), or InputError naming both."""
    where = f"models.{name}.preprocessing"
    size = preprocessing.input_size(spec.preprocessing)
    if size is None:
        side = spec.preprocessing["resize"]
        raise InputError(
            f"{where} resizes the shorter side to {side} without a crop, so each image's aspect ratio sets its "
            f"size and token grid; add crop: {side} or give resize as [height, width]."
        )
    embed = model.patch_embed
    if not getattr(model, "dynamic_img_size", False):
        if size != tuple(embed.img_size):
            raise InputError(
                f"{where} gives {size[0]}x{size[1]} images, but the model takes {embed.img_size[0]}x{embed.img_size[1]} "
                f"(img_size, without dynamic_img_size): make resize (and crop) give that size."
            )
        return
    if not embed.dynamic_img_pad and (size[0] % embed.patch_size[0] or size[1] % embed.patch_size[1]):
        raise InputError(
            f"{where} gives {size[0]}x{size[1]} images, which patches of {embed.patch_size[0]}x{embed.patch_size[1]} "
            f"do not tile: make resize (and crop) a multiple of the patch size."
        )
    grid = tuple(embed.dynamic_feat_size(size))
    declared = TokenLayout.of(spec).grid
    if grid != declared:
        raise InputError(
            f"{where} gives {size[0]}x{size[1]} images, which the dynamic_img_size model cuts into a "
            f"{grid[0]}x{grid[1]} token grid (rows x columns), not the declared token_grid "
            f"{declared[0]}x{declared[1]}: make resize (and crop) {declared[0] * embed.patch_size[0]}x"
            f"{declared[1] * embed.patch_size[1]} or fix token_grid."
        )


def random_model(spec: ModelSpec | dict, name: str, seed: int):
    """The random-initialisation twin: timm's own initialisation under a fixed seed."""
    torch.manual_seed(seed)
    return build_model(spec, name)


def timm_pretrained(
    spec: ModelSpec | dict,
    name: str,
    tag: str,
    cache_dir: str | os.PathLike | None = None,
    file: str | os.PathLike | None = None,
    **overrides,
) -> torch.nn.Module:
    """A model with timm's pretrained weights of ``tag`` (e.g.
    ``vit_base_patch16_224.augreg_in21k_ft_in1k``), through timm's own loading (and key
    conversion). ``file`` loads the weights from a local file instead of the hub (offline tests,
    pre-fetched weights); ``overrides`` replace keyword arguments (``num_classes`` for fine-tuning)."""
    import timm

    spec = ModelSpec.from_params(spec, name)
    if "." not in tag:
        raise InputError(f"models.{name}.weights.tag '{tag}' names no pretrained tag: write <arch>.<tag>.")
    kwargs = {**spec.kwargs, **overrides}
    overlay = {"file": str(file)} if file is not None else None
    try:
        model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=cache_dir, **kwargs)
    except RuntimeError as err:  # timm loads with weights_only=True too, and says so in a RuntimeError
        if not isinstance(err.__cause__, pickle.UnpicklingError):
            raise
        where = file if file is not None else f"of the timm weights {tag}"
        types = ", ".join(unsafe_types(Path(file), err.__cause__)) if file is not None else ""
        raise InputError(
            f"checkpoint {where} of model '{name}' holds {types or 'Python objects'} besides tensors and plain values; it is "
            f"not loaded, because unpickling it could run code stored in the file."
        ) from None
    if not overrides:
        check_declared(model, spec, name)
        pretrained_classes = model.pretrained_cfg.get("num_classes")
        if pretrained_classes is not None and pretrained_classes != model.num_classes:
            # timm would silently give the model a new, random head.
            raise InputError(
                f"models.{name}: the weights {tag} have {pretrained_classes} classes, the config "
                f"{model.num_classes}: fix num_classes (or kwargs.num_classes)."
            )
    return model.eval()


def model_metadata(spec: ModelSpec | dict, name: str, checkpoint: str | os.PathLike) -> dict:
    """What every table computed from a model records about it in its Parquet metadata."""
    spec = ModelSpec.from_params(spec, name)
    return {
        "model": name,
        "arch": spec.arch,
        "num_classes": spec.num_classes,
        "num_blocks": spec.num_blocks,
        **TokenLayout.of(spec).metadata(),
        "weights_sha256": sha256(checkpoint),
        "preprocessing": spec.preprocessing,
    }


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
