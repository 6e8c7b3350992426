"""Checkpoints: saving, reading safely, and loading a backbone's weights into a timm model."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from pathlib import Path

import torch

from ..errors import InputError
from ..tables import atomic_path

log = logging.getLogger(__name__)

# Python types that a checkpoint may hold besides tensors and plain containers, loaded without
# running code. Empty: the paper's release files need none (the DeiT release holds ints, a str,
# tensors and an SGD state dict, all within torch's own allow-list). Add a type here only if it
# carries no behaviour of its own, never as a way round a refused file.
SAFE_CHECKPOINT_TYPES: list = []


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike) -> None:
    # Through a file object: torch names the archive's folder after a path it is given, and the
    # temporary file's random name would make equal weights hash differently.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(model.state_dict(), handle)


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike, name: str) -> torch.nn.Module:
    """Load a plain state dict strictly; a mismatch names the checkpoint and the model."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"checkpoint {path} of model '{name}' not found: build it with the workflow's checkpoint rule."
        )
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


CONVERSION_HINT = (
    "If you trust the file, convert it to a plain state dict yourself, in two lines of Python:\n"
    "    checkpoint = torch.load('{path}', map_location='cpu', weights_only=False)  # runs the file's code\n"
    "    torch.save(checkpoint['state_dict'], 'plain_state_dict.pt')  # the entry that holds the weights\n"
    "and set models.{name}.weights to {{source: file, path: plain_state_dict.pt}} "
    '(docs/paper.md, "Checkpoints you provide").'
)


def read_checkpoint_file(path: Path, name: str, rebuild_hint: str = "download it again") -> object:
    """``torch.load`` restricted to tensors and plain Python values (``weights_only=True``).

    A checkpoint is a pickle, and unpickling an arbitrary pickle runs whatever code it names: a
    replaced or corrupted release file would run on the machine that converts it. So a file that
    needs anything else is refused, naming the types it asks for, and is never loaded in full.
    A ``.safetensors`` file (the Hugging Face Hub's format, e.g. timm's ``model.safetensors``)
    holds tensors only and is read as such.
    """
    if path.suffix == ".safetensors":
        from timm.models import load_state_dict  # safetensors through timm: nothing to unpickle

        try:
            return load_state_dict(str(path), use_ema=False)
        except Exception as err:  # a truncated or foreign file
            raise InputError(f"checkpoint {path} cannot be read ({err}; model '{name}'): {rebuild_hint}.") from None
    try:
        with torch.serialization.safe_globals(SAFE_CHECKPOINT_TYPES):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        types = unsafe_types(path, err)
        if not types:  # refused for no global it names: the file is truncated or not a checkpoint
            raise InputError(
                f"checkpoint {path} cannot be read: it is truncated or not a PyTorch checkpoint (model "
                f"'{name}'); {rebuild_hint}."
            ) from None
        raise InputError(
            f"checkpoint {path} of model '{name}' holds {', '.join(types)} besides tensors and plain "
            f"values; it is not loaded, because unpickling it could run code stored in the file.\n"
            + CONVERSION_HINT.format(path=path, name=name)
        ) from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise InputError(f"checkpoint {path} cannot be read ({err}; model '{name}'): {rebuild_hint}.") from None


def unsafe_types(path: Path, err: Exception) -> list[str]:
    """The globals a refused checkpoint would import, for the error message."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the legacy (non-zip) format cannot be inspected without unpickling it
        names = re.findall(r"GLOBAL ([\w.]+)", str(err))
    return sorted(set(names))


def read_state_dict(
    path: str | os.PathLike, name: str, state_dict_key: str | None = None, strip_prefix: str = ""
) -> dict:
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
    (docs/method.md §7.21)."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    if missing:
        raise InputError(
            f"checkpoint {origin} lacks {len(missing)} weights of model '{name}' "
            f"({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}): it is not a checkpoint of "
            f"models.{name}.arch, or needs weights.state_dict_key / strip_prefix."
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape
    ]
    if wrong:
        raise InputError(f"checkpoint {origin} does not fit model '{name}': {'; '.join(wrong[:4])}.")
    ignored = sorted(set(state) - set(expected))
    if ignored:
        prefixes = sorted({key.split(".")[0] for key in ignored})
        log.info("%s: ignored %d entries not in the model (%s)", origin, len(ignored), ", ".join(prefixes))
    model.load_state_dict({key: state[key] for key in expected}, strict=True)
    return model.eval()


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
