"""Building timm ViTs from a config entry, checkpoints, and the input preprocessing."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import InputError
from .tables import atomic_path

log = logging.getLogger(__name__)

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
    check_declared(model, spec, name)
    return model.eval()


def final_norm(model) -> str:
    """Which final LayerNorm the lens projects through: ``norm`` ([CLS] models) or ``fc_norm``
    (GAP models, whose ``norm`` is the identity)."""
    return "norm" if isinstance(model.fc_norm, torch.nn.Identity) else "fc_norm"


def check_declared(model, spec: dict, name: str) -> None:
    """The config's description of a model (blocks, classes, tokens, final norm) matches it."""
    declared = {
        "num_blocks": len(model.blocks),
        "num_classes": model.num_classes,
        "class_token": model.cls_token is not None,
        "token_grid": model.patch_embed.grid_size[0],
        "final_norm": final_norm(model),
    }
    for key, actual in declared.items():
        if key in spec and spec[key] != actual:
            raise InputError(f"models.{name}.{key} is {spec[key]} but the timm model '{spec['arch']}' has {actual}.")


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
    state = read_checkpoint_file(path, name, rebuild_hint="delete it and rerun to rebuild it")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as err:
        first_lines = "\n".join(str(err).splitlines()[:4])
        raise InputError(
            f"checkpoint {path} does not match the architecture of model '{name}' in the config "
            f"(models.{name}.arch / kwargs):\n{first_lines}\nFix the config or delete the checkpoint to rebuild it."
        ) from None
    return model.eval()


# Python types that a checkpoint may hold besides tensors and plain containers, loaded without
# running code. Empty: the paper's release files need none (the DeiT release holds ints, a str,
# tensors and an SGD state dict, all within torch's own allow-list). Add a type here only if it
# carries no behaviour of its own, never as a way round a refused file.
SAFE_CHECKPOINT_TYPES: list = []

CONVERSION_HINT = (
    "If you trust the file, convert it to a plain state dict yourself, in two lines of Python:\n"
    "    checkpoint = torch.load('{path}', map_location='cpu', weights_only=False)  # runs the file's code\n"
    "    torch.save(checkpoint['state_dict'], 'plain_state_dict.pt')  # the entry that holds the weights\n"
    "and set models.{name}.weights to {{source: file, path: plain_state_dict.pt}} "
    "(README, \"Checkpoints you provide\")."
)


def read_checkpoint_file(path: Path, name: str, rebuild_hint: str = "download it again") -> object:
    """``torch.load`` restricted to tensors and plain Python values (``weights_only=True``).

    A checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever code it names: a
    replaced or corrupted release file would run on the machine that converts it. So a file that
    needs anything else is refused, naming the types it asks for, and is never loaded in full.
    """
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_TYPES):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise InputError(
            f"checkpoint {path} of model '{name}' holds {unsafe_types(path, err)} besides tensors and "
            f"plain values; it is not loaded, because unpickling it could run code stored in the file.\n"
            + CONVERSION_HINT.format(path=path, name=name)
        ) from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise InputError(f"checkpoint {path} of model '{name}' cannot be read ({err}): {rebuild_hint}.") from None


def unsafe_types(path: Path, err: Exception) -> str:
    """The globals a refused checkpoint would import, for the error message."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the legacy (non-zip) format cannot be inspected without unpickling it
        names = re.findall(r"GLOBAL ([\w.]+)", str(err))
    return ", ".join(sorted(set(names))) or "Python objects"


def read_state_dict(path: str | os.PathLike, name: str, state_dict_key: str | None = None, strip_prefix: str = "") -> dict:
    """The tensors of a foreign checkpoint file: under ``state_dict_key`` when given (the DeiT
    release keeps them under ``state_dict``), with ``strip_prefix`` removed from every key that
    has it (the CIFAR-100 checkpoint's ``model.``), and a leading ``module.`` (a model saved from
    inside DistributedDataParallel) removed too."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} of model '{name}' not found.")
    state = read_checkpoint_file(path, name)
    if state_dict_key is not None:
        if not isinstance(state, dict) or state_dict_key not in state:
            raise InputError(
                f"checkpoint {path} of model '{name}' has no '{state_dict_key}' entry (it has: "
                f"{describe_entries(state)}): set models.{name}.weights.state_dict_key to the entry that "
                f"holds the weights."
            )
        state = state[state_dict_key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(
            f"checkpoint {path} of model '{name}' is not a state dict of tensors (it has: "
            f"{describe_entries(state)}): set models.{name}.weights.state_dict_key to the entry that holds "
            f"the weights."
        )
    for prefix in (strip_prefix, "module."):
        if prefix and any(key.startswith(prefix) for key in state):
            state = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state.items()}
    return state


def describe_entries(state: object) -> str:
    return ", ".join(map(str, list(state)[:8])) if isinstance(state, dict) else type(state).__name__


def load_backbone(model: torch.nn.Module, state: dict, name: str, origin: str) -> torch.nn.Module:
    """Load ``state`` non-strictly: keys the model lacks (e.g. the DeiT release's intermediate
    heads) are ignored and logged, but every key of the model must be present with its shape —
    a missing backbone or head weight stops the run instead of leaving random weights
    (METHOD §7.21)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise InputError(
            f"checkpoint {origin} lacks {len(missing)} weights of model '{name}' "
            f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}): it is not a checkpoint of "
            f"models.{name}.arch, or needs weights.state_dict_key / strip_prefix."
        )
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise InputError(f"checkpoint {origin} does not fit model '{name}': {'; '.join(wrong[:4])}.")
    ignored = sorted(set(state) - set(expected))
    if ignored:
        prefixes = sorted({key.split(".")[0] for key in ignored})
        log.info("%s: ignored %d entries not in the model (%s)", origin, len(ignored), ", ".join(prefixes))
    model.load_state_dict({key: state[key] for key in expected}, strict=True)
    return model.eval()


def timm_pretrained(spec: dict, name: str, tag: str, cache_dir: str | os.PathLike | None = None,
                    file: str | os.PathLike | None = None, **overrides) -> torch.nn.Module:
    """A model with timm's pretrained weights of ``tag`` (e.g.
    ``vit_base_patch16_224.augreg_in21k_ft_in1k``), through timm's own loading (and key
    conversion). ``file`` loads the weights from a local file instead of the hub (offline tests,
    pre-fetched weights); ``overrides`` replace keyword arguments (``num_classes`` for fine-tuning)."""
    import timm

    if "." not in tag:
        raise InputError(f"models.{name}.weights.tag '{tag}' names no pretrained tag: write <arch>.<tag>.")
    kwargs = {**spec.get("kwargs", {}), **overrides}
    overlay = {"file": str(file)} if file is not None else None
    try:
        model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=overlay, cache_dir=cache_dir, **kwargs)
    except RuntimeError as err:  # timm loads with weights_only=True too, and says so in a RuntimeError
        if not isinstance(err.__cause__, pickle.UnpicklingError):
            raise
        where = file if file is not None else f"of the timm weights {tag}"
        types = unsafe_types(Path(file), err) if file is not None else "Python objects"
        raise InputError(
            f"checkpoint {where} of model '{name}' holds {types} besides tensors and plain values; it is "
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


def audit(model: torch.nn.Module, name: str, n_images: int = 2, seed: int = 0) -> None:
    """Lens audit of a freshly converted checkpoint on random inputs: the projection of the last
    residual state reproduces the model's logits (raises otherwise)."""
    from . import lens

    generator = torch.Generator().manual_seed(seed)
    size = model.patch_embed.img_size
    images = torch.randn(n_images, 3, *size, generator=generator)
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.zeros(n_images, dtype=torch.long))
        logits = model(images)
        lens.audit(model, hooks.record.last_state, logits, f"checkpoint of {name}")


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
