"""Which token is which: the prefix tokens a ViT puts before its patch tokens, and the grid.

timm concatenates [CLS], then the distillation token (DeiT distilled) or the register tokens,
then the ``rows × cols`` patch tokens, row by row. Image tokens are the patch tokens only; every analysis
takes its token positions from a :class:`TokenLayout`. No torch here: the rules build layouts
from the config when they are parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import InputError
from ..token_grid import grid_name, grid_shape, grid_value

CLS = "[CLS]"
DISTILLATION = "[DIST]"
REGISTER = "register"
IMAGE = "image"


@dataclass(frozen=True)
class TokenLayout:
    # As the config gives it: the side of a square grid, or [rows, cols]; kept as an int when square.
    token_grid: int | tuple[int, int]
    class_token: bool
    distillation_token: bool = False
    register_tokens: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_grid", grid_value(self.token_grid, "token_grid"))

    @classmethod
    def of(cls, model: Any) -> TokenLayout:
        """The layout a config entry, model description or :class:`ModelSpec` declares."""
        get = model.get if isinstance(model, dict) else lambda key, default=None: getattr(model, key, default)
        return cls(
            token_grid=grid_value(
                get("token_grid"), f"models.{get('name')}.token_grid" if get("name") else "token_grid"
            ),
            class_token=bool(get("class_token")),
            distillation_token=bool(get("distillation_token", False) or False),
            register_tokens=int(get("register_tokens", 0) or 0),
        )

    @classmethod
    def of_timm(cls, model: Any) -> TokenLayout:
        """The layout of a built timm ViT, from what it has: its [CLS] and distillation token
        parameters, its register parameter (``reg_token`` of ``VisionTransformer`` and ``Eva``,
        whose register count is no attribute) and ``num_prefix_tokens``, which they must explain."""
        class_token = getattr(model, "cls_token", None) is not None
        distillation_token = getattr(model, "dist_token", None) is not None
        registers = getattr(model, "reg_token", None)
        n_registers = 0 if registers is None else int(registers.shape[1])
        n_prefix = int(getattr(model, "num_prefix_tokens", class_token + distillation_token + n_registers))
        if n_prefix != class_token + distillation_token + n_registers:
            raise InputError(
                f"{type(model).__name__} puts {n_prefix} prefix tokens before its patch tokens, of which only "
                f"{class_token + distillation_token + n_registers} are [CLS], distillation or register tokens; "
                f"prefix tokens of another kind are not supported."
            )
        return cls(
            token_grid=grid_value(tuple(model.patch_embed.grid_size), f"the token grid of {type(model).__name__}"),
            class_token=class_token,
            distillation_token=distillation_token,
            register_tokens=n_registers,
        )

    @property
    def prefix(self) -> tuple[str, ...]:
        """Kinds of the prefix tokens, in timm's order."""
        kinds = [CLS] if self.class_token else []
        kinds += [DISTILLATION] if self.distillation_token else []
        return (*kinds, *[REGISTER] * self.register_tokens)

    @property
    def n_prefix(self) -> int:
        return len(self.prefix)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the patch-token grid."""
        return grid_shape(self.token_grid)

    @property
    def grid_name(self) -> str:
        """``7`` for a 7×7 grid, ``6x8`` for 6 rows of 8: how file names tell grids apart."""
        return grid_name(self.token_grid)

    @property
    def n_image_tokens(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def n_tokens(self) -> int:
        return self.n_prefix + self.n_image_tokens

    @property
    def image_tokens(self) -> slice:
        """Positions of the patch tokens."""
        return slice(self.n_prefix, None)

    def token_kinds(self) -> list[str]:
        """Kind of every token position: prefix kinds, then ``image``."""
        return [*self.prefix, *[IMAGE] * self.n_image_tokens]

    def positions(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.token_kinds()) if k == kind]

    def metadata(self) -> dict[str, Any]:
        """What extraction tables record about their tokens."""
        return {
            "token_grid": self.token_grid if isinstance(self.token_grid, int) else list(self.token_grid),
            "class_token": self.class_token,
            "distillation_token": self.distillation_token,
            "register_tokens": self.register_tokens,
            "num_prefix_tokens": self.n_prefix,
            "prefix_tokens": json.dumps(list(self.prefix)),
        }
