"""The paper's datasets from fake sources: ImageNet-S919 from a fake ImageNet-val tree or tar and
a fake annotation zip served on 127.0.0.1; CIFAR-100 from fake pickle batches; stimulus CSVs."""

import hashlib
import io
import pickle
import tarfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from class_embedding.data import cifar, downloads, imagenet_s, imagenet_s_preparation
from class_embedding.errors import InputError

# Three classes; n00000003 has only 2 validation images. Segmentation id of a wnid = its rank.
SPLITS = {
    "validation": {"n00000001": [1, 4, 7], "n00000002": [2, 5, 8], "n00000003": [3, 6]},
    "test": {"n00000001": [10, 13], "n00000002": [11], "n00000003": [12, 14]},
}
WNIDS = ["n00000000", "n00000001", "n00000002", "n00000003"]  # n00000000: in the mapping only
# Images that ImageNet files under another class than ImageNet-S (the src folder of a mapping
# line), one from a wnid outside the categories.
IMAGENET_CLASS = {8: "n00000000", 12: "n00000001"}


def val_name(number: int) -> str:
    return f"ILSVRC2012_val_{number:08d}.JPEG"


def colour(number: int) -> tuple[int, int, int]:
    return (number * 17 % 256, number * 5 % 256, 255 - number)


def seg_png(wnid: str, number: int) -> bytes:
    """A 6×8 segmentation: the class (id = rank of the wnid) in the left half, rest background."""
    ids = np.zeros((6, 8), int)
    ids[:, :4] = WNIDS.index(wnid)
    ids[0, 7] = 1000  # ignore label
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def make_sources(root: Path) -> dict:
    """A flat fake ImageNet-val directory (plus one unused image), its tar archive, and the
    ImageNet-S downloads (segmentation zip, validation names list, mapping files, categories) in
    a served folder, in the upstream formats."""
    val = root / "imagenet_val"
    val.mkdir(parents=True)
    numbers = [n for split in SPLITS.values() for ns in split.values() for n in ns] + [99]
    for n in numbers:
        Image.new("RGB", (12, 10), colour(n)).save(val / val_name(n), quality=100)
    with tarfile.open(root / "ILSVRC2012_img_val.tar", "w") as archive:
        for n in sorted(numbers):
            archive.add(val / val_name(n), arcname=val_name(n))
    served = root / "served"
    served.mkdir()
    with zipfile.ZipFile(served / "ImageNetS919.zip", "w") as zipped:
        for wnid, ns in SPLITS["validation"].items():
            for n in ns:
                zipped.writestr(
                    f"ImageNetS919/validation-segmentation/{wnid}/{Path(val_name(n)).stem}.png", seg_png(wnid, n)
                )
    for split, classes in SPLITS.items():
        lines = [
            f"{IMAGENET_CLASS.get(n, wnid)}/{val_name(n)} {wnid}/{val_name(n)}"
            for wnid, ns in classes.items()
            for n in ns
        ]
        (served / f"ImageNetS_im919_mapping_{split}.txt").write_text("\n".join(lines))  # no final newline, as upstream
    names = [
        f"{wnid}/{val_name(n)} {wnid}/{Path(val_name(n)).stem}.png"
        for wnid, ns in SPLITS["validation"].items()
        for n in ns
    ]
    (served / "ImageNetS_im919_validation.txt").write_text("\n".join(names))
    (served / "ImageNetS_categories_im919.txt").write_text("n00000003\nn00000001\nn00000002\n")  # unsorted
    mapping = root / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} category {w[-1]}, alias\n" for w in WNIDS))
    return {"val": val, "tar": root / "ILSVRC2012_img_val.tar", "served": served, "mapping": mapping}


@pytest.fixture
def sources(tmp_path):
    return make_sources(tmp_path / "sources")


@pytest.fixture
def served(sources):
    handler = partial(SimpleHTTPRequestHandler, directory=str(sources["served"]))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def fetch_annotations(base_url: str, served_dir: Path, dest: Path) -> dict:
    files = {
        "segmentation": "ImageNetS919.zip",
        "validation_names": "ImageNetS_im919_validation.txt",
        "validation_mapping": "ImageNetS_im919_mapping_validation.txt",
        "test_mapping": "ImageNetS_im919_mapping_test.txt",
        "categories": "ImageNetS_categories_im919.txt",
    }
    paths = {}
    for key, name in files.items():
        md5 = hashlib.md5((served_dir / name).read_bytes()).hexdigest()
        paths[key] = dest / key
        downloads.download(f"{base_url}/{name}", paths[key], f"md5:{md5}")
    return paths


def prepare(sources, downloaded, out: Path, source="val", **kwargs):
    return imagenet_s_preparation.prepare_imagenet_s(
        imagenet_val=sources[source],
        segmentation_zip=downloaded["segmentation"],
        split_mappings={"validation": downloaded["validation_mapping"], "test": downloaded["test_mapping"]},
        validation_names=downloaded["validation_names"],
        categories=downloaded["categories"],
        images_out=out / "ImageNetS919",
        categories_out=out / "data" / "categories" / "ImageNetS_categories_im919.txt",
        synset_mapping=kwargs.pop("synset_mapping", sources["mapping"]),
        **kwargs,
    )


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_prepare_from_served_annotations_and_a_directory(sources, served, tmp_path):
    downloaded = fetch_annotations(served, sources["served"], tmp_path / "downloads")
    out = tmp_path / "prepared"
    counts = prepare(sources, downloaded, out)
    assert counts == {"validation": 8, "test": 5, "segmentations": 8}
    images = out / "ImageNetS919"
    for split, classes in SPLITS.items():
        for wnid, ns in classes.items():
            assert sorted(p.name for p in (images / split / wnid).iterdir()) == [val_name(n) for n in ns]
    # The image is the source file, byte for byte (hardlinked or copied).
    placed = images / "validation" / "n00000002" / val_name(5)
    assert placed.read_bytes() == (sources["val"] / val_name(5)).read_bytes()
    # Under its ImageNet-S class, not ImageNet's (the mapping's src folder).
    assert (images / "test" / "n00000003" / val_name(12)).read_bytes() == (sources["val"] / val_name(12)).read_bytes()
    assert not (images / "test" / "n00000001" / val_name(12)).exists()
    assert not (images / "validation" / "n00000000").exists()
    assert not list(images.rglob(val_name(99))), "images outside ImageNet-S are not copied"

    # Downstream: stimuli (short class skipped) and token labels from the unpacked segmentations.
    stimuli = imagenet_s.select_stimuli(images / "validation", images / "LOC_synset_mapping.txt", 3)
    assert stimuli.column("wnid").to_pylist() == ["n00000001"] * 3 + ["n00000002"] * 3
    assert stimuli.column("class_index").to_pylist() == [1] * 3 + [2] * 3
    categories = out / "data" / "categories" / "ImageNetS_categories_im919.txt"
    labels = imagenet_s.token_label_table(stimuli, out, categories, 2).to_pydict()
    # Class in the left half of every image: tokens 0 and 2 of the 2×2 grid.
    assert labels["label"] == ["class", "context", "class", "context"] * 6


def test_prepare_from_the_tar_archive_gives_the_same_layout(sources, served, tmp_path):
    downloaded = fetch_annotations(served, sources["served"], tmp_path / "downloads")
    prepare(sources, downloaded, tmp_path / "from_dir", link="copy")
    prepare(sources, downloaded, tmp_path / "from_tar", source="tar")
    assert tree(tmp_path / "from_dir") == tree(tmp_path / "from_tar")


def test_default_mapping_is_imagenet_1k_from_timm(tmp_path):
    path = tmp_path / "LOC_synset_mapping.txt"
    imagenet_s_preparation.write_synset_mapping(path)
    wnids, categories = imagenet_s.read_synset_mapping(path)
    assert len(wnids) == 1000 and wnids == sorted(wnids)
    assert (wnids[0], categories[0]) == ("n01440764", "tench, Tinca tinca")
    assert wnids[162] == "n02088364" and categories[162] == "beagle"  # the tutorial's class 162


def assert_nothing_written(out: Path):
    assert not (out / "ImageNetS919").exists()
    assert not (out / "data").exists()
    assert not [p for p in out.rglob("*") if "partial" in p.name] if out.exists() else True


def test_bad_inputs_name_the_item_and_write_nothing(sources, served, tmp_path):
    downloaded = fetch_annotations(served, sources["served"], tmp_path / "downloads")
    out = tmp_path / "prepared"
    with pytest.raises(InputError, match="ImageNet validation images not found at .*nowhere"):
        prepare({**sources, "val": tmp_path / "nowhere"}, downloaded, out)
    assert_nothing_written(out)

    (sources["val"] / val_name(7)).unlink()
    with pytest.raises(InputError, match=rf"1 ImageNet-S images are missing .*{val_name(7)}"):
        prepare(sources, downloaded, out)
    assert_nothing_written(out)

    short_mapping = tmp_path / "mapping.txt"
    short_mapping.write_text("n00000001 one\nn00000002 two\n")
    with pytest.raises(InputError, match="wnid n00000003 .* not in the class mapping"):
        prepare(sources, downloaded, out, synset_mapping=short_mapping)
    assert_nothing_written(out)

    # The names list given where a mapping belongs: its second field is a .png.
    swapped = {**downloaded, "test_mapping": downloaded["validation_names"]}
    with pytest.raises(
        InputError,
        match=r"validation_names:1: 'n00000001/ILSVRC2012_val_00000001.png' is not an ImageNet-S test image .* the test mapping file",
    ):
        prepare(sources, swapped, out)
    assert_nothing_written(out)

    lines = downloaded["validation_mapping"].read_text().splitlines()
    stale = tmp_path / "stale_mapping.txt"
    stale.write_text("\n".join(lines[:-1]))
    with pytest.raises(
        InputError,
        match=r"name different images \(1 only in the list, e\.g\. \['n00000003/ILSVRC2012_val_00000006\.JPEG'\]; 0 only in the mapping",
    ):
        prepare(sources, {**downloaded, "validation_mapping": stale}, out)
    assert_nothing_written(out)

    stale.write_text("\n".join([*lines, f"n00000000/{val_name(99)} n00000000/{val_name(99)}"]))
    with pytest.raises(
        InputError,
        match=rf"class n00000000 of n00000000/{val_name(99)} in the validation mapping .* is not among the categories",
    ):
        prepare(sources, {**downloaded, "validation_mapping": stale}, out)
    assert_nothing_written(out)


def write_stim_csv(path: Path, rows):
    path.write_text("imagenet_id,index,cat,img_name,img_index\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_authors_stimulus_csv_keeps_its_order_and_is_checked(sources, served, tmp_path):
    downloaded = fetch_annotations(served, sources["served"], tmp_path / "downloads")
    out = tmp_path / "prepared"
    prepare(sources, downloaded, out)
    images = out / "ImageNetS919"
    mapping = images / "LOC_synset_mapping.txt"
    csv_file = tmp_path / "validation_stim_info.csv"
    rows = [
        ("n00000002", 2, "two", val_name(8), 0),
        ("n00000002", 2, "two", val_name(2), 1),
        ("n00000001", 1, "one", val_name(7), 0),
        ("n00000001", 1, "one", val_name(1), 1),
    ]
    write_stim_csv(csv_file, rows)
    table = imagenet_s.stimuli_from_csv(csv_file, images / "validation", mapping, 2)
    assert table.column("file").to_pylist() == [f"validation/{r[0]}/{r[3]}" for r in rows]
    assert table.column("image").to_pylist() == [0, 1, 2, 3]
    assert table.column("category").to_pylist()[0] == "category 2, alias"

    write_stim_csv(csv_file, rows[:3])
    with pytest.raises(InputError, match="class n00000001 has 1 rows"):
        imagenet_s.stimuli_from_csv(csv_file, images / "validation", mapping, 2)
    write_stim_csv(csv_file, [("n00000009", 9, "x", val_name(1), 0)])
    with pytest.raises(InputError, match="wnid n00000009 is not in the class mapping"):
        imagenet_s.stimuli_from_csv(csv_file, images / "validation", mapping, 1)
    write_stim_csv(csv_file, [("n00000001", 2, "x", val_name(1), 0)])
    with pytest.raises(InputError, match="class index 2 of n00000001"):
        imagenet_s.stimuli_from_csv(csv_file, images / "validation", mapping, 1)


# ---------------------------------------------------------------------------------------------
# CIFAR-100

CIFAR_LABELS = [2, 0, 2, 1, 0, 2, 1, 0, 1, 2]  # stored test order; first appearance: 2, 0, 1


def write_cifar(root: Path) -> np.ndarray:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (len(CIFAR_LABELS), 3072), dtype=np.uint8)
    test = {
        "filenames": [f"img_{i}.png" for i in range(len(CIFAR_LABELS))],
        "fine_labels": CIFAR_LABELS,
        "coarse_labels": [0] * len(CIFAR_LABELS),
        "data": data,
    }
    with open(folder / "test", "wb") as handle:
        pickle.dump(test, handle)
    with open(folder / "train", "wb") as handle:
        pickle.dump({**test, "filenames": test["filenames"]}, handle)
    with open(folder / "meta", "wb") as handle:
        pickle.dump({"fine_label_names": ["apple", "bear", "cloud"], "coarse_label_names": ["x"]}, handle)
    return data


def test_cifar_stimuli_first_images_of_each_label_in_stored_order(tmp_path):
    data = write_cifar(tmp_path / "root")
    out = tmp_path / "prepared"
    assert cifar.prepare_cifar100(tmp_path / "root", out / "ImageNetS919", out / "cifar-100-python") == 10
    table = cifar.select_stimuli(out / "ImageNetS919", 2).to_pydict()
    assert table["wnid"] == ["2", "2", "0", "0", "1", "1"]
    assert table["class_index"] == [2, 2, 0, 0, 1, 1]
    assert table["category"] == ["cloud", "cloud", "apple", "apple", "bear", "bear"]
    assert table["file"] == [
        "validation/2/00000.png",
        "validation/2/00002.png",
        "validation/0/00001.png",
        "validation/0/00004.png",
        "validation/1/00003.png",
        "validation/1/00006.png",
    ]
    assert table["img_index"] == [0, 1] * 3
    # Lossless: pixel (row 3, column 5) of test image 4 is data[4] in CHW order.
    pixels = np.asarray(Image.open(out / "ImageNetS919" / table["file"][3]))
    assert pixels.shape == (32, 32, 3)
    assert pixels[3, 5].tolist() == [data[4][c * 1024 + 3 * 32 + 5] for c in range(3)]
    assert (out / "cifar-100-python" / "train").is_file()
    with pytest.raises(InputError, match=r"labels \[0, 1\] have fewer than 4"):
        cifar.select_stimuli(out / "ImageNetS919", 4)


def test_cifar_from_the_archive_equals_the_folder(tmp_path):
    write_cifar(tmp_path / "root")
    with tarfile.open(tmp_path / "cifar-100-python.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "root" / "cifar-100-python", arcname="cifar-100-python")
    cifar.prepare_cifar100(tmp_path / "root", tmp_path / "a" / "images", tmp_path / "a" / "pickles")
    cifar.prepare_cifar100(tmp_path / "cifar-100-python.tar.gz", tmp_path / "b" / "images", tmp_path / "b" / "pickles")
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    with pytest.raises(InputError, match="CIFAR-100 not found at"):
        cifar.prepare_cifar100(tmp_path / "a", tmp_path / "c" / "images", tmp_path / "c" / "pickles")
    assert not (tmp_path / "c" / "images").exists()
