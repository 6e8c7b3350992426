"""Your own labelled images: ``<root>/<label>/<image>``, one folder per class, optional masks.

A folder name is a class label given as a wnid (``n01440764``), a class index (``0``) or a class
name (``tench``, matched case-insensitively against the full name or any of its comma-separated
synonyms, ``_`` read as a space, Unicode compared in NFC). Names and wnids come from timm's
ImageNet info of the configured subset (``imagenet-1k`` by default), or from a list you give.
Optional masks ``<masks>/<label>/<stem>.png`` mark the class pixels (non-zero) of each image; with
them the class/context analyses run as on ImageNet-S.

:func:`scan_image_folder` lists the folder (no image is decoded, no torch is imported; timm only
for its class list) and refuses what would be read wrongly; :func:`select_stimuli` builds the
stimulus table from that scan.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LABEL_KINDS = ("wnid", "index", "class_name")
#: Folders written by macOS's zip tool next to the real ones; skipped as hidden files are.
SYSTEM_FOLDERS = ("__MACOSX",)
#: How many names an error or message lists before "and N more".
LISTED = 5

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClassFolder:
    """A class folder that gives stimuli: its name on disk, its class index and its image files
    (all of them, sorted by name)."""

    folder: str
    class_index: int
    images: tuple[str, ...]


@dataclass(frozen=True)
class FolderScan:
    """What :func:`scan_image_folder` found: the class folders kept (those with at least
    ``images_per_class`` images, sorted by name), the dropped ones with their image counts, how
    many hidden files and folders were skipped, and one message per thing skipped or dropped
    (empty when nothing was)."""

    root: Path
    images_per_class: int
    kept: tuple[ClassFolder, ...]
    dropped: dict[str, int]
    hidden_skipped: int
    messages: tuple[str, ...]

    @property
    def n_folders(self) -> int:
        return len(self.kept) + len(self.dropped)


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
    """A class name as matched: NFC (macOS writes folder names decomposed), case-folded, ``_`` as
    a space, runs of white space as one."""
    return " ".join(unicodedata.normalize("NFC", text).replace("_", " ").lower().split())


def class_of_folder(
    folder: str, labels: str, wnids: list[str] | None, names: list[str] | None, num_classes: int | None
) -> int:
    """The class index a class folder's name gives (``wnids`` needed for wnid labels, ``names``
    for class_name labels)."""
    if labels == "wnid":
        if wnids is None:
            raise InputError(f"labels: wnid needs timm's ImageNet info, not a class_names list (folder '{folder}').")
        key = unicodedata.normalize("NFC", folder)
        if key not in wnids:
            raise InputError(f"class folder '{folder}' is not a wnid of the class list: rename it or set labels.")
        index = wnids.index(key)
    elif labels == "index":
        # ASCII digits only: str.isdigit() also holds for '²' or '٣', which int() does not read.
        if not re.fullmatch(r"[0-9]+", folder):
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
    return index


def is_hidden(name: str) -> bool:
    """Hidden files and folders (``.DS_Store``, macOS's AppleDouble ``._name.jpg``) and macOS's zip
    folder: never images or classes."""
    return name.startswith(".") or name in SYSTEM_FOLDERS


def require_utf8(name: str, where: str) -> None:
    """A name that is not UTF-8 on disk cannot be written to the stimulus table."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            f"{where} {os.fsencode(name)!r} has a name that is not UTF-8: rename it to a UTF-8 name (e.g. with "
            "`convmv -f latin1 -t utf8 --notest`, or by hand) and rerun."
        ) from None


def listing(counts: dict[str, int], limit: int = LISTED) -> str:
    """``'a' (3), 'b' (0) and 4 more``: the first few folders with their image counts."""
    shown = ", ".join(f"'{name}' ({n})" for name, n in list(counts.items())[:limit])
    return shown + (f" and {len(counts) - limit} more" if len(counts) > limit else "")


def scan_image_folder(
    root: str | Path,
    labels: str,
    images_per_class: int,
    *,
    num_classes: int | None = None,
    class_names: list[str] | None = None,
    imagenet_subset: str = "imagenet-1k",
    min_class_share: float = 0.5,
) -> FolderScan:
    """List ``<root>/<label>/<image>`` (directory listings only, no image is opened) and say which
    class folders give stimuli.

    Hidden files and folders (names starting with '.', and ``__MACOSX``) are skipped and counted;
    class folders with fewer than ``images_per_class`` images (empty ones too) are dropped and
    listed. Raises :class:`InputError`, naming the folder or file and the fix, when the root is
    missing, a class folder or image name is not UTF-8, a folder name is no class label (or a
    class outside ``num_classes``), two folders name one class, no folder has enough images, or
    fewer than ``min_class_share`` of the class folders are kept. timm is imported only for wnid
    and class_name labels without ``class_names``.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(
            f"image folder {root} not found: point datasets.<name>.image_folder.root at <root>/<label>/*.jpg."
        )
    hidden, loose, folders = [], 0, []
    with os.scandir(root) as entries:
        for entry in entries:
            if is_hidden(entry.name):
                if entry.is_dir():
                    hidden.append(entry.name)
            elif entry.is_dir():
                require_utf8(entry.name, f"class folder in {root}:")
                folders.append(entry.name)
            elif entry.name.lower().endswith(IMAGE_SUFFIXES):
                loose += 1
    wnids = names = None
    if labels in ("wnid", "class_name"):
        wnids, names = class_list(class_names, imagenet_subset)
    images, other = {}, Counter()
    by_class: dict[int, list[str]] = {}
    for folder in sorted(folders):
        by_class.setdefault(class_of_folder(folder, labels, wnids, names, num_classes), []).append(folder)
        files = []
        try:
            with os.scandir(root / folder) as entries:
                for entry in entries:
                    if not entry.is_file():
                        continue
                    image = entry.name.lower().endswith(IMAGE_SUFFIXES)
                    if is_hidden(entry.name):
                        if image:
                            hidden.append(f"{folder}/{entry.name}")
                    elif image:
                        require_utf8(entry.name, f"image in class folder '{folder}':")
                        files.append(entry.name)
                    else:
                        other[Path(entry.name).suffix.lower() or "(no suffix)"] += 1
        except OSError as err:
            raise InputError(f"class folder {root / folder} cannot be listed ({err}): fix its permissions.") from None
        images[folder] = tuple(sorted(files))
    twins = [(index, group) for index, group in by_class.items() if len(group) > 1]
    if twins:
        index, group = twins[0]
        name = f" ({names[index]})" if names is not None and index < len(names) else ""
        more = f"; {len(twins) - 1} more classes have several folders" if len(twins) > 1 else ""
        raise InputError(
            f"class folders {' and '.join(repr(folder) for folder in group)} of {root} both name class {index}"
            f"{name} (labels: {labels}){more}: merge them into one folder, or rename or remove one."
        )
    class_index = {folder: index for index, group in by_class.items() for folder in group}
    kept = tuple(
        ClassFolder(folder, class_index[folder], files)
        for folder, files in images.items()
        if len(files) >= images_per_class
    )
    dropped = {folder: len(files) for folder, files in images.items() if len(files) < images_per_class}
    messages = scan_messages(root, images_per_class, len(folders), dropped, hidden, loose, other)
    if not folders:
        raise InputError(f"image folder {root} has no class folders: put the images in <root>/<label>/*.jpg.")
    if not kept:
        raise InputError(
            f"no class folder of {root} has {images_per_class} images ({', '.join(IMAGE_SUFFIXES)}; "
            f"{listing(dropped)}): lower stimuli.images_per_class or add images."
        )
    if len(kept) / len(folders) < min_class_share:
        raise InputError(
            f"only {len(kept)} of the {len(folders)} class folders of {root} have stimuli.images_per_class = "
            f"{images_per_class} images, less than stimuli.min_class_share = {min_class_share:g} of them; dropped "
            f"(images found): {listing(dropped)}. Add images to those folders, lower stimuli.images_per_class, "
            f"or lower stimuli.min_class_share to run on the {len(kept)} classes that have enough."
        )
    return FolderScan(root, images_per_class, kept, dropped, len(hidden), messages)


def scan_messages(root, images_per_class, n_folders, dropped, hidden, loose, other) -> tuple[str, ...]:
    """One line per thing the scan skipped or dropped, for the console and the stimulus job's log."""
    messages = []
    if dropped:
        messages.append(
            f"{len(dropped)} of {n_folders} class folders of {root} dropped, fewer than stimuli.images_per_class = "
            f"{images_per_class} images: {listing(dropped)}."
        )
    if hidden:
        hidden = sorted(hidden)
        shown = ", ".join(f"'{name}'" for name in hidden[:LISTED])
        more = f" and {len(hidden) - LISTED} more" if len(hidden) > LISTED else ""
        messages.append(
            f"{len(hidden)} hidden files or folders of {root} skipped (names starting with '.', e.g. macOS's "
            f"'._' copies, and __MACOSX): {shown}{more}."
        )
    if loose:
        messages.append(f"{count(loose, 'image')} directly in {root} skipped: images belong in <root>/<label>/.")
    if other:
        suffixes = ", ".join(f"{suffix} ({n})" for suffix, n in other.most_common(LISTED))
        messages.append(
            f"{count(sum(other.values()), 'file')} in the class folders of {root} not read as images (by their suffix: "
            f"{suffixes}); images are {', '.join(IMAGE_SUFFIXES)}: convert others (e.g. .heic) to one of these."
        )
    return tuple(messages)


def count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def select_stimuli(
    root: str | Path,
    labels: str,
    images_per_class: int,
    num_classes: int | None,
    class_names: list[str] | None = None,
    imagenet_subset: str = "imagenet-1k",
    min_class_share: float = 0.5,
):
    """The stimulus table (a ``pyarrow.Table``): the first ``images_per_class`` images (sorted by
    name) of every class folder :func:`scan_image_folder` keeps, class folders sorted by name;
    what it skipped or dropped is logged as a warning.

    ``wnid`` holds the folder name (the class folder, as for the other datasets), ``file`` the
    path relative to ``root``. ``num_classes`` is the smallest number of classes of the models
    evaluated on the folder.
    """
    from .imagenet_s import stimulus_table

    scan = scan_image_folder(
        root,
        labels,
        images_per_class,
        num_classes=num_classes,
        class_names=class_names,
        imagenet_subset=imagenet_subset,
        min_class_share=min_class_share,
    )
    for message in scan.messages:
        log.warning(message)
    _, names = class_list(class_names, imagenet_subset)
    rows = {k: [] for k in ("wnid", "class_index", "category", "file", "img_index")}
    for kept in scan.kept:
        for img_index, file in enumerate(kept.images[:images_per_class]):
            rows["wnid"].append(kept.folder)
            rows["class_index"].append(kept.class_index)
            rows["category"].append(names[kept.class_index] if kept.class_index < len(names) else kept.folder)
            rows["file"].append(f"{kept.folder}/{file}")
            rows["img_index"].append(img_index)
    return stimulus_table(**rows)
