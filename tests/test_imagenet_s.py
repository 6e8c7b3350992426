"""ImageNet-S layout: mapping, segmentation ids, stimulus selection, masks → token labels."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from class_embedding.data import imagenet_s
from class_embedding.errors import InputError


def write_png(path: Path, ids: np.ndarray) -> None:
    rgb = np.zeros((*ids.shape, 3), np.uint8)
    rgb[..., 0] = ids % 256
    rgb[..., 1] = ids // 256
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


def test_decode_segmentation_reads_green_times_256_plus_red(tmp_path):
    ids = np.array([[0, 1, 255], [256, 919, 1000]])
    write_png(tmp_path / "seg.png", ids)
    assert np.array_equal(imagenet_s.decode_segmentation(tmp_path / "seg.png"), ids)


def test_token_labels_take_the_top_left_pixel_of_each_cell():
    # 7×9 mask on a 3×3 grid: cells start at rows 0, 2, 4 and columns 0, 3, 6.
    mask = np.zeros((7, 9), bool)
    mask[0, 0] = True  # cell (0,0)'s top-left pixel
    mask[1, 4] = True  # inside cell (0,1) but not its top-left → context
    mask[4:7, 6:9] = True  # the whole of cell (2,2)
    labels, fractions = imagenet_s.token_labels(mask, 3)
    assert labels.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    # Cell rows: [0,2), [2,4), [4,7); columns: [0,3), [3,6), [6,9).
    assert fractions[0] == pytest.approx(1 / 6)
    assert fractions[1] == pytest.approx(1 / 6)
    assert fractions[8] == pytest.approx(1.0)
    assert fractions[4] == 0


def test_nearest_indices_match_opencv_inter_nearest_rule():
    # OpenCV INTER_NEAREST: source index floor(dst * src/dst), clipped.
    assert imagenet_s.nearest_grid_indices(375, 14).tolist() == [int(np.floor(i * 375 / 14)) for i in range(14)]
    assert imagenet_s.nearest_grid_indices(5, 7).tolist() == [0, 0, 1, 2, 2, 3, 4]


def make_layout(root: Path, counts: dict[str, int], extra_wnids=()):
    images = root / "ImageNetS919"
    wnids = sorted([*counts, *extra_wnids])
    images.mkdir(parents=True)
    (images / "LOC_synset_mapping.txt").write_text("".join(f"{w} category {w[-2:]}, alias\n" for w in wnids))
    for wnid, count in counts.items():
        folder = images / "validation" / wnid
        folder.mkdir(parents=True)
        for i in reversed(range(count)):  # creation order differs from sorted order
            Image.new("RGB", (8, 8)).save(folder / f"ILSVRC2012_val_{i * 7 % 100:08d}.JPEG")
        (folder / "notes.txt").write_text("not an image")
    return images


def test_stimuli_skip_excluded_and_short_classes_in_sorted_order(tmp_path):
    images = make_layout(
        tmp_path,
        {"n00000003": 6, "n00000001": 5, "n00000002": 2, "n00000004": 5},
        extra_wnids=["n00000000"],
    )
    table = imagenet_s.select_stimuli(
        images / "validation", images / "LOC_synset_mapping.txt", 5, exclude_wnids=["n00000004"]
    )
    rows = table.to_pylist()
    assert [r["wnid"] for r in rows] == ["n00000001"] * 5 + ["n00000003"] * 5
    # Class index = line of the mapping, which also lists an unannotated wnid first.
    assert {r["wnid"]: r["class_index"] for r in rows} == {"n00000001": 1, "n00000003": 3}
    assert [r["img_index"] for r in rows] == [0, 1, 2, 3, 4] * 2
    files = [r["file"] for r in rows[5:]]
    assert files == sorted(files) and len(set(files)) == 5
    assert files[0] == "validation/n00000003/ILSVRC2012_val_00000000.JPEG"
    assert [r["image"] for r in rows] == list(range(10))
    assert rows[0]["category"] == "category 01, alias"


def test_stimuli_errors_name_the_problem(tmp_path):
    with pytest.raises(InputError, match="not found"):
        imagenet_s.select_stimuli(tmp_path / "missing", tmp_path / "map.txt", 5)
    images = make_layout(tmp_path, {"n00000001": 2})
    with pytest.raises(InputError, match="images_per_class"):
        imagenet_s.select_stimuli(images / "validation", images / "LOC_synset_mapping.txt", 5)
    (images / "LOC_synset_mapping.txt").write_text("n00000009 other\n")
    with pytest.raises(InputError, match="n00000001"):
        imagenet_s.select_stimuli(images / "validation", images / "LOC_synset_mapping.txt", 1)


def test_segmentation_ids_are_ranks_of_sorted_wnids(tmp_path):
    categories = tmp_path / "cats.txt"
    categories.write_text("n00000005\nn00000001\nn00000003\n")  # an unsorted first release
    assert imagenet_s.segmentation_ids(categories) == {"n00000001": 1, "n00000003": 2, "n00000005": 3}


def test_token_label_table_on_hand_made_pngs(tmp_path):
    images = make_layout(tmp_path, {"n00000001": 1, "n00000002": 1})
    categories = tmp_path / "data" / "categories" / "ImageNetS_categories_im919.txt"
    categories.parent.mkdir(parents=True)
    categories.write_text("n00000001\nn00000002\n")
    stimuli = imagenet_s.select_stimuli(images / "validation", images / "LOC_synset_mapping.txt", 1)
    seg = images / "validation-segmentation"
    first = np.zeros((4, 4), int)
    first[:2, :2] = 1  # class 1 (seg id 1) in the top-left quadrant
    first[2:, 2:] = 2  # another class's object: context for this image
    write_png(seg / "n00000001" / "ILSVRC2012_val_00000000.png", first)
    second = np.full((4, 6), 1000)  # ignore label everywhere but one cell
    second[2:, 3:] = 2
    write_png(seg / "n00000002" / "ILSVRC2012_val_00000000.png", second)
    table = imagenet_s.token_label_table(stimuli, tmp_path, categories, 2).to_pydict()
    assert table["image"] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert table["token"] == [0, 1, 2, 3] * 2
    assert table["label"] == ["class", "context", "context", "context", "context", "context", "context", "class"]
    assert table["class_fraction"] == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    (seg / "n00000002" / "ILSVRC2012_val_00000000.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot be decoded"):
        imagenet_s.token_label_table(stimuli, tmp_path, categories, 2)
