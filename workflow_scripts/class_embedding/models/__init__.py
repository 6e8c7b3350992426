"""Models: their description from the config (:class:`ModelSpec`, no torch), building them with
timm, checkpoints, the input preprocessing and the demo training."""

from .spec import ModelSpec

__all__ = ["ModelSpec"]
