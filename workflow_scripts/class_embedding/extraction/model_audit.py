"""Can the lens read a model? Its audit on random images, and the check of a configured
architecture on a short random copy before anything is trained or fetched."""

from __future__ import annotations

import dataclasses

import torch

from ..errors import InputError
from ..models import families
from ..models.building import build_model, cannot_analyse, check_input_grid
from ..models.spec import ModelSpec
from ..models.tokens import TokenLayout
from . import lens


def audit(model: torch.nn.Module, name: str, n_images: int = 2, seed: int = 0) -> None:
    """Lens audit of a freshly converted checkpoint on random inputs: the projection of the last
    residual state reproduces the model's logits (raises otherwise)."""
    audit_on_random_images(model, f"checkpoint of {name}", n_images, seed)


def audit_on_random_images(
    model: torch.nn.Module, context: str, n_images: int = 2, seed: int = 0, pooling: families.Pooling | None = None
) -> None:
    """The lens hooks every block of the model; on random images its projection of the last
    residual state, pooled as the model pools (``pooling`` overrides that, for tests), reproduces
    the model's logits, and its projection of single tokens the model's own output with that
    token's state at every position (:func:`lens.audit_projection`). InputError for a model
    family the lens does not support, RuntimeError for a failed audit."""
    families.pooling(model)
    hooked = [module for block in model.blocks for module in lens.residual_update_modules(block)]
    if len({id(module) for module in hooked}) != len(hooked):
        # One module object in two places would report two updates as one.
        raise InputError("the blocks share their residual-update modules; the lens cannot tell the updates apart.")
    generator = torch.Generator().manual_seed(seed)
    size = model.patch_embed.img_size
    images = torch.randn(n_images, 3, *size, generator=generator)
    hooks = lens.ClassEmbeddingLens(model)
    with torch.inference_mode():
        with hooks:
            hooks.set_targets(torch.zeros(n_images, dtype=torch.long))
            logits = model(images)
        lens.audit(model, hooks.record.last_state, logits, context, pooling)
        lens.audit_projection(model, images, hooks.record.last_state, context)


# Blocks of the copy that the configuration check builds: every block of a ViT is alike, so two
# show what the lens makes of all of them, at a fraction of the time and memory.
CHECK_DEPTH = 2


def check_architecture(spec: ModelSpec | dict, name: str, seed: int = 0) -> None:
    """Before anything is trained or fetched: a copy of the model with its configured arch and
    kwargs, cut to :data:`CHECK_DEPTH` blocks and given non-trivial norm, LayerScale and bias
    parameters, matches the config's description and passes the lens audit (InputError naming
    the model otherwise)."""
    spec = ModelSpec.from_params(spec, name)
    TokenLayout.of(spec)  # a token_grid of the wrong shape
    depth = min(int(spec.kwargs.get("depth", CHECK_DEPTH)), CHECK_DEPTH)
    short = dataclasses.replace(spec, kwargs={**spec.kwargs, "depth": depth})
    torch.manual_seed(seed)
    model = families.randomise_identity_like(build_model(short, name, ignore=("num_blocks",)), seed)
    check_input_grid(model, spec, name)
    try:
        audit_on_random_images(model, f"model '{name}' ({spec.arch})", n_images=1, seed=seed)
    except InputError as err:
        raise cannot_analyse(name, spec.arch, err) from None
    except RuntimeError as err:
        raise InputError(f"models.{name} (arch {spec.arch}): {err}") from None
