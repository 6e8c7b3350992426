"""Linear probes (docs/method.md §4.14) fitted in one streaming pass, scored in one more.

A ridge probe maps the raw activation of one token at one layer to the class scores; the paper
fits one per (layer, token) with ±1 targets and an intercept (scikit-learn ``Ridge(alpha)``).
With an intercept the data are centred, and with ±1 targets everything the closed-form solution
needs is, per (layer, token), the Gram matrix XᵀX, the feature sum, the per-class feature sums
and the class counts (docs/method.md §10):

    x̄ = S / n,   A = XᵀX − n x̄x̄ᵀ + αI,   (XcᵀYc)[:, c] = 2 (M_c − n_c x̄),
    W = A⁻¹ XcᵀYc,   b = ȳ − x̄ᵀW  with  ȳ_c = 2 n_c / n − 1.

So one forward pass over the probe images accumulates these statistics for every layer and token
(hooks reduce each state where it is produced, as the lens does), the systems are solved in
float64, and one forward pass over the stimuli ranks the correct class among every probe's
outputs. The original instead re-ran the network over the probe images for every
(layer, token) and fitted each probe separately (docs/method.md §7.23).

Memory: the statistics of one layer take T·(D² + C·D + D) float64 numbers (ViT-B/32, T = 50,
D = 768, C = 1000: 0.54 GB per layer, 19.6 GB for all 36). Blocks are therefore processed in
chunks that fit ``memory_bytes``; each chunk is one fit pass and one scoring pass, and a pass
stops the forward after the chunk's last block, so chunking costs at most one extra partial
forward per chunk.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from ..data import imagenet_s
from ..errors import InputError
from ..extraction import lens, selection

log = logging.getLogger(__name__)

SHORT_CLASS_POLICIES = ("skip", "error")


# ---------------------------------------------------------------------------------------------
# Probe split


def class_image_counts(split_dir: str | Path, exclude_wnids: Iterable[str] = ()) -> dict[str, int]:
    """Number of images of every (non-excluded) class folder of a split, in sorted wnid order."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise InputError(
            f"image folder {split_dir} not found: the linear probes are trained on the dataset's "
            f"test split ({imagenet_s.IMAGES_DIR}/test/<wnid>/*{imagenet_s.IMAGE_SUFFIX})."
        )
    excluded = set(exclude_wnids)
    return {
        d.name: sum(1 for p in d.iterdir() if p.name.endswith(imagenet_s.IMAGE_SUFFIX))
        for d in sorted(p for p in split_dir.iterdir() if p.is_dir())
        if d.name not in excluded
    }


def select_probe_stimuli(
    split_dir: str | Path,
    mapping_file: str | Path,
    images_per_class: int,
    exclude_wnids: Iterable[str] = (),
    short_classes: str = "skip",
) -> pa.Table:
    """The probe training set: the first ``images_per_class`` images (sorted) of every class.

    Same columns and order as the stimulus table (:func:`imagenet_s.select_stimuli` on the test
    split). Classes with fewer images are skipped and named in the log (``short_classes="skip"``,
    the paper's rule: 909 of ImageNet-S's 914 test classes have 10) or stop the run with an
    :class:`InputError` naming them (``"error"``).
    """
    if short_classes not in SHORT_CLASS_POLICIES:
        raise InputError(f"probing.short_classes must be one of {SHORT_CLASS_POLICIES}, not '{short_classes}'.")
    counts = class_image_counts(split_dir, exclude_wnids)
    short = {wnid: n for wnid, n in counts.items() if n < images_per_class}
    if short:
        listed = ", ".join(f"{wnid} ({n} images)" for wnid, n in short.items())
        if short_classes == "error" or len(short) == len(counts):
            raise InputError(
                f"{split_dir}: class{'es' if len(short) > 1 else ''} {listed} ha{'ve' if len(short) > 1 else 's'} "
                f"fewer than probing.images_per_class = {images_per_class} test images: lower "
                f"probing.images_per_class, or set probing.short_classes: skip to leave such classes out."
            )
        log.warning(
            "probe split: skipping %d classes with fewer than %d images: %s", len(short), images_per_class, listed
        )
    return imagenet_s.select_stimuli(split_dir, mapping_file, images_per_class, list(exclude_wnids))


# ---------------------------------------------------------------------------------------------
# Streaming ridge regression


class RidgeAccumulator:
    """Sufficient statistics of P ridge probes on D features with C classes (±1 targets).

    :meth:`update` takes features (P, B, D) and class indices (B,); :meth:`solve` returns
    weights (P, D, C) and intercepts (P, C) equal to scikit-learn's ``Ridge(alpha)`` with
    ``fit_intercept=True`` on the same data.
    """

    def __init__(self, n_probes: int, dim: int, num_classes: int, device: torch.device | str = "cpu"):
        options = {"dtype": torch.float64, "device": device}
        self.n = 0
        self.gram = torch.zeros(n_probes, dim, dim, **options)
        self.sums = torch.zeros(n_probes, dim, **options)
        self.class_sums = torch.zeros(n_probes, num_classes, dim, **options)
        self.class_counts = torch.zeros(num_classes, **options)

    @staticmethod
    def nbytes(n_probes: int, dim: int, num_classes: int) -> int:
        return 8 * n_probes * (dim * dim + num_classes * dim + dim)

    def update(self, features: torch.Tensor, targets: torch.Tensor) -> None:
        x = features.to(self.gram.dtype)
        targets = targets.to(x.device)
        self.gram.baddbmm_(x.transpose(1, 2), x)
        self.sums += x.sum(1)
        self.class_sums.index_add_(1, targets, x)
        self.class_counts.index_add_(0, targets, torch.ones_like(targets, dtype=x.dtype))
        self.n += x.shape[1]

    def solve(self, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Closed-form ridge solution; the statistics are consumed (freed once the caller drops this object)."""
        if self.n == 0:
            raise ValueError("no data accumulated")
        mean = self.sums / self.n  # (P, D)
        system = self.gram
        system.sub_(self.n * mean.unsqueeze(2) * mean.unsqueeze(1))
        system.diagonal(dim1=1, dim2=2).add_(alpha)
        # (XcᵀYc)[:, c] = 2 (M_c − n_c x̄), built in place of the class sums.
        rhs = self.class_sums.sub_(self.class_counts.view(1, -1, 1) * mean.unsqueeze(1)).mul_(2).transpose(1, 2)
        factor, info = torch.linalg.cholesky_ex(system)
        if int(info.max()) > 0:
            weights = torch.linalg.solve(system, rhs)  # not positive definite (alpha ~ 0): LU instead
        else:
            weights = torch.cholesky_solve(rhs, factor)
        del factor
        target_mean = 2 * self.class_counts / self.n - 1
        intercepts = target_mean.unsqueeze(0) - torch.bmm(mean.unsqueeze(1), weights).squeeze(1)
        self.gram = self.class_sums = self.sums = None
        return weights, intercepts


def probe_ranks(
    features: torch.Tensor, weights: torch.Tensor, intercepts: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Rank of the correct class among each probe's outputs: features (P, B, D) → (B, P) int16."""
    x = features.to(weights.dtype)
    scores = torch.baddbmm(intercepts.unsqueeze(1), x, weights)  # (P, B, C)
    target = targets.to(x.device).view(1, -1).expand(scores.shape[:2])
    return selection.rank_of(scores, target).transpose(0, 1).to(torch.int16)


# ---------------------------------------------------------------------------------------------
# Streaming over a model's layers


class _StopForward(Exception):
    """Raised by the hook of a chunk's last block: later blocks are not needed."""


def layer_name(kind: str, block: int) -> str:
    return f"{kind}_{block}"


class LayerStates:
    """Hooks that hand every (layer, batch) state of the given blocks to ``sink(name, states)``,
    states as (T, B, D); the forward stops after the last of the blocks."""

    def __init__(self, model: torch.nn.Module, blocks: list[int], sink):
        self.model, self.blocks, self.sink = model, blocks, sink
        self._handles: list = []

    def _hook(self, name: str, stop: bool = False):
        def hook(module, inputs, output):
            self.sink(name, output.transpose(0, 1))
            if stop:
                raise _StopForward

        return hook

    def __enter__(self):
        last = max(self.blocks)
        for b in self.blocks:
            block = self.model.blocks[b]
            attn_update, mlp_update = lens.residual_update_modules(block)
            self._handles += [
                attn_update.register_forward_hook(self._hook(layer_name("attn", b))),
                mlp_update.register_forward_hook(self._hook(layer_name("mlp", b))),
                block.register_forward_hook(self._hook(layer_name("hs", b), stop=b == last)),
            ]
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(self, images: torch.Tensor) -> None:
        try:
            self.model(images)
        except _StopForward:
            pass


def model_shape(model: torch.nn.Module) -> tuple[int, int, int]:
    """Tokens T (including prefix tokens), width D and classes C of a timm ViT."""
    n_tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    return n_tokens, model.embed_dim, model.num_classes


def block_chunks(num_blocks: int, n_tokens: int, dim: int, num_classes: int, memory_bytes: float) -> list[list[int]]:
    """Consecutive blocks grouped so that one group's probe statistics fit ``memory_bytes``.

    A group holds 3 layers per block; solving one layer needs about one more layer's worth
    of temporaries. At least one block per group, whatever the budget.
    """
    per_layer = RidgeAccumulator.nbytes(n_tokens, dim, num_classes)
    per_block = len(lens.LAYER_KINDS) * per_layer
    size = max(1, int((memory_bytes - per_layer) // per_block))
    return [list(range(start, min(start + size, num_blocks))) for start in range(0, num_blocks, size)]


@dataclass
class ProbeResult:
    ranks: dict[str, np.ndarray]  # layer -> (n_stimuli, T) int16
    n_chunks: int
    n_probe_images: int


def fit_and_score(
    model: torch.nn.Module,
    probe_batches,
    stimulus_batches,
    *,
    alpha: float,
    device: torch.device | str = "cpu",
    memory_bytes: float = 8e9,
    progress: bool = False,
) -> ProbeResult:
    """Fit ridge probes for every (layer, token) and rank the correct class of every stimulus.

    ``probe_batches`` and ``stimulus_batches`` are re-iterable sources of (images, class indices)
    batches (a DataLoader, or a list of tensors in tests); each is iterated once per block chunk.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    n_tokens, dim, num_classes = model_shape(model)
    chunks = block_chunks(len(model.blocks), n_tokens, dim, num_classes, memory_bytes)
    log.info(
        "probes: %d blocks x %d layer kinds x %d tokens, D = %d, C = %d; %d chunk(s) of blocks %s "
        "(%.2f GB of statistics per layer, budget %.2f GB)",
        len(model.blocks),
        len(lens.LAYER_KINDS),
        n_tokens,
        dim,
        num_classes,
        len(chunks),
        [f"{c[0]}-{c[-1]}" for c in chunks],
        RidgeAccumulator.nbytes(n_tokens, dim, num_classes) / 1e9,
        memory_bytes / 1e9,
    )
    ranks: dict[str, list[torch.Tensor]] = {}
    n_probe_images = 0
    for chunk in chunks:
        names = [layer_name(kind, b) for kind in lens.LAYER_KINDS for b in chunk]
        accumulators = {name: RidgeAccumulator(n_tokens, dim, num_classes, device) for name in names}
        current: dict[str, torch.Tensor] = {}

        def accumulate(name, states, accumulators=accumulators, current=current):
            accumulators[name].update(states, current["targets"])

        with LayerStates(model, chunk, accumulate) as states, torch.inference_mode():
            n_probe_images = 0
            for images, targets in _progress(probe_batches, progress, f"fit blocks {chunk[0]}-{chunk[-1]}"):
                current["targets"] = targets.to(device=device, dtype=torch.long)
                states.run(images.to(device, non_blocking=True))
                n_probe_images += len(targets)
        solved = {}
        for name in names:
            solved[name] = accumulators.pop(name).solve(alpha)
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}

        def score(name, states, parts=parts, solved=solved, current=current):
            parts[name].append(probe_ranks(states, *solved[name], current["targets"]).cpu())

        with LayerStates(model, chunk, score) as states, torch.inference_mode():
            for images, targets in _progress(stimulus_batches, progress, f"score blocks {chunk[0]}-{chunk[-1]}"):
                current["targets"] = targets.to(device=device, dtype=torch.long)
                states.run(images.to(device, non_blocking=True))
        for name in names:
            ranks[name] = torch.cat(parts[name]).numpy()
        del score, solved  # the next chunk's solutions must not sit beside these
    order = lens.layer_names(len(model.blocks))
    return ProbeResult({name: ranks[name] for name in order}, len(chunks), n_probe_images)


def _progress(batches, enabled: bool, description: str):
    return tqdm(batches, desc=description, file=sys.stderr, mininterval=5) if enabled else batches


# ---------------------------------------------------------------------------------------------
# Tables


def ranks_table(images: np.ndarray, ranks: dict[str, np.ndarray]) -> pa.Table:
    """One row per (layer, image, token) in that order: image, layer, token, rank."""
    parts = []
    for name, layer_ranks in ranks.items():
        n_images, n_tokens = layer_ranks.shape
        parts.append(
            pa.table(
                {
                    "image": pa.array(np.repeat(images.astype(np.int32), n_tokens)),
                    "layer": pa.array([name] * (n_images * n_tokens), pa.string()),
                    "token": pa.array(np.tile(np.arange(n_tokens, dtype=np.int16), n_images)),
                    "rank": pa.array(layer_ranks.reshape(-1).astype(np.int16)),
                }
            )
        )
    return pa.concat_tables(parts)


def accuracy_table(ranks: dict[str, np.ndarray]) -> pa.Table:
    """Top-1 accuracy on the stimuli of every (layer, token) probe."""
    rows = {"layer": [], "kind": [], "block": [], "token": [], "accuracy": []}
    for name, layer_ranks in ranks.items():
        kind, block = name.split("_")
        accuracy = (layer_ranks == 0).mean(axis=0)
        for token, value in enumerate(accuracy):
            rows["layer"].append(name)
            rows["kind"].append(kind)
            rows["block"].append(int(block))
            rows["token"].append(token)
            rows["accuracy"].append(float(value))
    return pa.table(
        {
            "layer": pa.array(rows["layer"], pa.string()),
            "kind": pa.array(rows["kind"], pa.string()),
            "block": pa.array(rows["block"], pa.int16()),
            "token": pa.array(rows["token"], pa.int16()),
            "accuracy": pa.array(rows["accuracy"], pa.float64()),
        }
    )


# ---------------------------------------------------------------------------------------------
# From files


class LabelledImages(torch.utils.data.Dataset):
    """(image tensor, class index) of every row of a stimulus-like table."""

    def __init__(self, table: pa.Table, images_dir: str | Path, preprocessing):
        from ..extraction.shards import StimulusImages

        self.images = StimulusImages(table.column("file").to_pylist(), images_dir, preprocessing)
        self.targets = table.column("class_index").to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        return self.images[index], int(self.targets[index])


def check_classes(model_name: str, probe_stimuli: pa.Table, stimuli: pa.Table, num_classes: int) -> None:
    """Every class index must fit the model's head; stimulus classes without probe images are named."""
    for label, table in (("probe split", probe_stimuli), ("stimuli", stimuli)):
        top = int(np.max(table.column("class_index").to_numpy())) if len(table) else -1
        if top >= num_classes:
            raise InputError(
                f"{label}: class index {top} does not exist in model '{model_name}' ({num_classes} classes): "
                f"the model and its dataset's class mapping do not match."
            )
    missing = sorted(set(stimuli.column("wnid").to_pylist()) - set(probe_stimuli.column("wnid").to_pylist()))
    if missing:
        log.warning(
            "%d stimulus classes have no probe training images (scored anyway): %s", len(missing), ", ".join(missing)
        )


def run_probes(
    model: torch.nn.Module,
    model_name: str,
    probe_stimuli: pa.Table,
    stimuli: pa.Table,
    images_dir: str | Path,
    preprocessing,
    *,
    alpha: float,
    batch_size: int,
    device: torch.device,
    workers: int = 0,
    memory_bytes: float = 8e9,
) -> tuple[pa.Table, pa.Table, dict]:
    """Probe ranks and accuracies of a model from the probe split and stimulus tables."""
    check_classes(model_name, probe_stimuli, stimuli, model.num_classes)

    def loader(table):
        return torch.utils.data.DataLoader(
            LabelledImages(table, images_dir, preprocessing),
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=device.type == "cuda",
        )

    result = fit_and_score(
        model,
        loader(probe_stimuli),
        loader(stimuli),
        alpha=alpha,
        device=device,
        memory_bytes=memory_bytes,
        progress=True,
    )
    images = stimuli.column("image").to_numpy()
    info = {
        "block_chunks": result.n_chunks,
        "probe_images": result.n_probe_images,
        "alpha": alpha,
        "device": str(device),
    }
    return ranks_table(images, result.ranks), accuracy_table(result.ranks), info
