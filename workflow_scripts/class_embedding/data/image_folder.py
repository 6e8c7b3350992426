"""Your own labelled images: ``<root>/<label>/<image>``, one folder per class, optional masks.

A folder name is a class label given as a wnid (``n01440764``), a class index (``0``) or a class
name (``tench``, matched case-insensitively against the full name or any of its comma-separated
synonyms, ``_`` read as a space). Names and wnids come from timm's ImageNet info of the
configured subset (``imagenet-1k`` by default), or from a list you give. Optional masks
``<masks>/<label>/<stem>.png`` mark the class pixels (non-zero) of each image; with them the
class/context analyses run as on ImageNet-S.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from ..errors import InputError
from .imagenet_s import stimulus_table

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABEL_KINDS = ("wnid", "index", "class_name")

log = logging.getLogger(__name__)


def class_list(class_names: list[str] | None, imagenet_subset: str) -> tuple[list[str] | None, list[str]]:
    """(wnids or None, class names) by class index: the given names, else timm's ImageNet info."""
    if class_names is not None:
        return None, [str(name) for name in class_names]
    from timm.data import ImageNetInfo

    try:
        info = ImageNetInfo(imagenet_subset)
    except Exception as err:  # timm raises assertion or lookup errors for unknown subsets
        raise InputError(
            f"imagenet_subset '{imagenet_subset}' is not a subset timm knows ({err}): use imagenet-1k, "
            "imagenet-21k, imagenet-22k or imagenet-12k, or give class_names."
        ) from None
    return list(info.label_names()), list(info.label_descriptions())


def name_key(text: str) -> str:
    return " ".join(text.replace("_", " ").lower().split())


def class_of_folder(
    folder: str, labels: str, wnids: list[str] | None, names: list[str], num_classes: int | None
) -> tuple[int, str]:
    """(class index, class name) of a class folder's name."""
    if labels == "wnid":
        if wnids is None:
            raise InputError(f"labels: wnid needs timm's ImageNet info, not a class_names list (folder '{folder}').")
        if folder not in wnids:
            raise InputError(f"class folder '{folder}' is not a wnid of the class list: rename it or set labels.")
        index = wnids.index(folder)
    elif labels == "index":
        if not folder.isdigit():
            raise InputError(f"class folder '{folder}' is not a class index (labels: index): rename it or set labels.")
        index = int(folder)
    elif labels == "class_name":
        key = name_key(folder)
        matches = [i for i, name in enumerate(names) if key in {name_key(name), *map(name_key, name.split(","))}]
        if len(matches) != 1:
            found = "no class" if not matches else f"{len(matches)} classes ({', '.join(map(str, matches[:5]))})"
            raise InputError(
                f"class folder '{folder}' names {found} of the class list: rename it to one class name, "
                "or use wnid or index labels."
            )
        index = matches[0]
    else:
        raise InputError(f"labels '{labels}' is not one of {', '.join(LABEL_KINDS)}.")
    if num_classes is not None and not 0 <= index < num_classes:
        raise InputError(f"class folder '{folder}' is class {index}, outside the model's {num_classes} classes.")
    return index, names[index] if index < len(names) else folder


def is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def select_stimuli(
    root: str | Path,
    labels: str,
    images_per_class: int,
    num_classes: int | None,
    class_names: list[str] | None = None,
    imagenet_subset: str = "imagenet-1k",
) -> pa.Table:
    """The stimulus table: the first ``images_per_class`` images (sorted by name) of every class
    folder, class folders sorted by name; folders with fewer images are skipped with a log line.

    ``wnid`` holds the folder name (the class folder, as for the other datasets), ``file`` the
    path relative to ``root``. ``num_classes`` is the smallest number of classes of the models
    evaluated on the folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"image folder {root} not found: point datasets.<name>.image_folder.root at <root>/<label>/*.jpg."
        )
    wnids, names = class_list(class_names, imagenet_subset)
    rows = {k: [] for k in ("wnid", "class_index", "category", "file", "img_index")}
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        index, name = class_of_folder(class_dir.name, labels, wnids, names, num_classes)
        files = sorted(p.name for p in class_dir.iterdir() if is_image(p))
        if len(files) < images_per_class:
            log.info("class folder %s skipped: %d of %d images", class_dir.name, len(files), images_per_class)
            continue
        for img_index, file in enumerate(files[:images_per_class]):
            rows["wnid"].append(class_dir.name)
            rows["class_index"].append(index)
            rows["category"].append(name)
            rows["file"].append(f"{class_dir.name}/{file}")
            rows["img_index"].append(img_index)
    if not rows["wnid"]:
        raise InputError(
            f"no class folder of {root} has {images_per_class} images ({', '.join(IMAGE_SUFFIXES)}): lower "
            "stimuli.images_per_class or add images."
        )
    return stimulus_table(**rows)
