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
    display_name: str
    dataset: str
    arch: str
    num_blocks: int
    token_grid: int
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
