"""Preparing the ImageNetS919 layout (docs/method.md §2.1) from the ImageNet-S annotations and the
ImageNet-1k validation images (a directory or the ILSVRC2012_img_val.tar archive).

Everything is built in a scratch directory beside the outputs and moved into place only when
complete: a missing image, an unknown wnid or a missing segmentation stops the job with the item
named and nothing half-written.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

from ..errors import InputError
from . import imagenet_s

log = logging.getLogger(__name__)

SPLITS = ("validation", "test")
SEGMENTATION_DIR = "validation-segmentation"


def split_path(field: str, path: Path, number: int, suffix: str, what: str, list_name: str) -> tuple[str, str]:
    """(wnid, file name) of a ``<wnid>/<name><suffix>`` field of an ImageNet-S list."""
    wnid, _, name = field.partition("/")
    if not imagenet_s.is_wnid(wnid) or "/" in name or not name.endswith(suffix):
        raise InputError(
            f"{path}:{number}: '{field}' is not {what} '<wnid>/<name>{suffix}': is this file the {list_name} "
            f"of ImageNet-S? Check its url in datasets.<name>.imagenet_s.downloads."
        )
    return wnid, name


def list_fields(path: str | os.PathLike, what: str) -> list[tuple[int, list[str]]]:
    """(line number, fields) of every non-empty line of a two-column ImageNet-S list."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ImageNet-S {what} {path} not found: it is downloaded by rule download.")
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise InputError(f"{path}:{number}: '{line}' has {len(fields)} fields; a line of the {what} has two.")
        lines.append((number, fields))
    if not lines:
        raise InputError(f"{path}: the {what} is empty.")
    return lines


def read_split_mapping(path: str | os.PathLike, split: str) -> list[tuple[str, str, str]]:
    """(ImageNet file name, wnid, file name in ImageNet-S) of every line of a split's mapping file
    (``data/mapping/ImageNetS_im919_mapping_<split>.txt``).

    A line is ``src dst``: ``src`` is the image in ImageNet's own validation class folders, ``dst``
    its place in ``ImageNetS919/<split>``. The label is ``dst``'s folder: ImageNet-S moved some
    images to another class, and ``src``'s folder (ImageNet's label, sometimes a wnid outside the
    919) is not used. ImageNet's validation file names are unique, so the name alone finds the image.
    """
    what = f"{split} mapping file"
    entries = []
    for number, (src, dst) in list_fields(path, what):
        _, source_name = split_path(src, Path(path), number, imagenet_s.IMAGE_SUFFIX, "an ImageNet image", what)
        wnid, name = split_path(dst, Path(path), number, imagenet_s.IMAGE_SUFFIX, f"an ImageNet-S {split} image", what)
        entries.append((source_name, wnid, name))
    return entries


def read_validation_names(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(image, segmentation) paths ``<wnid>/<name>`` of every line of the validation names list
    (``data/names/ImageNetS_im919_validation.txt``)."""
    what = "validation names list"
    pairs = []
    for number, (image, segmentation) in list_fields(path, what):
        split_path(image, Path(path), number, imagenet_s.IMAGE_SUFFIX, "an ImageNet-S validation image", what)
        split_path(segmentation, Path(path), number, ".png", "a segmentation", what)
        pairs.append((image, segmentation))
    return pairs


def write_synset_mapping(path: str | os.PathLike) -> None:
    """LOC_synset_mapping.txt from timm's bundled ImageNet-1k synsets: "<wnid> <description>"
    per line in class-index order (the descriptions are the lemmas, as in Kaggle's file)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    lines = [f"{wnid} {info.index_to_description(i)}" for i, wnid in enumerate(info.label_names())]
    Path(path).write_text("\n".join(lines) + "\n")


class ImageSource:
    """ImageNet validation images by file name, from a directory (any depth) or a tar archive."""

    def __init__(self, location: str | os.PathLike):
        self.location = Path(location)
        if not self.location.exists():
            raise InputError(
                f"ImageNet validation images not found at {self.location}: set datasets.<name>.imagenet_s."
                f"imagenet_val to ILSVRC2012_img_val.tar or a directory of its JPEG files."
            )
        self.is_archive = self.location.is_file()
        if self.is_archive and not tarfile.is_tarfile(self.location):
            raise InputError(f"{self.location} is neither a directory nor a tar archive of ImageNet validation images.")

    def index(self) -> dict[str, Path]:
        """File name → path, for a directory source."""
        return {path.name: path for path in self.location.rglob(f"*{imagenet_s.IMAGE_SUFFIX}")}

    def copy_into(self, wanted: dict[str, list[Path]], link: str) -> list[str]:
        """Put every wanted file name at its destinations; returns the names not found."""
        remaining = dict(wanted)
        if self.is_archive:
            with tarfile.open(self.location) as archive:
                for member in archive:
                    name = Path(member.name).name
                    if not member.isfile() or name not in remaining:
                        continue
                    with archive.extractfile(member) as data:
                        destinations = remaining.pop(name)
                        with open(destinations[0], "wb") as out:
                            shutil.copyfileobj(data, out)
                        for dest in destinations[1:]:
                            shutil.copyfile(destinations[0], dest)
                    if not remaining:
                        break
            return sorted(remaining)
        found = self.index()
        for name in list(remaining):
            if name not in found:
                continue
            for dest in remaining.pop(name):
                place(found[name], dest, link)
        return sorted(remaining)


def place(source: Path, dest: Path, link: str) -> None:
    if link == "symlink":
        dest.symlink_to(source.resolve())
        return
    if link == "hardlink":
        try:
            os.link(source, dest)
            return
        except OSError:
            pass  # another file system: copy
    shutil.copyfile(source, dest)


def extract_segmentations(archive: str | os.PathLike, dest: Path) -> int:
    """Unpack the ``validation-segmentation/<wnid>/<name>.png`` members of the ImageNet-S zip
    (whatever folder they sit in) into ``dest``; returns their number."""
    count = 0
    try:
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.infolist():
                parts = Path(member.filename).parts
                if member.is_dir() or SEGMENTATION_DIR not in parts or not member.filename.endswith(".png"):
                    continue
                relative = Path(*parts[parts.index(SEGMENTATION_DIR) + 1 :])
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as data, open(target, "wb") as out:
                    shutil.copyfileobj(data, out)
                count += 1
    except zipfile.BadZipFile:
        raise InputError(
            f"{archive} is not a zip archive of ImageNet-S segmentations: delete it to download it again."
        ) from None
    if not count:
        raise InputError(
            f"{archive} holds no {SEGMENTATION_DIR}/<wnid>/*.png files: is it the ImageNetS919 annotation zip?"
        )
    return count


def prepare_imagenet_s(
    *,
    imagenet_val: str | os.PathLike,
    segmentation_zip: str | os.PathLike,
    split_mappings: dict[str, str | os.PathLike],
    validation_names: str | os.PathLike,
    categories: str | os.PathLike,
    images_out: str | os.PathLike,
    categories_out: str | os.PathLike,
    synset_mapping: str | os.PathLike | None = None,
    link: str = "hardlink",
) -> dict[str, int]:
    """Build ``images_out`` (ImageNetS919/: validation, test, validation-segmentation,
    LOC_synset_mapping.txt) and ``categories_out``; returns the number of images per split.

    Both splits come from their mapping files, as ImageNet-S's own preparation does; the
    validation names list must name the same images and gives each one's segmentation.
    """
    images_out, categories_out = Path(images_out), Path(categories_out)
    source = ImageSource(imagenet_val)
    scratch = images_out.parent / f".{images_out.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        mapping_file = scratch / "LOC_synset_mapping.txt"
        if synset_mapping is None:
            write_synset_mapping(mapping_file)
        else:
            shutil.copyfile(synset_mapping, mapping_file)
        wnids, _ = imagenet_s.read_synset_mapping(mapping_file)
        known = set(wnids)
        category_wnids = {line.strip() for line in Path(categories).read_text().splitlines() if line.strip()}
        for wnid in sorted(category_wnids):
            if wnid not in known:
                raise InputError(f"wnid {wnid} of {categories} is not in the class mapping {mapping_file.name}.")

        wanted: dict[str, list[Path]] = {}
        counts = {}
        for split in SPLITS:
            entries = read_split_mapping(split_mappings[split], split)
            for source_name, wnid, name in entries:
                if wnid not in category_wnids:
                    raise InputError(
                        f"class {wnid} of {wnid}/{name} in the {split} mapping {split_mappings[split]} is not "
                        f"among the categories of {categories}: both must come from the same ImageNet-S commit."
                    )
                folder = scratch / split / wnid
                folder.mkdir(parents=True, exist_ok=True)
                wanted.setdefault(source_name, []).append(folder / name)
            if split == "validation":
                mapped = {f"{wnid}/{name}" for _, wnid, name in entries}
            counts[split] = len(entries)
        names = read_validation_names(validation_names)
        listed = {image for image, _ in names}
        if listed != mapped:
            only_names, only_mapping = sorted(listed - mapped), sorted(mapped - listed)
            raise InputError(
                f"the validation names list {validation_names} and the validation mapping "
                f"{split_mappings['validation']} name different images ({len(only_names)} only in the list, "
                f"e.g. {only_names[:3]}; {len(only_mapping)} only in the mapping, e.g. {only_mapping[:3]}): "
                f"download both from the same ImageNet-S commit."
            )
        log.info("placing %d images from %s", sum(counts.values()), imagenet_val)
        missing = source.copy_into(wanted, link)
        if missing:
            raise InputError(
                f"{len(missing)} ImageNet-S images are missing from {imagenet_val}, e.g. "
                f"{', '.join(missing[:5])}: it must hold all 50,000 ImageNet-1k validation images."
            )
        seg_dir = scratch / SEGMENTATION_DIR
        counts["segmentations"] = extract_segmentations(segmentation_zip, seg_dir)
        for image, segmentation in names:
            if not (seg_dir / segmentation).is_file():
                raise InputError(
                    f"segmentation {segmentation} of validation image {image} is not in {segmentation_zip}."
                )
        # Complete: move into place (images first, then the categories file).
        shutil.rmtree(images_out, ignore_errors=True)
        os.replace(scratch, images_out)
        categories_out.parent.mkdir(parents=True, exist_ok=True)
        partial = categories_out.with_name(categories_out.name + ".partial")
        shutil.copyfile(categories, partial)
        os.replace(partial, categories_out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("ImageNet-S919 prepared: %s", counts)
    return counts
