"""Your own labelled image folder, and timm pretrained tags other than the paper's (offline)."""

import re
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from PIL import Image

from class_embedding.data import folder_masks, image_folder
from class_embedding.errors import InputError
from class_embedding.models import building

REPO = Path(__file__).resolve().parents[1]


def write_folder(root: Path, labels, n_images=2, size=(12, 8)):
    for label in labels:
        (root / label).mkdir(parents=True)
        for i in range(n_images):
            Image.new("RGB", size, (i * 40, 0, 0)).save(root / label / f"im{i}.png")
    (root / labels[0] / "notes.txt").write_text("not an image")


@pytest.mark.parametrize(
    ("labels", "folders", "expected"),
    [
        ("wnid", ["n01443537", "n01440764"], [0, 0, 1, 1]),
        ("index", ["7", "3"], [3, 3, 7, 7]),
        ("class_name", ["Goldfish", "great_white_shark"], [1, 1, 2, 2]),
        ("class_name", ["white shark", "tench"], [0, 0, 2, 2]),  # a synonym of class 2, folders sorted
    ],
)
def test_stimuli_of_each_label_kind(tmp_path, labels, folders, expected):
    write_folder(tmp_path, folders)
    stimuli = image_folder.select_stimuli(tmp_path, labels, 2, num_classes=1000)
    assert stimuli.column("class_index").to_pylist() == expected
    assert stimuli.column("image").to_pylist() == [0, 1, 2, 3]
    assert stimuli.column("img_index").to_pylist() == [0, 1, 0, 1]
    first = sorted(folders)[0]
    assert stimuli.column("file").to_pylist()[:2] == [f"{first}/im0.png", f"{first}/im1.png"]
    assert stimuli.column("wnid").to_pylist()[0] == first
    if labels == "wnid":
        assert stimuli.column("category").to_pylist()[0] == "tench, Tinca tinca"


def test_given_class_names_and_errors(tmp_path):
    write_folder(tmp_path / "a", ["cat", "dog"])
    stimuli = image_folder.select_stimuli(tmp_path / "a", "class_name", 2, 3, class_names=["dog", "cat", "bird"])
    assert stimuli.column("class_index").to_pylist() == [1, 1, 0, 0]
    with pytest.raises(InputError, match="'cat' names no class"):
        image_folder.select_stimuli(tmp_path / "a", "class_name", 2, 3, class_names=["dog", "bird"])
    with pytest.raises(InputError, match="outside the model's 1 classes"):
        image_folder.select_stimuli(tmp_path / "a", "class_name", 2, 1, class_names=["dog", "cat"])
    with pytest.raises(InputError, match="no class folder .* has 3 images"):
        image_folder.select_stimuli(tmp_path / "a", "class_name", 3, 3, class_names=["dog", "cat"])
    write_folder(tmp_path / "b", ["tiger"])
    with pytest.raises(InputError, match="'tiger' is not a class index"):
        image_folder.select_stimuli(tmp_path / "b", "index", 2, 10)
    with pytest.raises(InputError, match="not found"):
        image_folder.select_stimuli(tmp_path / "missing", "index", 2, 10)


def test_dropped_folders_are_logged_as_warnings(tmp_path, caplog):
    write_folder(tmp_path, ["1", "2", "3"])
    (tmp_path / "4").mkdir()
    with caplog.at_level("WARNING", logger=image_folder.__name__):
        stimuli = image_folder.select_stimuli(tmp_path, "index", 2, 10, min_class_share=0.75)
    assert stimuli.column("wnid").unique().to_pylist() == ["1", "2", "3"]
    assert [r.getMessage() for r in caplog.records] == [
        f"1 of 4 class folders of {tmp_path} dropped, fewer than stimuli.images_per_class = 2 images: '4' (0).",
        f"1 file in the class folders of {tmp_path} not read as images (by their suffix: .txt (1)); images "
        f"are {', '.join(image_folder.IMAGE_SUFFIXES)}: convert others (e.g. .heic) to one of these.",
    ]
    with pytest.raises(InputError, match="only 3 of the 4 class folders"):
        image_folder.select_stimuli(tmp_path, "index", 2, 10, min_class_share=0.8)


def test_token_labels_from_masks(tmp_path):
    write_folder(tmp_path / "images", ["3"], n_images=1, size=(4, 4))
    stimuli = image_folder.select_stimuli(tmp_path / "images", "index", 1, 10)
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, 2:] = 255  # the top-right quarter is the class
    mask[3, 0] = 1  # one pixel of the bottom-left cell
    (tmp_path / "masks" / "3").mkdir(parents=True)
    Image.fromarray(mask).save(tmp_path / "masks" / "3" / "im0.png")
    table = folder_masks.token_label_table(stimuli, tmp_path / "masks", 2).to_pydict()
    assert table["token"] == [0, 1, 2, 3]
    assert [str(label) for label in table["label"]] == ["context", "class", "context", "context"]
    np.testing.assert_allclose(table["class_fraction"], [0, 1, 0.25, 0])
    with pytest.raises(InputError, match="mask .* not found"):
        folder_masks.token_label_table(stimuli, tmp_path / "elsewhere", 2)


def test_schema_accepts_every_timm_pretrained_vit_tag():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    weights = schema["properties"]["models"]["additionalProperties"]["properties"]["weights"]
    pattern = re.compile(weights["properties"]["tag"]["pattern"])
    tags = [tag for tag in timm.list_pretrained() if tag.split(".")[0].startswith(("vit_", "deit", "eva", "beit"))]
    assert tags and all(pattern.match(tag) for tag in tags)


TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2}


@pytest.mark.parametrize(
    ("tag", "extra"),
    [
        ("vit_tiny_patch16_224.augreg_in21k", {}),  # 21843 classes
        ("deit_tiny_distilled_patch16_224.fb_in1k", {"distillation_token": True}),
        ("vit_betwixt_patch16_reg4_gap_256.sbb_in1k", {"register_tokens": 4, "class_token": False}),
    ],
)
def test_any_timm_tag_loads_offline_with_its_head(tmp_path, tag, extra):
    arch = tag.split(".")[0]
    num_classes = timm.models.get_pretrained_cfg(tag).num_classes
    spec = {
        "arch": arch,
        "kwargs": {**TINY, "num_classes": num_classes},
        "num_blocks": 1,
        "token_grid": 4,
        "class_token": True,
        "num_classes": num_classes,
        "display_name": "Tiny",
        "dataset": "mine",
        "weights": {"source": "timm", "tag": tag},
        "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
        **extra,
    }
    torch.manual_seed(0)
    source = timm.create_model(arch, pretrained=False, **spec["kwargs"])
    torch.save(source.state_dict(), tmp_path / "weights.bin")
    model = building.timm_pretrained(spec, "m", tag, cache_dir=tmp_path / "cache", file=tmp_path / "weights.bin")
    assert model.num_classes == num_classes
    assert model.pretrained_cfg["tag"] == tag.split(".")[1]
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    wrong = {**spec, "kwargs": {**spec["kwargs"], "num_classes": 5}, "num_classes": 5}
    with pytest.raises(InputError, match=f"have {num_classes} classes, the config 5"):
        building.timm_pretrained(wrong, "m", tag, cache_dir=tmp_path / "cache", file=tmp_path / "weights.bin")
