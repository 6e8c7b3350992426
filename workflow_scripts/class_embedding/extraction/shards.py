"""Extraction: one forward pass per batch of stimuli, every block's states reduced to Parquet.

A shard job writes each layer's table and the predictions into its folder (``shard_table``) for a range of
stimuli; :mod:`.shard_merge` concatenates the shards into the per-model layer tables.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from .. import tables
from ..errors import InputError
from ..models.preprocessing import Preprocessing, load_image
from ..models.tokens import TokenLayout
from ..results_layout import shard_table
from . import lens


class StimulusImages(torch.utils.data.Dataset):
    def __init__(self, files: list[str], images_dir: str | os.PathLike, preprocessing: Preprocessing):
        self.files = files
        self.images_dir = Path(images_dir)
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocessing(load_image(self.images_dir / self.files[index]))


def shard_ranges(n_images: int, shard_size: int | None) -> list[tuple[int, int]]:
    """[start, stop) image ranges; a single shard when ``shard_size`` is unset."""
    if not shard_size:
        return [(0, n_images)]
    return [(start, min(start + shard_size, n_images)) for start in range(0, n_images, shard_size)]


def fixed_lists(values: np.ndarray) -> pa.FixedSizeListArray:
    """(rows, k) integer array → a Parquet-friendly fixed-size list column of int16."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1).astype(np.int16)), values.shape[-1])


def layer_table(images: np.ndarray, parts: list[lens.LayerReduction]) -> pa.Table:
    """One row per (image, token), sorted by image then token."""
    rank = torch.cat([p.rank for p in parts]).cpu().numpy()
    n_images, n_tokens = rank.shape
    columns = {
        "image": pa.array(np.repeat(images.astype(np.int32), n_tokens)),
        "token": pa.array(np.tile(np.arange(n_tokens, dtype=np.int16), n_images)),
        "rank": pa.array(rank.reshape(-1).astype(np.int16)),
        "logit": pa.array(torch.cat([p.logit for p in parts]).cpu().numpy().reshape(-1).astype(np.float32)),
        "top5": fixed_lists(torch.cat([p.top5 for p in parts]).cpu().numpy().reshape(-1, lens.TOP_K)),
    }
    if parts[0].mem_top5 is not None:
        columns["mem_top5"] = fixed_lists(torch.cat([p.mem_top5 for p in parts]).cpu().numpy().reshape(-1, lens.TOP_K))
    return pa.table(columns)


def check_token_count(model: torch.nn.Module, n_tokens: int, description: str) -> None:
    """The residual stream holds the prefix tokens and rows × cols image tokens, nothing else: a token
    of a kind the layout does not know would be counted as an image token."""
    layout = TokenLayout.of_timm(model)
    if n_tokens != layout.n_tokens:
        raise InputError(
            f"{description}: the residual stream has {n_tokens} tokens, but token_grid {layout.grid_name} "
            f"gives {layout.n_image_tokens} image tokens and the prefix {list(layout.prefix)} {layout.n_prefix} "
            f"more: check models.<name>.token_grid, class_token, distillation_token and register_tokens; "
            f"tokens of another kind are not supported."
        )


def extract_shard(
    model: torch.nn.Module,
    stimuli: pa.Table,
    images_dir: str | os.PathLike,
    preprocessing: Preprocessing,
    shard_dir: str | os.PathLike,
    *,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
    description: str = "extract",
    metadata: dict | None = None,
) -> None:
    """Reduce every layer of ``model`` for the given stimuli into ``shard_dir`` (atomically).

    ``metadata`` (model identity, weights hash, preprocessing) goes into every table's schema.
    """
    metadata = {**(metadata or {}), "logit_dtype": "float32", "device": str(device)}
    images = stimuli.column("image").to_numpy()
    targets = torch.from_numpy(stimuli.column("class_index").to_numpy().astype(np.int64))
    loader = torch.utils.data.DataLoader(
        StimulusImages(stimuli.column("file").to_pylist(), images_dir, preprocessing),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    model = model.to(device).eval()
    parts: dict[str, list[lens.LayerReduction]] = {name: [] for name in lens.layer_names(len(model.blocks))}
    logits_parts = []
    lens_hooks = lens.ClassEmbeddingLens(model)
    start = 0
    with lens_hooks, torch.inference_mode():
        for batch in tqdm(loader, desc=description, file=sys.stderr, mininterval=5):
            batch_targets = targets[start : start + len(batch)].to(device)
            lens_hooks.set_targets(batch_targets)
            logits = model(batch.to(device, non_blocking=True))
            check_token_count(model, lens_hooks.record.last_state.shape[1], description)
            lens.audit(model, lens_hooks.record.last_state, logits, f"{description}, images {start}..")
            for name, reduction in lens_hooks.record.layers.items():
                parts[name].append(reduction.cpu())
            logits_parts.append(logits.float().cpu())
            start += len(batch)

    logits = torch.cat(logits_parts)
    pred = logits.argmax(-1)
    predictions = pa.table(
        {
            "image": pa.array(images.astype(np.int32)),
            "label": pa.array(targets.numpy().astype(np.int16)),
            "pred": pa.array(pred.numpy().astype(np.int16)),
            "correct": pa.array((pred == targets).numpy()),
            "logit": pa.array(logits.gather(1, targets[:, None]).squeeze(1).numpy()),
        }
    )
    shard_dir = Path(shard_dir)
    partial = shard_dir.with_name(shard_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name, layer_parts in parts.items():
        tables.write_table(layer_table(images, layer_parts), shard_table(partial, name), {**metadata, "layer": name})
    tables.write_table(predictions, shard_table(partial, "predictions"), metadata)
    shutil.rmtree(shard_dir, ignore_errors=True)
    os.replace(partial, shard_dir)
