"""Checks of the files you give the paper run, cheap enough for a login node: the ImageNet
validation source is an archive or a folder of its images, the CIFAR-100 root has torchvision's
layout, the optional tables parse. Nothing reads the 6.4 GB archive beyond its first header.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from ..errors import InputError
from . import imagenet_s
from .cifar import FOLDER as CIFAR_FOLDER
from .imagenet_s_preparation import ImageSource
from .safe_pickle import load_cifar_pickle

IMAGENET_VAL_IMAGES = 50_000
CIFAR_CLASSES = 100


def check_imagenet_val(path: str, key: str) -> dict:
    """An archive that opens as tar (its content is read by prepare_imagenet_s), or a folder
    holding ImageNet validation JPEGs, flat or in class folders."""
    source = ImageSource(path)
    if source.is_archive:
        return {"key": key, "path": path, "kind": "tar archive", "bytes": os.path.getsize(path)}
    count = sum(1 for name in source.index() if name.startswith("ILSVRC2012_val_"))
    if count == 0:
        raise InputError(
            f"{key}: the folder '{path}' holds no ILSVRC2012_val_*{imagenet_s.IMAGE_SUFFIX} file: point it at the "
            f"ImageNet-1k validation images (or at ILSVRC2012_img_val.tar)."
        )
    result = {"key": key, "path": path, "kind": "folder", "images": count}
    if count != IMAGENET_VAL_IMAGES:
        result["warning"] = (
            f"{count} images, ImageNet's validation set has {IMAGENET_VAL_IMAGES}; missing ones stop prepare_imagenet_s"
        )
    return result


def check_cifar_root(path: str, key: str, needs_train: bool) -> dict:
    """torchvision's CIFAR100 root: cifar-100-python/{test,meta} (and train when the model is
    fine-tuned here), with the 100 fine label names in meta."""
    folder = Path(path) / CIFAR_FOLDER
    wanted = ["test", "meta"] + (["train"] if needs_train else [])
    missing = [name for name in wanted if not (folder / name).is_file()]
    if missing:
        raise InputError(
            f"{key}: '{path}' lacks {', '.join(f'{CIFAR_FOLDER}/{name}' for name in missing)} (torchvision's CIFAR100 "
            f"root{', train included: the model is fine-tuned here' if needs_train else ''}); or set it to null to download."
        )
    try:
        names = load_cifar_pickle(folder / "meta")["fine_label_names"]
    except InputError as err:  # a global outside numpy's arrays: refused, nothing ran
        raise InputError(f"{key}: {err}") from None
    except Exception as err:  # a foreign or truncated pickle
        raise InputError(f"{key}: {folder / 'meta'} is not CIFAR-100's meta file ({err}).") from None
    if len(names) != CIFAR_CLASSES:
        raise InputError(f"{key}: {folder / 'meta'} names {len(names)} classes, CIFAR-100 has {CIFAR_CLASSES}.")
    return {"key": key, "path": path, "kind": "cifar-100 root", "files": wanted}


def check_stimuli_csv(path: str, key: str) -> dict:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        absent = [c for c in imagenet_s.STIMULUS_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        rows = sum(1 for _ in reader)
    if absent:
        raise InputError(f"{key}: {path} lacks the columns {', '.join(absent)} of validation_stim_info.csv.")
    return {"key": key, "path": path, "kind": "stimulus table", "rows": rows}


def check_synset_mapping(path: str, key: str) -> dict:
    wnids, _ = imagenet_s.read_synset_mapping(path)
    if len(wnids) != 1000:
        raise InputError(f"{key}: {path} has {len(wnids)} classes, ImageNet's LOC_synset_mapping.txt has 1000.")
    return {"key": key, "path": path, "kind": "synset mapping", "classes": len(wnids)}


def check_user_inputs(datasets: dict, finetuned_datasets: set[str]) -> list[dict]:
    """Every user path of the datasets section; raises :class:`InputError` naming the key."""
    checked = []
    for name, dataset in datasets.items():
        prefix = f"datasets.{name}"
        if "imagenet_s" in dataset:
            spec = dataset["imagenet_s"]
            checked.append(check_imagenet_val(spec["imagenet_val"], f"{prefix}.imagenet_s.imagenet_val"))
            if spec.get("stimuli_csv"):
                checked.append(check_stimuli_csv(spec["stimuli_csv"], f"{prefix}.imagenet_s.stimuli_csv"))
            if spec.get("synset_mapping"):
                checked.append(check_synset_mapping(spec["synset_mapping"], f"{prefix}.imagenet_s.synset_mapping"))
        elif "cifar100" in dataset and dataset["cifar100"].get("root"):
            checked.append(
                check_cifar_root(dataset["cifar100"]["root"], f"{prefix}.cifar100.root", name in finetuned_datasets)
            )
        elif "root" in dataset:
            root = Path(dataset["root"])
            for relative in (imagenet_s.IMAGES_DIR, imagenet_s.MAPPING_FILE, imagenet_s.CATEGORIES_FILE):
                if not (root / relative).exists():
                    raise InputError(f"{prefix}.root: '{root}' has no {relative} (the ImageNet-S layout).")
            checked.append({"key": f"{prefix}.root", "path": str(root), "kind": "ImageNet-S layout"})
    return checked
