"""The ImageNet-S (ImageNetS919) on-disk layout: class mapping, stimuli, segmentation labels.

Layout under a dataset root ``DP`` (docs/method.md §2.1):
``DP/ImageNetS919/{validation,test,validation-segmentation}/<wnid>/...``,
``DP/ImageNetS919/LOC_synset_mapping.txt`` and
``DP/data/categories/ImageNetS_categories_im919.txt``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from ..errors import InputError
from ..token_grid import grid_shape

IMAGES_DIR = "ImageNetS919"
MAPPING_FILE = f"{IMAGES_DIR}/LOC_synset_mapping.txt"
CATEGORIES_FILE = "data/categories/ImageNetS_categories_im919.txt"
IMAGE_SUFFIX = ".JPEG"

log = logging.getLogger(__name__)


def is_wnid(text: str) -> bool:
    """A WordNet id like n01440764."""
    return text.startswith("n") and text[1:].isdigit()


def read_synset_mapping(path: str | Path) -> tuple[list[str], list[str]]:
    """wnids and category descriptions; the class index of a wnid is its 0-based line number."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"class mapping {path} not found: the dataset root must contain "
            f"{MAPPING_FILE} (ImageNet's LOC_synset_mapping.txt)."
        )
    wnids, categories = [], []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        wnid, _, category = line.strip().partition(" ")
        if not is_wnid(wnid):
            raise InputError(f"{path}:{number}: '{line}' does not start with a wnid like n01440764.")
        wnids.append(wnid)
        categories.append(category)
    return wnids, categories


def segmentation_ids(categories_file: str | Path) -> dict[str, int]:
    """ImageNet-S segmentation id of each wnid: its 1-based rank in sorted wnid order.

    Ranked by sorting rather than by line number, because the first release of the
    categories file was unsorted (docs/method.md §7.25).
    """
    path = Path(categories_file)
    if not path.is_file():
        raise InputError(f"ImageNet-S categories file {path} not found (expected {CATEGORIES_FILE}).")
    wnids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    return {wnid: rank for rank, wnid in enumerate(wnids, start=1)}


def stimulus_table(
    wnid: list[str], class_index: list[int], category: list[str], file: list[str], img_index: list[int]
) -> pa.Table:
    """The stimulus table every dataset kind writes (``stimuli.parquet``), from its columns: one
    row per image, numbered 0..n-1 in the given order; ``file`` relative to the dataset's images
    directory."""
    return pa.table(
        {
            "image": pa.array(np.arange(len(file), dtype=np.int32)),
            "wnid": list(wnid),
            "class_index": pa.array(class_index, pa.int16()),
            "category": list(category),
            "file": list(file),
            "img_index": pa.array(img_index, pa.int8()),
        }
    )


def select_stimuli(
    split_dir: str | Path,
    mapping_file: str | Path,
    images_per_class: int,
    exclude_wnids: list[str] = (),
) -> pa.Table:
    """The stimulus table: ``images_per_class`` images of every usable class, class-major.

    Classes and files are taken in sorted order (the original used the unsorted filesystem
    listing, docs/method.md §7.15); excluded wnids and classes with too few images are skipped.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise InputError(
            f"image folder {split_dir} not found: point the dataset root in the config at a "
            f"directory holding {IMAGES_DIR}/<split>/<wnid>/*{IMAGE_SUFFIX}."
        )
    wnids, categories = read_synset_mapping(mapping_file)
    class_index = {wnid: i for i, wnid in enumerate(wnids)}
    excluded = set(exclude_wnids)
    rows = {k: [] for k in ("wnid", "class_index", "category", "file", "img_index")}
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        wnid = class_dir.name
        if wnid in excluded:
            continue
        if wnid not in class_index:
            raise InputError(
                f"class folder {class_dir} has no line in {mapping_file}: use the mapping file "
                f"that belongs to this dataset."
            )
        files = sorted(p.name for p in class_dir.iterdir() if p.name.endswith(IMAGE_SUFFIX))
        if len(files) < images_per_class:
            log.info("class %s skipped: %d of %d images", wnid, len(files), images_per_class)
            continue
        for img_index, name in enumerate(files[:images_per_class]):
            rows["wnid"].append(wnid)
            rows["class_index"].append(class_index[wnid])
            rows["category"].append(categories[class_index[wnid]])
            rows["file"].append(f"{split_dir.name}/{wnid}/{name}")
            rows["img_index"].append(img_index)
    if not rows["wnid"]:
        raise InputError(
            f"no class in {split_dir} has {images_per_class} images: lower "
            f"stimuli.images_per_class or check the dataset."
        )
    return stimulus_table(**rows)


def decode_segmentation(path: str | Path) -> np.ndarray:
    """Per-pixel category ids of an ImageNet-S segmentation PNG (id = G·256 + R)."""
    try:
        with Image.open(path) as png:
            rgb = np.asarray(png.convert("RGB"), dtype=np.int32)
    except FileNotFoundError:
        raise InputError(f"segmentation {path} not found: the validation-segmentation split is incomplete.") from None
    except OSError as err:
        raise InputError(f"segmentation {path} cannot be decoded ({err}): replace the file.") from None
    return rgb[..., 1] * 256 + rgb[..., 0]


def nearest_grid_indices(size: int, grid: int) -> np.ndarray:
    """Source pixel of each grid cell under nearest-neighbour resizing (OpenCV INTER_NEAREST)."""
    return np.minimum(np.floor(np.arange(grid) * (size / grid)).astype(np.int64), size - 1)


def token_labels(class_mask: np.ndarray, grid: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Class/context label (nearest neighbour, the cell's top-left pixel) and class-pixel
    fraction of every cell of a token grid (a side, or (rows, cols)), flattened row-major."""
    height, width = class_mask.shape
    n_rows, n_cols = grid_shape(grid)
    rows, cols = nearest_grid_indices(height, n_rows), nearest_grid_indices(width, n_cols)
    labels = class_mask[np.ix_(rows, cols)].reshape(-1)
    row_edges = np.floor(np.arange(n_rows + 1) * (height / n_rows)).astype(np.int64)
    col_edges = np.floor(np.arange(n_cols + 1) * (width / n_cols)).astype(np.int64)
    # Cell sums from a summed-area table: exact fractions without a Python loop over cells.
    integral = np.pad(class_mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = (
        integral[np.ix_(row_edges[1:], col_edges[1:])]
        - integral[np.ix_(row_edges[:-1], col_edges[1:])]
        - integral[np.ix_(row_edges[1:], col_edges[:-1])]
        + integral[np.ix_(row_edges[:-1], col_edges[:-1])]
    )
    areas = np.outer(np.diff(row_edges), np.diff(col_edges))
    return labels.astype(np.int8), (sums / np.maximum(areas, 1)).reshape(-1).astype(np.float32)


def class_mask(dataset_root: str | Path, seg_ids: dict[str, int], categories_file, wnid: str, file: str) -> np.ndarray:
    """Boolean (H, W) mask of a stimulus's own class in its segmentation (``seg_ids`` from
    :func:`segmentation_ids` of ``categories_file``)."""
    if wnid not in seg_ids:
        raise InputError(f"wnid {wnid} of stimulus {file} is not in {categories_file}.")
    seg_root = Path(dataset_root) / IMAGES_DIR / "validation-segmentation"
    return decode_segmentation(seg_root / wnid / (Path(file).stem + ".png")) == seg_ids[wnid]


def token_label_table(
    stimuli: pa.Table, dataset_root: str | Path, categories_file: str | Path, grid: int | tuple[int, int]
) -> pa.Table:
    """Per-(image, image token) class/context labels of every stimulus (docs/method.md §2.2)."""
    seg_ids = segmentation_ids(categories_file)
    wnids, files = (stimuli.column(c).to_pylist() for c in ("wnid", "file"))
    class_masks = (class_mask(dataset_root, seg_ids, categories_file, w, f) for w, f in zip(wnids, files))
    return token_label_rows(stimuli.column("image").to_numpy(), class_masks, grid)


def token_label_rows(images: np.ndarray, class_masks, grid: int | tuple[int, int]) -> pa.Table:
    """The token-label table of images and their class-pixel masks (one per image, in order).

    ``token`` is the 0-based index among image tokens (row-major grid position); a model with
    P prefix tokens ([CLS], [DIST], registers) sees image token t at sequence position t + P.
    """
    labels, fractions = [], []
    for mask in class_masks:
        label, fraction = token_labels(mask, grid)
        labels.append(label)
        fractions.append(fraction)
    n_rows, n_cols = grid_shape(grid)
    n_tokens = n_rows * n_cols
    return pa.table(
        {
            "image": pa.array(np.repeat(np.asarray(images, np.int32), n_tokens)),
            "token": pa.array(np.tile(np.arange(n_tokens, dtype=np.int16), len(images))),
            "label": pa.array(np.where(np.concatenate(labels) == 1, "class", "context")).dictionary_encode(),
            "class_fraction": pa.array(np.concatenate(fractions)),
        }
    )


STIMULUS_CSV_COLUMNS = ("imagenet_id", "index", "cat", "img_name", "img_index")


def stimuli_from_csv(
    csv_file: str | Path,
    split_dir: str | Path,
    mapping_file: str | Path,
    images_per_class: int,
) -> pa.Table:
    """The stimulus table from the authors' ``validation_stim_info.csv`` (docs/method.md §2.1), in its row
    order: their exact images, which the sorted selection cannot recover (docs/method.md §7.15).

    Checked against the dataset: every wnid is in the mapping with the CSV's class index, every
    class has ``images_per_class`` rows, every image exists.
    """
    import csv

    csv_file, split_dir = Path(csv_file), Path(split_dir)
    if not csv_file.is_file():
        raise InputError(f"stimulus table {csv_file} not found (datasets.<name>.imagenet_s.stimuli_csv).")
    wnids, categories = read_synset_mapping(mapping_file)
    class_index = {wnid: i for i, wnid in enumerate(wnids)}
    with open(csv_file, newline="") as handle:
        reader = csv.DictReader(handle)
        absent = [c for c in STIMULUS_CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise InputError(f"{csv_file} lacks the columns {', '.join(absent)} of validation_stim_info.csv.")
        rows = list(reader)
    per_class: dict[str, int] = {}
    for number, row in enumerate(rows, start=2):
        wnid = row["imagenet_id"]
        if wnid not in class_index:
            raise InputError(f"{csv_file}:{number}: wnid {wnid} is not in the class mapping {mapping_file}.")
        if int(row["index"]) != class_index[wnid]:
            raise InputError(
                f"{csv_file}:{number}: class index {row['index']} of {wnid} differs from its line "
                f"{class_index[wnid]} in {mapping_file}."
            )
        if not (split_dir / wnid / row["img_name"]).is_file():
            raise InputError(f"{csv_file}:{number}: image {wnid}/{row['img_name']} is not in {split_dir}.")
        per_class[wnid] = per_class.get(wnid, 0) + 1
    short = {wnid: n for wnid, n in per_class.items() if n != images_per_class}
    if short:
        wnid, n = next(iter(short.items()))
        raise InputError(
            f"{csv_file}: class {wnid} has {n} rows, not stimuli.images_per_class = {images_per_class} "
            f"({len(short)} such classes)."
        )
    return stimulus_table(
        wnid=[r["imagenet_id"] for r in rows],
        class_index=[class_index[r["imagenet_id"]] for r in rows],
        category=[categories[class_index[r["imagenet_id"]]] for r in rows],
        file=[f"{split_dir.name}/{r['imagenet_id']}/{r['img_name']}" for r in rows],
        img_index=[int(r["img_index"]) for r in rows],
    )
