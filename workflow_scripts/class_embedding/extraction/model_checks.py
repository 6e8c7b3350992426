"""The configuration check of every model before any job runs: can the lens analyse it?

:func:`class_embedding.extraction.model_audit.check_architecture` builds a short copy of each
configured architecture and audits the lens on it. That needs torch, which a dry run should not
pay for each time: verdicts are kept in a small JSON file keyed by everything they depend on
(arch, kwargs, the declared description, the resize and crop, the timm and torch versions, this
library's model code), and torch is imported only for a model whose verdict is not there.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models.spec import ModelSpec

# What a verdict depends on besides the entry: the code that builds and audits the model.
CHECK_CODE = (
    "models/building.py",
    "models/families.py",
    "models/spec.py",
    "models/tokens.py",
    "models/preprocessing.py",
    "extraction/lens.py",
    "extraction/projection.py",
    "extraction/incremental_projection.py",
    "extraction/model_audit.py",
)
LIBRARY = Path(__file__).resolve().parents[1]
# Keys of a config entry that say nothing about the architecture (of the preprocessing, only the
# image size counts: the check compares the token grid it gives with the declared one).
IRRELEVANT_KEYS = (
    "display_name",
    "dataset",
    "weights",
    "preprocessing",
    "random_baseline",
    "random_twin",
    "block_group",
)


def verdict_key(entry: dict[str, Any]) -> str:
    relevant = {key: value for key, value in entry.items() if key not in IRRELEVANT_KEYS}
    relevant["input_size"] = [(entry.get("preprocessing") or {}).get(key) for key in ("resize", "crop")]
    code = hashlib.sha256(b"".join((LIBRARY / path).read_bytes() for path in CHECK_CODE)).hexdigest()
    versions = {package: metadata.version(package) for package in ("timm", "torch")}
    text = json.dumps([relevant, versions, code], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def verdict(entry: dict[str, Any], name: str) -> str | None:
    """None when the model passes, else the message saying why it cannot be analysed."""
    from . import model_audit  # torch

    try:
        model_audit.check_architecture(entry, name)
    except InputError as err:
        return str(err)
    return None


def check_models(models: dict[str, dict[str, Any]], cache: str | os.PathLike) -> None:
    """InputError naming the first configured model that the lens cannot analyse."""
    for name, entry in models.items():
        ModelSpec.from_params({**entry, "name": name})  # keys and class-valued kwargs, without torch
    cache = Path(cache)
    try:
        verdicts = json.loads(cache.read_text())
    except (OSError, ValueError):
        verdicts = {}
    keys = {name: verdict_key({**entry, "name": "model"}) for name, entry in models.items()}
    missing = {key: name for name, key in keys.items() if key not in verdicts}
    for key, name in missing.items():
        # Messages name the model: cached under a placeholder name, filled in when raised.
        verdicts[key] = verdict({**models[name], "name": "{model}"}, "{model}")
    if missing:
        from ..tables import atomic_path

        with atomic_path(cache) as tmp:
            tmp.write_text(json.dumps(verdicts, indent=1) + "\n")
    for name, key in keys.items():
        if verdicts[key] is not None:
            raise InputError(verdicts[key].replace("{model}", name))
