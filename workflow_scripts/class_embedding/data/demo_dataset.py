"""Seeded procedural stand-in for ImageNet-S (ImageNetS919), written in the real on-disk format.

The workflow normally reads the real dataset; this module lets it run offline on a small synthetic
one. Each class is a (shape, colour, texture) object on a class-preferred background; objects vary
in size, position, rotation and colour, and get pixel noise, occasional distractor objects of other
classes and a background that only sometimes belongs to the class (``context_correlation``).

Layout written under ``images_dir`` (``<root>/ImageNetS919``), as in the real release::

    LOC_synset_mapping.txt                      "<wnid> <description>", sorted; index = line number
    train/<wnid>/<wnid>_<k>.JPEG
    validation/<wnid>/ILSVRC2012_val_<8 digits>.JPEG
    validation-segmentation/<wnid>/ILSVRC2012_val_<8 digits>.png   id = G * 256 + R
    test/<wnid>/ILSVRC2012_val_<8 digits>.JPEG

plus ``categories_file`` (``ImageNetS_categories_im919.txt``): the annotated wnids, sorted, whose
1-based line number is the segmentation id. The mapping file also lists a few "unannotated" wnids
(no folders anywhere), interleaved in sort order, so class index and segmentation id differ as
they do for the real 1000 vs 919 classes.

Every image is rendered from its own seed (drawn from the master ``seed``), so a single image can be
re-rendered with :func:`render_sample` from :func:`plan_dataset` output, which the tests use.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InputError
from ..tables import atomic_path

log = logging.getLogger(__name__)

BACKGROUND_ID = 0
IGNORE_ID = 1000  # ImageNet-S marks uncertain (boundary) pixels with 1000
SPLITS = ("train", "validation", "test")
MAPPING_FILE = "LOC_synset_mapping.txt"
JPEG_QUALITY = 90
SHORT_VALIDATION_COUNT = 3  # below the 5 per class that stimulus selection asks for
DISTRACTOR_PROBABILITY = 0.15
OBJECT_FRACTION = (0.15, 0.45)
DISTRACTOR_FRACTION = (0.04, 0.09)
MAX_ROTATION = 0.26  # radians (~15 deg): more would turn squares into diamonds
VAL_NUMBER_RANGE = 50_000  # ILSVRC2012_val_00000001 .. 00050000
WNID_RANGE = (1_000_000, 15_100_000)  # the span real ImageNet wnids fall into

DEFAULT_IMAGES_PER_CLASS = {"train": 120, "validation": 8, "test": 12}


# --------------------------------------------------------------------------------------------
# Vocabulary: shapes, colours, textures, background patterns


def _circle(u, v):
    return u * u + v * v <= 1.0


def _square(u, v):
    return np.maximum(np.abs(u), np.abs(v)) <= 0.85


def _triangle(u, v):
    # Apex up (image rows grow downwards), flat base.
    return (v <= 0.8) & (np.abs(u) <= (v + 0.95) * 0.55)


def _cross(u, v):
    au, av = np.abs(u), np.abs(v)
    return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))


def _ring(u, v):
    r2 = u * u + v * v
    return (r2 <= 1.0) & (r2 >= 0.55**2)


def _star(u, v):
    angle = np.arctan2(u, -v)  # 0 points straight up
    phase = (angle * (5 / (2 * np.pi))) % 1.0
    tip = np.abs(2 * phase - 1)  # 1 between points, 0 at a point
    return np.sqrt(u * u + v * v) <= 0.97 - 0.55 * tip


def _diamond(u, v):
    return np.abs(u) + np.abs(v) <= 1.0


def _bar(u, v):
    return (np.abs(u) <= 0.97) & (np.abs(v) <= 0.32)


def _crescent(u, v):
    return (u * u + v * v <= 1.0) & ((u - 0.45) ** 2 + v * v > 0.72**2)


# name -> (synonym for the description, mask in the unit box [-1, 1]^2)
SHAPES = {
    "circle": ("disc", _circle),
    "square": ("block", _square),
    "triangle": ("wedge", _triangle),
    "cross": ("plus sign", _cross),
    "ring": ("annulus", _ring),
    "star": ("pentagram", _star),
    "diamond": ("rhombus", _diamond),
    "bar": ("rod", _bar),
    "crescent": ("moon", _crescent),
}

OBJECT_COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 215),
    "blue": (40, 80, 225),
    "purple": (130, 50, 190),
    "magenta": (225, 60, 170),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}

# texture -> adjective used in the description ("" for solid)
TEXTURES = {"solid": "", "striped": "striped ", "dotted": "dotted ", "checkered": "checkered "}

# Muted colours so objects usually stand out from backgrounds.
BACKGROUND_COLOURS = np.array(
    [
        (135, 180, 220),  # sky
        (90, 140, 70),  # grass
        (210, 190, 140),  # sand
        (128, 128, 128),  # stone
        (110, 80, 55),  # soil
        (40, 50, 90),  # navy
        (120, 120, 60),  # olive
        (225, 215, 195),  # beige
        (50, 110, 110),  # teal
        (150, 70, 50),  # rust
        (170, 160, 200),  # lavender
        (60, 60, 65),  # charcoal
    ],
    dtype=np.float32,
)
BACKGROUND_PATTERNS = ("gradient", "bands", "blotches", "plain", "grid", "tiles")


def _unit_area(mask_fn, samples: int = 401) -> float:
    """Fraction of the unit box a shape covers; scales objects to a target image fraction."""
    axis = np.linspace(-1, 1, samples)
    v, u = np.meshgrid(axis, axis, indexing="ij")
    return float(mask_fn(u, v).mean())


SHAPE_UNIT_AREA = {name: _unit_area(fn) for name, (_, fn) in SHAPES.items()}


@dataclass(frozen=True)
class ClassSpec:
    """Appearance of one class: the object it shows and its preferred background."""

    wnid: str
    shape: str
    colour: str
    texture: str
    texture_angle: float  # stripe direction, radians
    texture_period: float  # texture period as a fraction of the object's half size
    background_pattern: str
    background_colours: tuple[int, int]  # indices into BACKGROUND_COLOURS
    background_angle: float
    background_period: float  # pixels

    @property
    def description(self) -> str:
        synonym = SHAPES[self.shape][0]
        return f"{self.colour} {TEXTURES[self.texture]}{self.shape}, {synonym}"


@dataclass(frozen=True)
class ImagePlan:
    """Everything that decides one image; the rest comes from its own ``seed``."""

    split: str
    class_index: int  # index into DatasetPlan.classes (annotated classes, sorted by wnid)
    stem: str  # file name without extension
    seed: int
    height: int
    width: int
    background_class: int  # whose preferred background is drawn
    distractor_class: int  # -1 for none

    @property
    def has_segmentation(self) -> bool:
        return self.split == "validation"


@dataclass(frozen=True)
class DatasetPlan:
    classes: list[ClassSpec]  # annotated, sorted by wnid; segmentation id = index + 1
    unannotated: list[ClassSpec]  # listed in the mapping file only
    images: list[ImagePlan]
    short_validation_classes: list[int]

    @property
    def mapping(self) -> list[ClassSpec]:
        """All classes in LOC_synset_mapping.txt order (sorted by wnid)."""
        return sorted(self.classes + self.unannotated, key=lambda spec: spec.wnid)

    def relpath(self, image: ImagePlan, segmentation: bool = False) -> str:
        wnid = self.classes[image.class_index].wnid
        if segmentation:
            return f"validation-segmentation/{wnid}/{image.stem}.png"
        return f"{image.split}/{wnid}/{image.stem}.JPEG"


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (H, W, 3) uint8
    segmentation: np.ndarray  # (H, W) int: 0 background, seg ids, IGNORE_ID on some boundaries
    object_mask: np.ndarray  # (H, W) bool: where the main object is visible (not occluded);
    # its boundary pixels may carry IGNORE_ID in ``segmentation``


# --------------------------------------------------------------------------------------------
# Validation and planning


def _check_int(name: str, value, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise InputError(f"{name} must be {bound}, got {value}")
    return int(value)


def _check_arguments(
    num_classes,
    num_unannotated_classes,
    images_per_class,
    short_validation_classes,
    image_size,
    context_correlation,
    seed,
) -> tuple[dict[str, int], tuple[int, int], float]:
    max_classes = len(SHAPES) * len(OBJECT_COLOURS) * len(TEXTURES)
    _check_int("num_classes", num_classes, 2, min(max_classes, 999))
    _check_int("num_unannotated_classes", num_unannotated_classes, 0, min(max_classes, 1000) - num_classes)
    if not isinstance(images_per_class, Mapping) or set(images_per_class) != set(SPLITS):
        raise InputError(f"images_per_class must be a mapping with keys {list(SPLITS)}, got {images_per_class!r}")
    counts = {split: _check_int(f"images_per_class.{split}", images_per_class[split], 1) for split in SPLITS}
    _check_int("short_validation_classes", short_validation_classes, 0, num_classes)
    if short_validation_classes and counts["validation"] < 2:
        raise InputError("short_validation_classes needs images_per_class.validation >= 2")
    if not isinstance(image_size, (list, tuple)) or len(image_size) != 2:
        raise InputError(f"image_size must be [min_side, max_side], got {image_size!r}")
    low = _check_int("image_size min", image_size[0], 16)
    high = _check_int("image_size max", image_size[1], low, 4096)
    if (
        isinstance(context_correlation, bool)
        or not isinstance(context_correlation, (int, float, np.floating))
        or not 0.0 <= context_correlation <= 1.0
    ):
        raise InputError(f"context_correlation must be in [0, 1], got {context_correlation!r}")
    _check_int("seed", seed, 0)
    total_val = num_classes * (counts["validation"] + counts["test"])
    if total_val > VAL_NUMBER_RANGE:
        raise InputError(f"images_per_class: at most {VAL_NUMBER_RANGE} validation+test images, got {total_val}")
    return counts, (low, high), float(context_correlation)


def _draw_wnids(rng: np.random.Generator, count: int) -> list[str]:
    values = rng.choice(WNID_RANGE[1] - WNID_RANGE[0], size=count, replace=False) + WNID_RANGE[0]
    return [f"n{value:08d}" for value in values]


def _draw_appearances(rng: np.random.Generator, count: int) -> list[tuple[str, str, str]]:
    """Distinct (shape, colour, texture) triples, preferring distinct (shape, colour) pairs."""
    combos = list(itertools.product(SHAPES, OBJECT_COLOURS, TEXTURES))
    order = rng.permutation(len(combos))
    chosen, used_pairs, leftovers = [], set(), []
    for i in order:
        shape, colour, texture = combos[i]
        if (shape, colour) in used_pairs:
            leftovers.append(combos[i])
        else:
            used_pairs.add((shape, colour))
            chosen.append(combos[i])
    return (chosen + leftovers)[:count]


def _draw_backgrounds(rng: np.random.Generator, count: int) -> list[tuple]:
    """Distinct (pattern, colour pair) triples with per-class angle and period."""
    n_colours = len(BACKGROUND_COLOURS)
    combos = [
        (pattern, a, b) for pattern in BACKGROUND_PATTERNS for a in range(n_colours) for b in range(n_colours) if a != b
    ]
    picks = rng.choice(len(combos), size=count, replace=False)
    angles = rng.uniform(0, np.pi, size=count)
    periods = rng.uniform(12, 26, size=count)
    return [
        (combos[p][0], (combos[p][1], combos[p][2]), float(angle), float(period))
        for p, angle, period in zip(picks, angles, periods)
    ]


def plan_dataset(
    *,
    num_classes: int = 32,
    num_unannotated_classes: int = 2,
    images_per_class: dict | None = None,
    short_validation_classes: int = 1,
    image_size: tuple[int, int] = (56, 96),
    context_correlation: float = 0.7,
    classes_per_background: int = 4,
    seed: int = 0,
) -> DatasetPlan:
    """Decide classes, file names and per-image seeds; no pixels yet."""
    if images_per_class is None:
        images_per_class = dict(DEFAULT_IMAGES_PER_CLASS)
    counts, (low, high), context_correlation = _check_arguments(
        num_classes,
        num_unannotated_classes,
        images_per_class,
        short_validation_classes,
        image_size,
        context_correlation,
        seed,
    )
    rng = np.random.default_rng(seed)
    total_classes = num_classes + num_unannotated_classes

    wnids = sorted(_draw_wnids(rng, total_classes))
    # Unannotated positions avoid the last sorted slot, so at least one annotated class comes
    # after one and its class index differs from its segmentation id - 1.
    unannotated_positions = set(rng.choice(total_classes - 1, size=num_unannotated_classes, replace=False).tolist())
    appearances = _draw_appearances(rng, total_classes)
    # Classes share background styles in groups: a background narrows the class down to a few
    # candidates while the object identifies it, so class tokens carry more evidence than
    # context tokens (as in natural images), yet context still carries some.
    _check_int("classes_per_background", classes_per_background, 1)
    n_styles = -(-total_classes // min(classes_per_background, total_classes))
    styles = _draw_backgrounds(rng, n_styles)
    backgrounds = [styles[i % n_styles] for i in rng.permutation(total_classes)]
    texture_angles = rng.uniform(0, np.pi, size=total_classes)
    texture_periods = rng.uniform(0.35, 0.6, size=total_classes)
    specs = [
        ClassSpec(
            wnid=wnid,
            shape=appearances[i][0],
            colour=appearances[i][1],
            texture=appearances[i][2],
            texture_angle=float(texture_angles[i]),
            texture_period=float(texture_periods[i]),
            background_pattern=backgrounds[i][0],
            background_colours=tuple(int(c) for c in backgrounds[i][1]),
            background_angle=backgrounds[i][2],
            background_period=backgrounds[i][3],
        )
        for i, wnid in enumerate(wnids)
    ]
    classes = [spec for i, spec in enumerate(specs) if i not in unannotated_positions]
    unannotated = [spec for i, spec in enumerate(specs) if i in unannotated_positions]

    short = sorted(rng.choice(num_classes, size=short_validation_classes, replace=False).tolist())
    per_split = {split: np.full(num_classes, counts[split], dtype=np.int64) for split in SPLITS}
    per_split["validation"][short] = min(SHORT_VALIDATION_COUNT, counts["validation"] - 1)

    # Validation and test share one shuffled pool of ILSVRC2012_val numbers: disjoint names that
    # do not follow class order.
    n_held_out = int(per_split["validation"].sum() + per_split["test"].sum())
    val_numbers = iter((rng.choice(VAL_NUMBER_RANGE, size=n_held_out, replace=False) + 1).tolist())

    images: list[ImagePlan] = []
    for split in SPLITS:
        for class_index in range(num_classes):
            n = int(per_split[split][class_index])
            if split == "train":
                # Real train file numbers are sparse, not 0..n-1.
                numbers = np.sort(rng.choice(max(15_000, 2 * n), size=n, replace=False) + 1)
                stems = [f"{classes[class_index].wnid}_{k}" for k in numbers.tolist()]
            else:
                stems = [f"ILSVRC2012_val_{next(val_numbers):08d}" for _ in range(n)]
            sizes = rng.integers(low, high + 1, size=(n, 2))  # independent height and width
            seeds = rng.integers(0, 2**63 - 1, size=n)
            in_context = rng.random(n) < context_correlation
            # Out of context: the preferred background of a uniformly drawn *other* class.
            other = (class_index + rng.integers(1, num_classes, size=n)) % num_classes
            background_class = np.where(in_context, class_index, other)
            has_distractor = rng.random(n) < DISTRACTOR_PROBABILITY
            distractor = (class_index + rng.integers(1, num_classes, size=n)) % num_classes
            distractor = np.where(has_distractor, distractor, -1)
            images.extend(
                ImagePlan(
                    split=split,
                    class_index=class_index,
                    stem=stems[j],
                    seed=int(seeds[j]),
                    height=int(sizes[j, 0]),
                    width=int(sizes[j, 1]),
                    background_class=int(background_class[j]),
                    distractor_class=int(distractor[j]),
                )
                for j in range(n)
            )
    return DatasetPlan(classes, unannotated, images, short)


# --------------------------------------------------------------------------------------------
# Rendering


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a random coarse grid, bilinearly upsampled."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    ys = np.linspace(0, cells, height, dtype=np.float32)
    xs = np.linspace(0, cells, width, dtype=np.float32)
    y0 = np.minimum(ys.astype(np.int64), cells - 1)
    x0 = np.minimum(xs.astype(np.int64), cells - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _background(spec: ClassSpec, yy, xx, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float background in the class's preferred pattern, with per-image jitter."""
    height, width = yy.shape
    first, second = (
        BACKGROUND_COLOURS[i] + rng.normal(0, 10, size=3).astype(np.float32) for i in spec.background_colours
    )
    angle = spec.background_angle + rng.normal(0, 0.15)
    period = spec.background_period * rng.uniform(0.85, 1.15)
    projection = xx * np.cos(angle) + yy * np.sin(angle)  # pixels along the pattern direction
    phase = rng.uniform(0, 1)
    pattern = spec.background_pattern
    if pattern == "gradient":
        extent = abs(width * np.cos(angle)) + abs(height * np.sin(angle))
        mix = np.clip((projection - projection.min()) / max(extent, 1.0), 0, 1)
    elif pattern == "bands":
        mix = 0.5 + 0.5 * np.sin(2 * np.pi * (projection / period + phase))
    elif pattern == "blotches":
        mix = np.clip((_smooth_noise(rng, height, width, 4) - 0.5) * 3 + 0.5, 0, 1)
    elif pattern == "plain":
        mix = 0.25 * _smooth_noise(rng, height, width, 3)
    elif pattern == "grid":
        offset_y, offset_x = rng.uniform(0, period, size=2)
        mix = (((yy + offset_y) % period) < 2.5) | (((xx + offset_x) % period) < 2.5)
    elif pattern == "tiles":
        offset_y, offset_x = rng.uniform(0, period, size=2)
        mix = ((np.floor((yy + offset_y) / period) + np.floor((xx + offset_x) / period)) % 2) * 0.8
    else:  # pragma: no cover - guarded by BACKGROUND_PATTERNS
        raise ValueError(pattern)
    mix = np.asarray(mix, dtype=np.float32)[..., None]
    return first * (1 - mix) + second * mix


def _object_colours(spec: ClassSpec, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Jittered primary colour and the texture's secondary colour (darker, or lighter if dark)."""
    base = np.array(OBJECT_COLOURS[spec.colour], dtype=np.float32)
    primary = base * rng.uniform(0.82, 1.18, size=3).astype(np.float32) + rng.normal(0, 12)
    primary = np.clip(primary, 0, 255)
    if primary.mean() > 80:
        secondary = primary * 0.45
    else:
        secondary = primary + (255 - primary) * 0.5
    return primary, secondary


def _draw_object(
    canvas,
    labels,
    label: int,
    spec: ClassSpec,
    fraction: float,
    rng,
    yy,
    xx,
    avoid=None,
) -> np.ndarray:
    """Paint one object onto ``canvas``/``labels`` in place; return its mask.

    ``fraction`` is the target share of the image; objects that would not fit are shrunk.
    With ``avoid`` (a mask), a few positions are tried and the least overlapping one kept.
    """
    height, width = yy.shape
    shape_fn = SHAPES[spec.shape][1]
    aspect = np.exp(rng.uniform(-0.2, 0.2))
    half = np.sqrt(fraction * height * width / (4 * SHAPE_UNIT_AREA[spec.shape]))
    half_x, half_y = half * aspect, half / aspect
    rotation = rng.uniform(-MAX_ROTATION, MAX_ROTATION)
    cos, sin = np.cos(rotation), np.sin(rotation)
    # Half extents of the rotated box; shrink until the object fits inside the image.
    extent_x = abs(half_x * cos) + abs(half_y * sin)
    extent_y = abs(half_x * sin) + abs(half_y * cos)
    shrink = min(1.0, 0.49 * width / extent_x, 0.49 * height / extent_y)
    half_x, half_y, extent_x, extent_y = (value * shrink for value in (half_x, half_y, extent_x, extent_y))

    tries = 1 if avoid is None else 6
    best = None
    for _ in range(tries):
        centre_x = rng.uniform(extent_x, width - extent_x)
        centre_y = rng.uniform(extent_y, height - extent_y)
        dx, dy = xx - centre_x, yy - centre_y
        along = dx * cos + dy * sin  # object frame, pixels
        across = -dx * sin + dy * cos
        mask = shape_fn(along / half_x, across / half_y)
        overlap = 0 if avoid is None else int((mask & avoid).sum())
        if best is None or overlap < best[0]:
            best = (overlap, mask, along, across)
    _, mask, along, across = best

    primary, secondary = _object_colours(spec, rng)
    period = max(4.0, spec.texture_period * min(half_x, half_y))
    phase_a, phase_b = rng.uniform(0, 1, size=2)
    if spec.texture == "striped":
        angle = spec.texture_angle + rng.normal(0, 0.15)
        stripe = along * np.cos(angle) + across * np.sin(angle)
        secondary_mask = ((stripe / period + phase_a) % 1.0) < 0.5
    elif spec.texture == "dotted":
        cell_a = (along / period + phase_a) % 1.0 - 0.5
        cell_b = (across / period + phase_b) % 1.0 - 0.5
        secondary_mask = cell_a**2 + cell_b**2 < 0.3**2
    elif spec.texture == "checkered":
        secondary_mask = (np.floor(along / period + phase_a) + np.floor(across / period + phase_b)) % 2 == 1
    else:
        secondary_mask = np.zeros_like(mask)
    colour = np.where(secondary_mask[..., None], secondary, primary)
    canvas[mask] = colour[mask]
    labels[mask] = label
    return mask


def _mark_boundaries(labels: np.ndarray, rng: np.random.Generator) -> None:
    """Set a random share of object-boundary pixels to IGNORE_ID, as ImageNet-S annotators did."""
    padded = np.pad(labels, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    differs = (
        (padded[:-2, 1:-1] != centre)
        | (padded[2:, 1:-1] != centre)
        | (padded[1:-1, :-2] != centre)
        | (padded[1:-1, 2:] != centre)
    )
    boundary = differs & (labels != BACKGROUND_ID)
    share = 0.0 if rng.random() < 0.3 else rng.uniform(0.3, 1.0)
    labels[boundary & (rng.random(labels.shape) < share)] = IGNORE_ID


def render_sample(plan: DatasetPlan, image: ImagePlan, *, draw_objects: bool = True) -> Sample:
    """Render one planned image, identically on every call.

    ``draw_objects=False`` gives the same image with only its background (for context checks).
    """
    rng = np.random.default_rng(image.seed)
    height, width = image.height, image.width
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) + 0.5
    canvas = _background(plan.classes[image.background_class], yy, xx, rng)
    labels = np.zeros((height, width), dtype=np.int32)
    label = image.class_index + 1
    # Objects go onto copies and are always drawn, so the random stream (and hence the noise)
    # is the same with and without ``draw_objects``.
    object_canvas, object_labels = canvas.copy(), labels.copy()
    fraction = rng.uniform(*OBJECT_FRACTION)
    main_mask = _draw_object(
        object_canvas, object_labels, label, plan.classes[image.class_index], fraction, rng, yy, xx
    )
    if image.distractor_class >= 0:
        fraction = rng.uniform(*DISTRACTOR_FRACTION)
        distractor_mask = _draw_object(
            object_canvas,
            object_labels,
            image.distractor_class + 1,
            plan.classes[image.distractor_class],
            fraction,
            rng,
            yy,
            xx,
            avoid=main_mask,
        )
        main_mask = main_mask & ~distractor_mask
    if draw_objects:
        canvas, labels = object_canvas, object_labels
    _mark_boundaries(labels, rng)

    # Global contrast/brightness change and sensor noise, over the whole image.
    mean = canvas.mean(axis=(0, 1), keepdims=True)
    canvas = (canvas - mean) * rng.uniform(0.85, 1.15) + mean + rng.normal(0, 8)
    canvas += rng.normal(0, rng.uniform(4, 14), size=canvas.shape).astype(np.float32)
    pixels = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Sample(pixels, labels, main_mask if draw_objects else np.zeros_like(main_mask))


# --------------------------------------------------------------------------------------------
# Encoding and writing


def encode_segmentation(labels: np.ndarray) -> np.ndarray:
    """ImageNet-S PNG encoding: R = id % 256, G = id // 256, B = 0."""
    labels = np.asarray(labels)
    rgb = np.zeros(labels.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = labels % 256
    rgb[..., 1] = labels // 256
    return rgb


def decode_segmentation(rgb: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_segmentation`: id = G * 256 + R."""
    rgb = np.asarray(rgb)
    return rgb[..., 1].astype(np.int32) * 256 + rgb[..., 0].astype(np.int32)


def _write_categories(path: Path, plan: DatasetPlan) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{spec.wnid}\n" for spec in plan.classes))


def write_demo_dataset(
    images_dir: str | os.PathLike,
    categories_file: str | os.PathLike,
    **plan_options,
) -> dict:
    """Write the dataset to ``images_dir`` and the category list; return a short summary.
    ``plan_options`` are the keyword arguments of :func:`plan_dataset`.

    Files are written into a hidden sibling directory that is renamed into place at the end, so an
    interrupted run never leaves a half-written ``images_dir``.
    """
    plan = plan_dataset(**plan_options)
    images_dir = Path(images_dir)
    partial = images_dir.with_name(f".{images_dir.name}.partial")
    if partial.exists():
        shutil.rmtree(partial)  # stale leftovers of an interrupted run
    partial.mkdir(parents=True)

    mapping = "".join(f"{spec.wnid} {spec.description}\n" for spec in plan.mapping)
    (partial / MAPPING_FILE).write_text(mapping)
    folders = {f"{split}/{spec.wnid}" for split in SPLITS for spec in plan.classes} | {
        f"validation-segmentation/{spec.wnid}" for spec in plan.classes
    }
    for folder in sorted(folders):
        (partial / folder).mkdir(parents=True)

    for image in plan.images:
        sample = render_sample(plan, image)
        Image.fromarray(sample.image, mode="RGB").save(
            partial / plan.relpath(image), format="JPEG", quality=JPEG_QUALITY
        )
        if image.has_segmentation:
            Image.fromarray(encode_segmentation(sample.segmentation), mode="RGB").save(
                partial / plan.relpath(image, segmentation=True), format="PNG"
            )

    if images_dir.exists():
        shutil.rmtree(images_dir)
    os.replace(partial, images_dir)
    _write_categories(Path(categories_file), plan)

    counts = {split: sum(1 for image in plan.images if image.split == split) for split in SPLITS}
    summary = {
        "classes": len(plan.classes),
        "unannotated_classes": [spec.wnid for spec in plan.unannotated],
        "short_validation_classes": [plan.classes[i].wnid for i in plan.short_validation_classes],
        "counts": counts,
    }
    log.info("wrote demo ImageNet-S to %s: %s", images_dir, summary)
    return summary


SPEC_KEYS = (
    "num_classes",
    "num_unannotated_classes",
    "images_per_class",
    "short_validation_classes",
    "image_size",
    "context_correlation",
    "classes_per_background",
)


def write_from_spec(images_dir, categories_file, spec: dict, seed: int) -> dict:
    """:func:`write_demo_dataset` from a config mapping; unknown keys are an error, not ignored."""
    if not isinstance(spec, Mapping):
        raise InputError(f"demo dataset spec must be a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise InputError(f"demo dataset spec: unknown keys {unknown}; allowed: {list(SPEC_KEYS)}")
    kwargs = dict(spec)
    if isinstance(kwargs.get("images_per_class"), Mapping):
        kwargs["images_per_class"] = dict(kwargs["images_per_class"])
    if "image_size" in kwargs and isinstance(kwargs["image_size"], list):
        kwargs["image_size"] = tuple(kwargs["image_size"])
    return write_demo_dataset(images_dir, categories_file, seed=seed, **kwargs)
