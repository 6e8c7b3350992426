"""A model's description from the config: the ``models.<name>`` entry with its name, as the rules
pass it (``params.spec``). No torch here, so the rules can build it when they are parsed."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import InputError


@dataclass(frozen=True)
class ModelSpec:
    """One configured model, or a random twin (``twin_of`` names the trained model it copies)."""

    name: str
    dataset: str
    arch: str
    num_blocks: int
    token_grid: int | list[int]  # a side, or [rows, cols]
    class_token: bool
    num_classes: int
    weights: dict[str, Any]
    preprocessing: dict[str, Any]
    kwargs: dict[str, Any] = field(default_factory=dict)
    distillation_token: bool = False
    register_tokens: int = 0
    block_group: int = 1
    final_norm: str | None = None
    random_baseline: str | None = None
    random_twin: bool = True
    twin_of: str | None = None
    # Only figures, tables and pages need it: jobs that compute are given the entry without it.
    display_name: str | None = None

    def __post_init__(self) -> None:
        check_class_valued_kwargs(self.name, self.kwargs)

    @classmethod
    def from_params(cls, params: ModelSpec | dict, name: str | None = None) -> ModelSpec:
        """The spec of a rule's ``params.spec`` dict (``name`` where the dict has none); a spec
        is returned as it is."""
        if isinstance(params, cls):
            return params
        entry = dict(params)
        if name is not None:
            entry.setdefault("name", name)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise InputError(
                f"models.{entry.get('name', '?')}: unknown keys {unknown}; check the entry against config/schema.yaml."
            )
        try:
            return cls(**entry)
        except TypeError as err:
            raise InputError(
                f"models.{entry.get('name', '?')}: {err}; the entry needs every key config/schema.yaml requires."
            ) from None


# Keyword arguments that timm takes as Python classes only (it resolves act_layer and norm_layer
# from strings itself), with architectures that are built with the common choices.
CLASS_VALUED_KWARGS = ("block_fn", "mlp_layer", "embed_layer", "attn_layer")
ARCHS_USING = {
    "SwiGLUPacked": "vit_giant_patch14_dinov2 (shrink it with embed_dim, depth, num_heads, mlp_ratio)",
    "GluMlp": "vit_giant_patch14_dinov2 (SwiGLUPacked is a GluMlp) or eva02_tiny_patch14_224",
    "SwiGLU": "aimv2_large_patch14_224 (shrink it with embed_dim, depth, num_heads)",
    "ResPostBlock": "vit_base_patch16_rpn_224",
    "ResPostRelPosBlock": "vit_relpos_base_patch16_rpn_224",
}


def check_class_valued_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """A YAML config can only give a string where timm wants a class: say which architecture to
    start from instead of letting timm fail with "'str' object is not callable"."""
    for key in CLASS_VALUED_KWARGS:
        value = kwargs.get(key)
        if isinstance(value, str):
            arch = ARCHS_USING.get(value.rsplit(".", 1)[-1])
            hint = (
                f"use an arch that timm already builds with it: {arch}"
                if arch
                else "use an arch that timm already builds with it (timm/models/vision_transformer.py lists "
                "each arch's arguments)"
            )
            raise InputError(
                f"models.{name}.kwargs.{key} is the string '{value}', but timm wants a Python class there, which a "
                f"config cannot give; {hint}, and leave {key} out of kwargs."
            )
