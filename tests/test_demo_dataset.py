"""The synthetic ImageNet-S stand-in: on-disk format, determinism, and that it is learnable."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from class_embedding.data import demo_dataset
from class_embedding.errors import InputError

SMALL = dict(
    num_classes=6,
    num_unannotated_classes=2,
    images_per_class={"train": 4, "validation": 5, "test": 3},
    short_validation_classes=2,
    image_size=(32, 64),
    context_correlation=0.7,
    seed=3,
)


def _write(root: Path, **overrides) -> tuple[Path, Path, dict]:
    images = root / "ImageNetS919"
    categories = root / "data" / "categories" / "ImageNetS_categories_im919.txt"
    summary = demo_dataset.write_demo_dataset(images, categories, **{**SMALL, **overrides})
    return images, categories, summary


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _write(tmp_path_factory.mktemp("demo"))


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _files(images: Path) -> dict[str, bytes]:
    return {str(path.relative_to(images)): path.read_bytes() for path in sorted(images.rglob("*")) if path.is_file()}


# ---------------------------------------------------------------- segmentation encoding


def test_segmentation_encoding_roundtrips_through_png():
    labels = np.array([[0, 1, 255], [256, 919, demo_dataset.IGNORE_ID]])
    rgb = demo_dataset.encode_segmentation(labels)
    assert rgb[1, 2].tolist() == [232, 3, 0]  # 1000 = 3 * 256 + 232
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG")
    decoded = demo_dataset.decode_segmentation(np.asarray(Image.open(buffer)))
    np.testing.assert_array_equal(decoded, labels)


def test_segmentation_files_label_the_drawn_objects(small):
    images, categories, _ = small
    seg_id = {wnid: line + 1 for line, wnid in enumerate(_lines(categories))}
    plan = demo_dataset.plan_dataset(**SMALL)
    validation = [image for image in plan.images if image.split == "validation"]
    assert validation
    for image in validation:
        wnid = plan.classes[image.class_index].wnid
        png = Image.open(images / "validation-segmentation" / wnid / f"{image.stem}.png")
        assert png.mode == "RGB"
        rgb = np.asarray(png)
        assert (rgb[..., 2] == 0).all()
        decoded = demo_dataset.decode_segmentation(rgb)
        assert png.size == Image.open(images / "validation" / wnid / f"{image.stem}.JPEG").size

        sample = demo_dataset.render_sample(plan, image)
        np.testing.assert_array_equal(decoded, sample.segmentation)
        # Where the object was painted (boundaries aside) the id is the category-file id.
        inside = sample.object_mask & (decoded != demo_dataset.IGNORE_ID)
        assert inside.sum() > 0.05 * decoded.size
        ys, xs = np.nonzero(inside)
        for k in np.linspace(0, len(ys) - 1, 5).astype(int):
            assert decoded[ys[k], xs[k]] == seg_id[wnid]
        # Away from every object it is background.
        assert (decoded == 0).any()
        painted = decoded != 0
        assert not (sample.object_mask & ~painted).any()
        allowed = {0, demo_dataset.IGNORE_ID, seg_id[wnid]}
        if image.distractor_class >= 0:
            allowed.add(image.distractor_class + 1)
        assert set(np.unique(decoded).tolist()) <= allowed


def test_boundaries_and_distractors_occur_in_default_plan():
    plan = demo_dataset.plan_dataset(images_per_class={"train": 2, "validation": 8, "test": 1})
    validation = [image for image in plan.images if image.split == "validation"]
    with_distractor = [image for image in validation if image.distractor_class >= 0]
    assert 0.05 < len(with_distractor) / len(validation) < 0.3
    sample = demo_dataset.render_sample(plan, with_distractor[0])
    assert (sample.segmentation == with_distractor[0].distractor_class + 1).any()
    ignored = [
        (demo_dataset.render_sample(plan, image).segmentation == demo_dataset.IGNORE_ID).any()
        for image in validation[:20]
    ]
    assert 0 < sum(ignored) < 20


# ---------------------------------------------------------------- class lists


def test_category_and_mapping_files(small):
    images, categories, summary = small
    annotated = _lines(categories)
    mapping = [line.split(" ", 1) for line in _lines(images / "LOC_synset_mapping.txt")]
    mapping_wnids = [wnid for wnid, _ in mapping]

    assert len(annotated) == SMALL["num_classes"]
    assert annotated == sorted(annotated)
    assert mapping_wnids == sorted(mapping_wnids)
    assert len(set(mapping_wnids)) == SMALL["num_classes"] + SMALL["num_unannotated_classes"]
    assert all(re.fullmatch(r"n\d{8}", wnid) for wnid in mapping_wnids)
    unannotated = sorted(set(mapping_wnids) - set(annotated))
    assert unannotated == sorted(summary["unannotated_classes"])
    assert set(annotated) <= set(mapping_wnids)
    # Interleaved: some annotated class has index != segmentation id - 1.
    assert any(mapping_wnids.index(wnid) != line for line, wnid in enumerate(annotated))
    # Descriptions are readable and distinct.
    descriptions = [description for _, description in mapping]
    assert len(set(descriptions)) == len(descriptions)
    assert all(re.fullmatch(r"[a-z ]+, [a-z ]+", d) for d in descriptions)
    # Unannotated classes have no folders anywhere.
    for wnid in unannotated:
        assert not list(images.rglob(f"*{wnid}*"))


def test_default_plan_interleaves_unannotated_classes():
    plan = demo_dataset.plan_dataset()
    order = [spec.wnid for spec in plan.mapping]
    assert len(order) == 34
    positions = sorted(order.index(spec.wnid) for spec in plan.unannotated)
    assert positions[0] < len(order) - 2  # not all at the end
    assert sum(1 for i, spec in enumerate(plan.classes) if order.index(spec.wnid) != i) > 0


# ---------------------------------------------------------------- files and counts


def test_split_counts_names_and_sizes(small):
    images, categories, summary = small
    annotated = _lines(categories)
    per_class = SMALL["images_per_class"]
    short = set(summary["short_validation_classes"])
    assert len(short) == SMALL["short_validation_classes"]

    for wnid in annotated:
        train = sorted((images / "train" / wnid).iterdir())
        assert len(train) == per_class["train"]
        assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", path.name) for path in train)
        validation = sorted((images / "validation" / wnid).iterdir())
        expected = demo_dataset.SHORT_VALIDATION_COUNT if wnid in short else per_class["validation"]
        assert len(validation) == expected
        masks = sorted((images / "validation-segmentation" / wnid).iterdir())
        assert [p.stem for p in masks] == [p.stem for p in validation]
        assert len(list((images / "test" / wnid).iterdir())) == per_class["test"]

    held_out = {split: [p.name for p in (images / split).rglob("*.JPEG")] for split in ("validation", "test")}
    names = held_out["validation"] + held_out["test"]
    assert all(re.fullmatch(r"ILSVRC2012_val_\d{8}\.JPEG", name) for name in names)
    assert len(set(names)) == len(names)  # validation and test are disjoint
    # Numbers are shuffled, not handed out in class order.
    numbers_in_class_order = [
        int(p.stem[-8:]) for wnid in annotated for p in sorted((images / "test" / wnid).iterdir())
    ]
    assert numbers_in_class_order != sorted(numbers_in_class_order)

    expected_counts = {
        "train": len(annotated) * per_class["train"],
        "validation": sum(
            demo_dataset.SHORT_VALIDATION_COUNT if w in short else per_class["validation"] for w in annotated
        ),
        "test": len(annotated) * per_class["test"],
    }
    assert summary["counts"] == expected_counts

    sizes = []
    for path in sorted(images.rglob("*.JPEG")):
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.format == "JPEG"
            sizes.append(image.size)
    low, high = SMALL["image_size"]
    assert all(low <= side <= high for size in sizes for side in size)
    assert len(set(sizes)) > 10
    assert any(width != height for width, height in sizes)


def test_default_plan_counts():
    plan = demo_dataset.plan_dataset()
    counts = {split: sum(image.split == split for image in plan.images) for split in ("train", "validation", "test")}
    assert counts == {"train": 32 * 120, "validation": 31 * 8 + 3, "test": 32 * 12}


def test_rewrite_replaces_output_and_cleans_stale_partial(tmp_path):
    images = tmp_path / "ImageNetS919"
    stale = tmp_path / ".ImageNetS919.partial"
    (stale / "train" / "n00000000").mkdir(parents=True)
    (images / "leftover").mkdir(parents=True)
    _write(
        tmp_path,
        num_classes=2,
        num_unannotated_classes=0,
        short_validation_classes=0,
        images_per_class={"train": 1, "validation": 1, "test": 1},
    )
    assert not stale.exists()
    assert not (images / "leftover").exists()
    assert sorted(p.name for p in images.iterdir()) == [
        "LOC_synset_mapping.txt",
        "test",
        "train",
        "validation",
        "validation-segmentation",
    ]


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes(tmp_path, small):
    images, categories, _ = small
    again_images, again_categories, _ = _write(tmp_path)
    assert _files(images) == _files(again_images)
    assert categories.read_bytes() == again_categories.read_bytes()


def test_different_seed_gives_different_files(tmp_path, small):
    images, categories, _ = small
    other_images, other_categories, _ = _write(tmp_path, seed=SMALL["seed"] + 1)
    assert categories.read_bytes() != other_categories.read_bytes()
    first = sorted(_files(images).values())
    second = sorted(_files(other_images).values())
    assert not set(first) & set(second)


# ---------------------------------------------------------------- learnability


def _features(pixels: np.ndarray) -> np.ndarray:
    """Coarse layout (8x8 thumbnail) plus a 4x4x4 colour histogram."""
    thumbnail = np.asarray(Image.fromarray(pixels).resize((8, 8), Image.BILINEAR), np.float32)
    bins = (pixels // 64).reshape(-1, 3).astype(np.int64)
    histogram = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64)
    return np.concatenate([thumbnail.ravel() / 255.0, 8 * histogram / len(bins)])


def _ridge_accuracy(plan, draw_objects: bool) -> float:
    """Ridge regression onto one-hot labels: train split -> validation accuracy."""

    def dataset(split):
        rows = [image for image in plan.images if image.split == split]
        x = np.stack(
            [_features(demo_dataset.render_sample(plan, image, draw_objects=draw_objects).image) for image in rows]
        )
        return x, np.array([image.class_index for image in rows])

    x_train, y_train = dataset("train")
    x_val, y_val = dataset("validation")
    mean, scale = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_val = (x_train - mean) / scale, (x_val - mean) / scale
    x_train = np.hstack([x_train, np.ones((len(x_train), 1))])
    x_val = np.hstack([x_val, np.ones((len(x_val), 1))])
    targets = np.eye(len(plan.classes))[y_train]
    weights = np.linalg.solve(x_train.T @ x_train + 10.0 * np.eye(x_train.shape[1]), x_train.T @ targets)
    return float(((x_val @ weights).argmax(1) == y_val).mean())


LEARN = dict(
    num_classes=8,
    num_unannotated_classes=1,
    images_per_class={"train": 40, "validation": 15, "test": 1},
    short_validation_classes=0,
    image_size=(40, 64),
    seed=11,
)


def test_objects_are_learnable():
    chance = 1 / LEARN["num_classes"]
    plan = demo_dataset.plan_dataset(**LEARN, context_correlation=0.7)
    assert _ridge_accuracy(plan, draw_objects=True) > 4 * chance


def test_background_carries_partial_class_evidence():
    chance = 1 / LEARN["num_classes"]
    correlated = demo_dataset.plan_dataset(**LEARN, context_correlation=0.7)
    background_accuracy = _ridge_accuracy(correlated, draw_objects=False)
    assert 2 * chance < background_accuracy < 0.9
    uncorrelated = demo_dataset.plan_dataset(**LEARN, context_correlation=0.0)
    assert _ridge_accuracy(uncorrelated, draw_objects=False) < 2 * chance


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"image_size": (8, 32)}, "image_size"),
        ({"image_size": (64, 32)}, "image_size"),
        ({"image_size": 64}, "image_size"),
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_unannotated_classes": -1}, "num_unannotated_classes"),
        ({"images_per_class": {"train": 4, "validation": 5}}, "images_per_class"),
        ({"images_per_class": {"train": 0, "validation": 5, "test": 3}}, "images_per_class.train"),
        ({"short_validation_classes": 7}, "short_validation_classes"),
        ({"context_correlation": 1.5}, "context_correlation"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_arguments_name_the_parameter(tmp_path, overrides, named):
    with pytest.raises(InputError, match=re.escape(named)):
        _write(tmp_path, **overrides)
    assert not (tmp_path / "ImageNetS919").exists()


def test_spec_entry_accepts_config_values_and_rejects_unknown_keys(tmp_path):
    spec = {
        "num_classes": 2,
        "num_unannotated_classes": 1,
        "images_per_class": {"train": 1, "validation": 2, "test": 1},
        "short_validation_classes": 1,
        "image_size": [20, 24],  # YAML gives lists
        "context_correlation": 0.5,
    }
    summary = demo_dataset.write_from_spec(tmp_path / "ImageNetS919", tmp_path / "categories.txt", spec, seed=1)
    assert summary["counts"] == {"train": 2, "validation": 3, "test": 2}
    with pytest.raises(InputError, match="num_clases"):
        demo_dataset.write_from_spec(tmp_path / "ImageNetS919", tmp_path / "categories.txt", {"num_clases": 3}, seed=1)
