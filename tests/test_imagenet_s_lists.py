"""ImageNet-S from the real upstream lists (tests/data/imagenet_s: LUSSeg/ImageNet-S at commit
eaf791791e703ccbfe32c18ab066215a97ae30a5, gzipped): the checksums pinned in config/paper.yaml,
split sizes, labels from the mapping's dst folder, the paper's stimulus and probe selections, and
prepare_imagenet_s on a few real classes."""

import gzip
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from class_embedding.analyses import probes
from class_embedding.data import imagenet_s, imagenet_s_preparation

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data" / "imagenet_s"
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
DOWNLOADS = PAPER["datasets"]["imagenet_s"]["imagenet_s"]["downloads"]
COMMIT = "eaf791791e703ccbfe32c18ab066215a97ae30a5"

# Upstream path (in LUSSeg/ImageNet-S at COMMIT) and sha256 of the uncompressed file; the copies are
# tests/data/imagenet_s/<name>.gz, and config/paper.yaml pins the same url and checksum
# (test_lists_are_the_upstream_files_pinned_in_the_paper_config).
UPSTREAM = {
    "validation_names": (
        "data/names/ImageNetS_im919_validation.txt",
        "76b5e5ca74b4270568d8197a6aa7bf1c658859da84966d9308d11263fda9a83c",
    ),
    "validation_mapping": (
        "data/mapping/ImageNetS_im919_mapping_validation.txt",
        "52de0512c75cd04289f1b5be7fe2aad932a6f6e47288947d63e724985c5904b3",
    ),
    "test_mapping": (
        "data/mapping/ImageNetS_im919_mapping_test.txt",
        "b2e60b72dafe47c71ba3d912d912dce5d4b612aae60ee6dfbdd95d780133dd61",
    ),
    "categories": (
        "data/categories/ImageNetS_categories_im919.txt",
        "b2ee89cf2d5def583dcea806b8cc99def3d9bb7355ae981fc4c986c6d8dec1da",
    ),
}
# Where ImageNet-S skips classes the paper keeps: fewer than 5 validation images.
SHORT_VALIDATION_CLASSES = ["n02113712", "n03933933", "n04525038", "n13133613"]


@pytest.fixture(scope="module")
def lists(tmp_path_factory) -> dict[str, Path]:
    """The four lists, decompressed as rule download leaves them (resources/downloads/<name>/<item>)."""
    folder = tmp_path_factory.mktemp("downloads")
    paths = {}
    for item, (upstream, _) in UPSTREAM.items():
        paths[item] = folder / item
        paths[item].write_bytes(gzip.decompress((DATA / (Path(upstream).name + ".gz")).read_bytes()))
    return paths


def raw_pairs(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


def test_lists_are_the_upstream_files_pinned_in_the_paper_config(lists):
    for item, (upstream, sha256) in UPSTREAM.items():
        assert hashlib.sha256(lists[item].read_bytes()).hexdigest() == sha256, item
        assert DOWNLOADS[item]["checksum"] == f"sha256:{sha256}", item
        assert DOWNLOADS[item]["url"] == f"https://raw.githubusercontent.com/LUSSeg/ImageNet-S/{COMMIT}/{upstream}"
    assert DOWNLOADS["segmentation"]["url"].startswith("https://github.com/LUSSeg/ImageNet-S/releases/download/")


def test_labels_are_the_dst_folders_of_the_mapping(lists):
    categories = [line for line in lists["categories"].read_text().splitlines() if line]
    assert len(categories) == 919
    for split, size, moved in (("validation", 12419, 1652), ("test", 27423, 3571)):
        raw = raw_pairs(lists[f"{split}_mapping"])
        entries = imagenet_s_preparation.read_split_mapping(lists[f"{split}_mapping"], split)
        assert len(entries) == size
        assert sorted({wnid for _, wnid, _ in entries}) == categories
        # Brute force from the raw lines: the label is dst's folder, the source found by src's file name.
        assert entries == [(src.split("/")[1], *dst.split("/")) for src, dst in raw]
        assert sum(src.split("/")[0] != dst.split("/")[0] for src, dst in raw) == moved
    names = imagenet_s_preparation.read_validation_names(lists["validation_names"])
    mapping = raw_pairs(lists["validation_mapping"])
    assert [image for image, _ in names] == [dst for _, dst in mapping]
    assert all(png == image.removesuffix(".JPEG") + ".png" for image, png in names)


@pytest.fixture(scope="module")
def prepared(lists, tmp_path_factory) -> Path:
    """ImageNetS919 built by prepare_imagenet_s from the real lists, with an empty file for every
    image and segmentation (the selections only look at names)."""
    root = tmp_path_factory.mktemp("imagenet_s")
    flat = root / "imagenet_val"
    flat.mkdir()
    for split in imagenet_s_preparation.SPLITS:
        for source_name, _, _ in imagenet_s_preparation.read_split_mapping(lists[f"{split}_mapping"], split):
            (flat / source_name).touch()
    segmentation_zip = root / "segmentation.zip"
    with zipfile.ZipFile(segmentation_zip, "w") as zipped:
        for _, png in imagenet_s_preparation.read_validation_names(lists["validation_names"]):
            zipped.writestr(f"ImageNetS919/validation-segmentation/{png}", b"")
    out = root / "prepared"
    counts = imagenet_s_preparation.prepare_imagenet_s(
        imagenet_val=flat,
        segmentation_zip=segmentation_zip,
        split_mappings={"validation": lists["validation_mapping"], "test": lists["test_mapping"]},
        validation_names=lists["validation_names"],
        categories=lists["categories"],
        images_out=out / "ImageNetS919",
        categories_out=out / "data" / "categories" / "ImageNetS_categories_im919.txt",
        link="symlink",
    )
    assert counts == {"validation": 12419, "test": 27423, "segmentations": 12419}
    return out / "ImageNetS919"


def per_class(table) -> dict[str, int]:
    wnids = table.column("wnid").to_pylist()
    return {wnid: wnids.count(wnid) for wnid in dict.fromkeys(wnids)}


def test_paper_stimuli_are_910_classes_of_5(prepared):
    stimuli = PAPER["stimuli"]
    table = imagenet_s.select_stimuli(
        prepared / "validation",
        prepared / "LOC_synset_mapping.txt",
        stimuli["images_per_class"],
        stimuli["exclude_wnids"],
    )
    counts = per_class(table)
    assert len(counts) == 910 and set(counts.values()) == {5}
    folders = {p.name for p in (prepared / "validation").iterdir()}
    assert len(folders) == 919
    skipped = folders - set(counts) - set(stimuli["exclude_wnids"])
    assert sorted(skipped) == SHORT_VALIDATION_CLASSES


def test_paper_probe_set_is_909_classes_of_10(prepared):
    probing = PAPER["probing"]
    assert len({p.name for p in (prepared / "test").iterdir()}) == 919
    table = probes.select_probe_stimuli(
        prepared / "test",
        prepared / "LOC_synset_mapping.txt",
        probing["images_per_class"],
        PAPER["stimuli"]["exclude_wnids"],
        probing["short_classes"],
    )
    counts = per_class(table)
    assert len(counts) == 909 and set(counts.values()) == {10}


# A few classes where ImageNet-S moved images from another ImageNet class (some from wnids
# outside the 919): 13, 17 and 25 images over both splits.
FEW_CLASSES = ["n03782006", "n04525038", "n07932039"]


def colour(number: int) -> tuple[int, int, int]:
    return (number * 37 % 256, number * 11 % 256, number % 256)


def test_prepare_puts_real_images_under_their_dst_class(lists, tmp_path):
    subset = {}
    for item in ("validation_mapping", "test_mapping", "validation_names"):
        kept = [line for line in lists[item].read_text().splitlines() if line.split()[1].split("/")[0] in FEW_CLASSES]
        subset[item] = tmp_path / item
        subset[item].write_text("\n".join(kept) + "\n")
    flat = tmp_path / "imagenet_val"
    flat.mkdir()
    pairs = {split: raw_pairs(subset[f"{split}_mapping"]) for split in imagenet_s_preparation.SPLITS}
    for number, (src, _) in enumerate(pairs["validation"] + pairs["test"]):
        Image.new("RGB", (4, 3), colour(number)).save(flat / src.split("/")[1])
    Image.new("RGB", (4, 3)).save(flat / "ILSVRC2012_val_00000001.JPEG")  # not in ImageNet-S
    segmentation_zip = tmp_path / "segmentation.zip"
    with zipfile.ZipFile(segmentation_zip, "w") as zipped:
        for _, png in raw_pairs(subset["validation_names"]):
            buffer = io.BytesIO()
            Image.fromarray(np.ones((3, 4, 3), np.uint8)).save(buffer, format="PNG")
            zipped.writestr(f"ImageNetS919/validation-segmentation/{png}", buffer.getvalue())
    out = tmp_path / "prepared"
    counts = imagenet_s_preparation.prepare_imagenet_s(
        imagenet_val=flat,
        segmentation_zip=segmentation_zip,
        split_mappings={"validation": subset["validation_mapping"], "test": subset["test_mapping"]},
        validation_names=subset["validation_names"],
        categories=lists["categories"],
        images_out=out / "ImageNetS919",
        categories_out=out / "data" / "categories" / "ImageNetS_categories_im919.txt",
        link="copy",
    )
    assert counts == {"validation": 19, "test": 36, "segmentations": 19}
    images = out / "ImageNetS919"
    moved = 0
    for split in imagenet_s_preparation.SPLITS:
        assert sorted(p.name for p in (images / split).iterdir()) == FEW_CLASSES
        for src, dst in pairs[split]:
            assert (images / split / dst).read_bytes() == (flat / src.split("/")[1]).read_bytes()
            if src.split("/")[0] != dst.split("/")[0]:
                moved += 1
                assert not (images / split / src).exists()
    assert moved == 20  # lines of these classes whose src folder differs (10 validation, 10 test)
    assert len(list(images.glob("*/*/*.JPEG"))) == 55
