"""The input preprocessing declared by a model's config entry, and image loading."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


class Preprocessing:
    """PIL image → normalised CHW float tensor, as declared by a model's ``preprocessing`` entry.

    ``resize`` is either [height, width] (squash the whole image, no aspect preservation, as the
    Hugging Face processors) or a single int (shorter side, the longer one truncated as
    torchvision's ``Resize`` does); ``crop`` an optional centre crop, offset as torchvision's
    ``CenterCrop`` (rounded half to even; the same as flooring whenever the margin is even).
    """

    def __init__(self, spec: dict):
        self.resize = spec["resize"]
        self.crop = spec.get("crop")
        self.interpolation = INTERPOLATIONS[spec.get("interpolation", "bilinear")]
        self.mean = np.asarray(spec["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(spec["std"], np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = np.asarray(self.model_view(image), np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((pixels - self.mean) / self.std)

    def model_view(self, image: Image.Image) -> Image.Image:
        """The resized and cropped RGB image, before normalisation: what the model sees."""
        image = image.convert("RGB")
        if isinstance(self.resize, int):
            width, height = image.size
            short, long = min(width, height), max(width, height)
            long = int(self.resize * long / short)
            size = (self.resize, long) if width <= height else (long, self.resize)
        else:
            size = (self.resize[1], self.resize[0])
        image = image.resize(size, self.interpolation)
        if self.crop:
            left = int(round((image.size[0] - self.crop) / 2.0))
            top = int(round((image.size[1] - self.crop) / 2.0))
            image = image.crop((left, top, left + self.crop, top + self.crop))
        return image


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image; a missing or corrupt file names itself."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except FileNotFoundError:
        raise InputError(f"image {path} not found: the dataset is incomplete; re-create or re-download it.") from None
    except OSError as err:
        raise InputError(f"image {path} is corrupt ({err}): replace the file from the original dataset.") from None
