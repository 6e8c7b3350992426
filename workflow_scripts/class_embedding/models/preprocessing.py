"""The input preprocessing declared by a model's config entry, and image loading."""

from __future__ import annotations

import os
import re
import struct
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from ..errors import InputError

if TYPE_CHECKING:
    import torch

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
        import torch  # here: figures that only draw what the model sees start without torch

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


def input_size(spec: dict) -> tuple[int, int] | None:
    """(height, width) of the images a ``preprocessing`` entry gives the model, as
    :meth:`Preprocessing.model_view` makes them; None where it depends on each image (a shorter
    side resize without a crop keeps the aspect ratio). No torch: the model check calls it."""
    if spec.get("crop"):
        return spec["crop"], spec["crop"]
    resize = spec["resize"]
    return None if isinstance(resize, int) else (resize[0], resize[1])


#: Modes of 8 bits per channel that PIL converts to RGB as they are (alpha dropped, as
#: torchvision's loader does); premultiplied-alpha modes go through their plain-alpha mode.
EIGHT_BIT_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV"}
PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
BOMB_SIZE = re.compile(r"\((\d+) pixels\)")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image as 8-bit RGB (:func:`to_rgb`); a missing, corrupt, too large
    or unreadable file names itself and what to do."""
    try:
        with warnings.catch_warnings():
            # Above Image.MAX_IMAGE_PIXELS PIL only warns, above twice that it refuses: both stop here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
    except FileNotFoundError:
        raise InputError(f"image {path} not found: the dataset is incomplete; re-create or re-download it.") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        found = BOMB_SIZE.search(str(err))
        size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else str(err)
        raise InputError(
            f"image {path} is too large to decode safely ({size}; PIL's limit is "
            f"{Image.MAX_IMAGE_PIXELS / 1e6:.1f} megapixels): downscale it (e.g. to 4096 pixels on the longer side; "
            "the models see it at a few hundred pixels) and rerun."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        raise InputError(
            f"image {path} is corrupt ({err}): replace the file with an intact copy (from the original dataset, "
            "or from your own source for an image folder; in an image folder you may instead delete it, the next "
            "image by name then takes its place)."
        ) from None
    return to_rgb(image, path)


def to_rgb(image: Image.Image, path: str | os.PathLike = "(in memory)") -> Image.Image:
    """8-bit RGB of a decoded image of any PIL mode, by its real value range, or :class:`InputError`.

    8-bit modes convert as PIL does (alpha dropped); 16-bit grayscale is scaled by 255/65535;
    float grayscale must lie in [0, 1] and is scaled by 255; 32-bit integers (no known range) and
    Lab (PIL does not convert its colours) are refused, as is any mode not listed here.
    """
    mode = image.mode
    if mode in PREMULTIPLIED:
        return image.convert(PREMULTIPLIED[mode]).convert("RGB")
    if mode in EIGHT_BIT_MODES:
        return image.convert("RGB")
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and sixteen_bit_file(image)):
        return gray_rgb(np.asarray(image, np.float64), 65535.0, path, "16-bit")
    if mode == "F":
        return gray_rgb(np.asarray(image, np.float64), 1.0, path, "floating-point")
    if mode == "I":
        what = "32-bit integer pixels, whose range is not known"
    elif mode == "LAB":
        what = "Lab colours, which PIL does not convert to RGB"
    else:
        what = f"PIL mode {mode}, which is not read"
    raise InputError(f"image {path} has {what}: save it as an 8-bit RGB or grayscale PNG or JPEG and rerun.")


def sixteen_bit_file(image: Image.Image) -> bool:
    """Whether a mode-I image holds 16-bit samples (a 16-bit PNG or TIFF read by an older PIL)."""
    if image.format == "PNG":
        return True
    tags = getattr(image, "tag_v2", None)
    return tags is not None and tuple(tags.get(258, ())) == (16,)


def gray_rgb(values: np.ndarray, white: float, path, kind: str) -> Image.Image:
    """RGB of grayscale ``values`` where 0 is black and ``white`` white, or :class:`InputError`
    when a value lies outside [0, white] or is not finite (the range is then unknown)."""
    if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= white):
        low, high = np.nanmin(values), np.nanmax(values)
        finite = "" if np.isfinite(values).all() else ", with NaN or infinite values"
        raise InputError(
            f"image {path} has {kind} pixels from {low:g} to {high:g}{finite}, outside the range 0..{white:g} "
            "that this workflow reads as black..white: rescale it to that range, or save it as an 8-bit "
            "RGB or grayscale PNG or JPEG, and rerun."
        )
    return Image.fromarray(np.round(values * (255.0 / white)).astype(np.uint8)).convert("RGB")
