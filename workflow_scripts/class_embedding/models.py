"""Building timm ViTs from a config entry, checkpoints, and the input preprocessing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .tables import atomic_path

INTERPOLATIONS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def build_model(spec: dict, name: str):
    """An untrained timm model of the entry's architecture, checked against what the config declares."""
    import timm

    try:
        model = timm.create_model(spec["arch"], pretrained=False, **spec.get("kwargs", {}))
    except RuntimeError as err:
        if "Unknown model" in str(err):
            raise InputError(
                f"models.{name}.arch: '{spec['arch']}' is not a timm model; pick one from timm.list_models()."
            ) from None
        raise
    declared = {
        "num_blocks": len(model.blocks),
        "num_classes": model.num_classes,
        "class_token": model.cls_token is not None,
        "token_grid": model.patch_embed.grid_size[0],
    }
    for key, actual in declared.items():
        if key in spec and spec[key] != actual:
            raise InputError(f"models.{name}.{key} is {spec[key]} but the timm model '{spec['arch']}' has {actual}.")
    return model.eval()


def random_model(spec: dict, name: str, seed: int):
    """The random-initialisation twin: timm's own initialisation under a fixed seed."""
    torch.manual_seed(seed)
    return build_model(spec, name)


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike, name: str) -> torch.nn.Module:
    """Load a plain state dict strictly; a mismatch names the checkpoint and the model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} of model '{name}' not found: build it with the workflow's checkpoint rule.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise InputError(f"checkpoint {path} cannot be read ({err}): delete it and rerun to rebuild it.") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first_lines = "\n".join(str(err).splitlines()[:4])
        raise InputError(
            f"checkpoint {path} does not match the architecture of model '{name}' in the config "
            f"(models.{name}.arch / kwargs):\n{first_lines}\nFix the config or delete the checkpoint to rebuild it."
        ) from None
    return model.eval()


def model_metadata(spec: dict, name: str, checkpoint: str | os.PathLike) -> dict:
    """What every table computed from a model records about it in its Parquet metadata."""
    return {
        "model": name,
        "display_name": spec["display_name"],
        "arch": spec["arch"],
        "num_classes": spec["num_classes"],
        "num_blocks": spec["num_blocks"],
        "class_token": spec["class_token"],
        "token_grid": spec["token_grid"],
        "weights_sha256": sha256(checkpoint),
        "preprocessing": spec["preprocessing"],
    }


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Preprocessing:
    """PIL image → normalised CHW float tensor, as declared by a model's ``preprocessing`` entry.

    ``resize`` is either [height, width] (squash the whole image, no aspect preservation) or a
    single int (shorter side); ``crop`` an optional centre-crop size.
    """

    def __init__(self, spec: dict):
        self.resize = spec["resize"]
        self.crop = spec.get("crop")
        self.interpolation = INTERPOLATIONS[spec.get("interpolation", "bilinear")]
        self.mean = np.asarray(spec["mean"], np.float32).reshape(3, 1, 1)
        self.std = np.asarray(spec["std"], np.float32).reshape(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert("RGB")
        if isinstance(self.resize, int):
            width, height = image.size
            scale = self.resize / min(width, height)
            size = (max(round(width * scale), self.resize), max(round(height * scale), self.resize))
        else:
            size = (self.resize[1], self.resize[0])
        image = image.resize(size, self.interpolation)
        if self.crop:
            left = (image.size[0] - self.crop) // 2
            top = (image.size[1] - self.crop) // 2
            image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0
        return torch.from_numpy((pixels - self.mean) / self.std)


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


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
