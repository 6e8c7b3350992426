"""Training the embedded demo's small ViTs on the generated dataset's ``train/`` split (CPU).

This is the demo's stand-in for downloading pretrained weights: the checkpoint rule of a paper
run fetches them instead, and everything downstream is the same.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import imagenet_s
from .preprocessing import Preprocessing, load_image

log = logging.getLogger(__name__)


def load_split(split_dir: Path, mapping_file: Path, preprocessing: Preprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a split, preprocessed, with its class index (small demo splits fit in memory)."""
    wnids, _ = imagenet_s.read_synset_mapping(mapping_file)
    class_index = {wnid: i for i, wnid in enumerate(wnids)}
    images, labels = [], []
    for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        for file in sorted(class_dir.glob(f"*{imagenet_s.IMAGE_SUFFIX}")):
            images.append(preprocessing(load_image(file)))
            labels.append(class_index[class_dir.name])
    return torch.stack(images), torch.tensor(labels)


def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/8 of the height and width (reflect-padded)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    height, width = images.shape[-2:]
    pad_y, pad_x = height // 8, width // 8
    padded = F.pad(images, (pad_x, pad_x, pad_y, pad_y), mode="reflect")
    if pad_y == pad_x:
        # One draw of two, as before non-square images: square runs keep their shifts.
        dy, dx = torch.randint(0, 2 * pad_y + 1, (2,), generator=generator).tolist()
    else:
        dy = int(torch.randint(0, 2 * pad_y + 1, (1,), generator=generator))
        dx = int(torch.randint(0, 2 * pad_x + 1, (1,), generator=generator))
    return padded[..., dy : dy + height, dx : dx + width]


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    with torch.inference_mode():
        preds = torch.cat([model(images[i : i + batch_size]).argmax(-1) for i in range(0, len(images), batch_size)])
    return (preds == labels).float().mean().item()


def train(
    model: torch.nn.Module,
    images_dir: str | Path,
    preprocessing: Preprocessing,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
    seed: int,
) -> dict:
    """AdamW with a one-cycle schedule; returns train and validation accuracy."""
    root = Path(images_dir)
    mapping = root / "LOC_synset_mapping.txt"
    train_images, train_labels = load_split(root / "train", mapping, preprocessing)
    val_images, val_labels = load_split(root / "validation", mapping, preprocessing)
    log.info("train: %d images, validation: %d images", len(train_images), len(val_images))

    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(train_images) / batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=learning_rate, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_images), generator=generator)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            loss = F.cross_entropy(
                model(augment(train_images[index], generator)), train_labels[index], label_smoothing=0.1
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
        log.info("epoch %d/%d: loss %.3f", epoch + 1, epochs, total_loss / steps_per_epoch)
    model.eval()
    report = {
        "train_accuracy": accuracy(model, train_images, train_labels),
        "validation_accuracy": accuracy(model, val_images, val_labels),
        "chance_accuracy": 1.0 / len(np.unique(train_labels.numpy())),
        "epochs": epochs,
    }
    log.info("accuracy: %s", report)
    return report
