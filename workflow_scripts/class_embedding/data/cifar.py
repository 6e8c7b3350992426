"""CIFAR-100 for the ViT-B/16-CIFAR model (docs/method.md §2.3): torchvision's python-pickle format,
its test split as stimuli, and the fine-tuning fallback when the authors' checkpoint is absent.

The prepared layout mirrors ImageNet-S so that extraction needs no special case:
``ImageNetS919/validation/<label>/<index>.png`` holds test image ``index`` (its position in the
stored test set) losslessly, and ``ImageNetS919/meta.json`` the fine label names.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from ..errors import InputError
from .downloads import verify
from .imagenet_s import stimulus_table
from .safe_pickle import load_cifar_pickle

log = logging.getLogger(__name__)

FOLDER = "cifar-100-python"
IMAGE_DIGITS = 5


def find_pickles(source: str | os.PathLike, scratch: Path) -> Path:
    """The ``cifar-100-python`` folder of a torchvision root, a folder itself, or the archive
    (extracted into ``scratch``)."""
    source = Path(source)
    if source.is_file():
        try:
            with tarfile.open(source) as archive:
                archive.extractall(scratch, filter="data")
        except tarfile.TarError as err:
            raise InputError(f"{source} is not the cifar-100-python.tar.gz archive ({err}).") from None
        source = scratch
    for candidate in (source / FOLDER, source):
        if (candidate / "test").is_file() and (candidate / "meta").is_file():
            return candidate
    raise InputError(
        f"CIFAR-100 not found at {source}: expected {FOLDER}/test and {FOLDER}/meta (torchvision's "
        f"CIFAR100 root, or the cifar-100-python.tar.gz archive)."
    )


def load_batch(path: str | os.PathLike) -> dict:
    """A pickle batch as (N, 32, 32, 3) uint8 images and integer fine labels."""
    batch = read_pickle(path, "batch")
    missing = [key for key in ("data", "fine_labels") if key not in batch]
    if missing:
        raise InputError(f"CIFAR-100 batch {path} lacks {', '.join(missing)}: is it CIFAR-10?")
    images = np.asarray(batch["data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return {"images": images, "labels": np.asarray(batch["fine_labels"], np.int64)}


def read_pickle(path: str | os.PathLike, kind: str) -> dict:
    """A CIFAR-100 pickle file as a dict, through the restricted unpickler (no code runs)."""
    try:
        content = load_cifar_pickle(path)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise InputError(f"CIFAR-100 {kind} {path} cannot be read ({err}).") from None
    if not isinstance(content, dict):
        raise InputError(f"CIFAR-100 {kind} {path} holds a {type(content).__name__}, not CIFAR-100's dict.")
    return content


def label_names(folder: Path) -> list[str]:
    meta = read_pickle(folder / "meta", "meta file")
    if "fine_label_names" not in meta:
        raise InputError(f"CIFAR-100 meta file {folder / 'meta'} lacks fine_label_names: is it CIFAR-10's?")
    return list(meta["fine_label_names"])


def prepare_cifar100(
    source: str | os.PathLike,
    images_out: str | os.PathLike,
    pickles_out: str | os.PathLike,
    checksum: str | None = None,
) -> int:
    """Write every test image as ``validation/<label>/<index>.png`` under ``images_out`` and copy
    the pickle batches to ``pickles_out`` (for fine-tuning); atomic. Returns the image count.

    CIFAR-100's batches are Python pickles, and unpickling runs whatever code a pickle names. A
    downloaded archive is therefore checked against its pinned ``checksum`` (the download rule
    checked it too; the file may have been replaced since) before anything in it is unpickled. A
    root you give (no checksum) is read with :func:`~.safe_pickle.load_cifar_pickle`, which
    builds nothing but numpy arrays and refuses any other global.
    """
    images_out, pickles_out = Path(images_out), Path(pickles_out)
    verify(source, checksum, "CIFAR-100 archive")
    scratch = images_out.parent / f".{images_out.name}.partial"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        folder = find_pickles(source, scratch / "archive")
        test = load_batch(folder / "test")
        names = label_names(folder)
        images_dir = scratch / "images"
        for index, (image, label) in enumerate(zip(test["images"], test["labels"])):
            target = images_dir / "validation" / str(label) / f"{index:0{IMAGE_DIGITS}d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(target)
        (images_dir / "meta.json").write_text(json.dumps({"fine_label_names": names}))
        pickles = scratch / "pickles"
        pickles.mkdir()
        for name in ("train", "test", "meta"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, pickles / name)
        for built, final in ((pickles, pickles_out), (images_dir, images_out)):
            shutil.rmtree(final, ignore_errors=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(built, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return len(test["labels"])


def select_stimuli(images_dir: str | os.PathLike, images_per_class: int) -> pa.Table:
    """The first ``images_per_class`` test images of each label in stored order; classes keyed
    by the label as a string, in order of first appearance (docs/method.md §2.3)."""
    images_dir = Path(images_dir)
    meta = images_dir / "meta.json"
    if not meta.is_file():
        raise InputError(f"{meta} not found: {images_dir} is not a prepared CIFAR-100 folder.")
    names = json.loads(meta.read_text())["fine_label_names"]
    files = sorted((int(png.stem), int(png.parent.name), png) for png in (images_dir / "validation").glob("*/*.png"))
    chosen: dict[int, list[int]] = {}
    for index, label, _ in files:
        taken = chosen.setdefault(label, [])
        if len(taken) < images_per_class:
            taken.append(index)
    short = [label for label, taken in chosen.items() if len(taken) < images_per_class]
    if short or len(chosen) != len(names):
        raise InputError(
            f"{images_dir}: labels {short or sorted(set(range(len(names))) - set(chosen))} have fewer than "
            f"{images_per_class} test images; the CIFAR-100 test split has 100 per label."
        )
    rows = [(label, index, img_index) for label, taken in chosen.items() for img_index, index in enumerate(taken)]
    return stimulus_table(
        wnid=[str(label) for label, _, _ in rows],
        class_index=[label for label, _, _ in rows],
        category=[names[label] for label, _, _ in rows],
        file=[f"validation/{label}/{index:0{IMAGE_DIGITS}d}.png" for label, index, _ in rows],
        img_index=[i for _, _, i in rows],
    )


def finetune(model, pickles: str | os.PathLike, preprocessing, settings: dict, seed: int, device):
    """Fine-tune ``model`` (pretrained backbone, new 100-class head) on CIFAR-100 train: AdamW,
    cosine schedule, random flips; the fallback when the authors' checkpoint is not given."""
    import math

    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    train = load_batch(Path(pickles) / "train")
    images, labels = train["images"], torch.from_numpy(train["labels"])
    model = model.to(device).train()
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"]
    )
    batch_size, epochs = settings["batch_size"], settings["epochs"]
    steps = epochs * math.ceil(len(images) / batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    for epoch in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        total, correct, seen = 0.0, 0, 0
        for start in range(0, len(images), batch_size):
            index = order[start : start + batch_size]
            batch = torch.stack([preprocessing(Image.fromarray(images[i])) for i in index.tolist()])
            flip = torch.rand(len(batch), generator=generator) < 0.5
            batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch).to(device)
            target = labels[index].to(device)
            logits = model(batch)
            loss = F.cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            correct += (logits.argmax(-1) == target).sum().item()
            seen += len(batch)
        log.info("epoch %d: loss %.4f, train accuracy %.4f", epoch + 1, total / seen, correct / seen)
    return model.eval()
