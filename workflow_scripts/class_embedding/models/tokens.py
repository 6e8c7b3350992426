"""Which token is which: the prefix tokens a ViT puts before its patch tokens, and the grid.

timm concatenates [CLS], then the distillation token (DeiT distilled) or the register tokens,
then the ``grid × grid`` patch tokens. Image tokens are the patch tokens only; every analysis
takes its token positions from a :class:`TokenLayout`. No torch here: the rules build layouts
from the config when they are parsed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

CLS = "[CLS]"
DISTILLATION = "[DIST]"
REGISTER = "register"
IMAGE = "image"


@dataclass(frozen=True)
class TokenLayout:
    token_grid: int
    class_token: bool
    distillation_token: bool = False
    register_tokens: int = 0

    @classmethod
    def of(cls, model: Any) -> TokenLayout:
        """The layout a config entry, model description or :class:`ModelSpec` declares."""
        get = model.get if isinstance(model, dict) else lambda key, default=None: getattr(model, key, default)
        return cls(
            token_grid=int(get("token_grid")),
            class_token=bool(get("class_token")),
            distillation_token=bool(get("distillation_token", False) or False),
            register_tokens=int(get("register_tokens", 0) or 0),
        )

    @classmethod
    def of_timm(cls, model: Any) -> TokenLayout:
        """The layout of a built timm ViT (its own attributes, not the config's)."""
        return cls(
            token_grid=int(model.patch_embed.grid_size[0]),
            class_token=getattr(model, "cls_token", None) is not None,
            distillation_token=getattr(model, "dist_token", None) is not None,
            register_tokens=int(getattr(model, "num_reg_tokens", 0) or 0),
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
    def n_image_tokens(self) -> int:
        return self.token_grid**2

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
            "token_grid": self.token_grid,
            "class_token": self.class_token,
            "distillation_token": self.distillation_token,
            "register_tokens": self.register_tokens,
            "num_prefix_tokens": self.n_prefix,
            "prefix_tokens": json.dumps(list(self.prefix)),
        }
