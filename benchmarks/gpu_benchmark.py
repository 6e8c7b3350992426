"""Benchmark for the GPU the paper run needs: images per second of the workflow's GPU steps.

1. Extraction, preloaded tensors: ViT-B/16 and ViT-B/32 shapes (random weights) at batch 64 and
   256, float32 and with TF32 matmuls allowed: the bare forward, and the forward with the lens as
   ``extract_shard`` runs it (audit and copies to the host included), incremental and direct projection.
2. Extraction from JPEG files: ``extract_shard`` itself (DataLoader with workers, decoding, resize,
   Parquet writing) on random JPEGs of ImageNet's typical size in a temporary folder, and the
   DataLoader alone, to tell a loading-bound run from a GPU-bound one.
3. Explainability perturbation curves (``evaluate_curves``, the rule's curve set and every kept
   count, ViT-B/32 shape) and streaming ridge probes (``probes.fit_and_score``, every (layer,
   token) pair, ViT-B/32 shape): seconds per image.

``--quick`` runs tiny shapes on the CPU in seconds (the test suite does); ``benchmarks/gpu.sh`` is
the entry point.

    python benchmarks/gpu_benchmark.py [--quick] [--output benchmarks/results/gpu.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import benchmark_common  # puts the workflow package on the path
import extraction_overhead
import numpy as np
import timm
import torch

from class_embedding.analyses import explain_perturbation, probes
from class_embedding.extraction import lens, shards
from class_embedding.models import preprocessing

SQUASH_224 = extraction_overhead.SQUASH_224
FULL = {
    "shapes": {
        "vit_b16": ("vit_base_patch16_224", {}),
        "vit_b32": ("vit_base_patch32_224", {}),
    },
    "image_size": 224,
    "batches": [64, 256],
    "repeats": 5,
    "jpeg": {"images": 2048, "size": (375, 500), "batch": 256, "workers": 8, "shape": "vit_b16"},
    "explain": {"shape": "vit_b32", "images": 8, "random_permutations": 10, "kept_step": 1, "tokens_per_batch": 131072},
    "probes": {"shape": "vit_b32", "probe_images": 512, "stimuli": 256, "batch": 128, "memory_gb": 24},
}
TINY = {"img_size": 32, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 10}
QUICK = {
    "shapes": {
        "vit_b16": ("vit_base_patch16_224", {**TINY, "patch_size": 8}),
        "vit_b32": ("vit_base_patch32_224", {**TINY, "patch_size": 16}),
    },
    "image_size": 32,
    "batches": [4, 8],
    "repeats": 2,
    "jpeg": {"images": 10, "size": (40, 48), "batch": 4, "workers": 2, "shape": "vit_b16"},
    "explain": {"shape": "vit_b16", "images": 2, "random_permutations": 2, "kept_step": 5, "tokens_per_batch": 4096},
    "probes": {"shape": "vit_b32", "probe_images": 20, "stimuli": 8, "batch": 8, "memory_gb": 0.5},
}


def parse_args() -> argparse.Namespace:
    parser = benchmark_common.argument_parser(
        __doc__, "gpu", "tiny shapes on the CPU in seconds (the test suite's smoke run)", with_config=False
    )
    args = parser.parse_args()
    if args.quick and args.device == "auto":
        args.device = "cpu"
    return args


def build(settings: dict, shape: str, device: torch.device) -> torch.nn.Module:
    arch, kwargs = settings["shapes"][shape]
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, **kwargs).eval().to(device)


def set_tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def images_per_second(step, batch: int, repeats: int) -> float:
    step()  # warm-up (kernel selection, allocator)
    return batch / statistics.median(step() for _ in range(repeats))


def extraction_preloaded(settings: dict, device: torch.device) -> list[dict]:
    rows = []
    size = settings["image_size"]
    for shape in settings["shapes"]:
        model = build(settings, shape, device)
        hooks = {p: lens.ClassEmbeddingLens(model, projection=p) for p in ("incremental", "direct")}
        for batch in settings["batches"]:
            x = torch.randn(batch, 3, size, size, device=device)
            targets = torch.randint(model.num_classes, (batch,), device=device)
            for precision in ("float32", "tf32"):
                set_tf32(precision == "tf32")
                row = {"shape": shape, "batch": batch, "precision": precision}
                row["bare_images_per_s"] = images_per_second(
                    lambda: extraction_overhead.bare_step(model, x, device), batch, settings["repeats"]
                )
                for projection, lens_hooks in hooks.items():
                    row[f"lens_{projection}_images_per_s"] = images_per_second(
                        lambda: extraction_overhead.lens_step(model, lens_hooks, x, targets, device),
                        batch,
                        settings["repeats"],
                    )
                    row[f"lens_{projection}_over_bare"] = (
                        row["bare_images_per_s"] / row[f"lens_{projection}_images_per_s"]
                    )
                print(f"[extraction] {row}", file=sys.stderr)
                rows.append(row)
    set_tf32(False)
    return rows


def extraction_from_jpeg(settings: dict, device: torch.device) -> dict:
    spec = settings["jpeg"]
    model = build(settings, spec["shape"], device)
    size = settings["image_size"]
    squash = {**SQUASH_224, "resize": [size, size]}
    with tempfile.TemporaryDirectory(prefix="gpu_benchmark_") as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        stimuli = extraction_overhead.write_stimuli(
            tmp / "images", spec["images"], model.num_classes, spec["size"], np.random.default_rng(0)
        )
        writing_s = time.perf_counter() - started
        dataset = shards.StimulusImages(
            stimuli.column("file").to_pylist(), tmp / "images", preprocessing.Preprocessing(squash)
        )
        loader = torch.utils.data.DataLoader(dataset, batch_size=spec["batch"], num_workers=spec["workers"])
        loading_s, _ = benchmark_common.timed(lambda: sum(len(b) for b in loader), device)
        extract_s, _ = benchmark_common.timed(
            lambda: shards.extract_shard(
                model,
                stimuli,
                tmp / "images",
                preprocessing.Preprocessing(squash),
                tmp / "shard",
                batch_size=spec["batch"],
                device=device,
                workers=spec["workers"],
                description="gpu benchmark",
            ),
            device,
        )
    n = len(stimuli)
    row = {
        **{k: v for k, v in spec.items() if k != "size"},
        "jpeg_size": list(spec["size"]),
        "jpeg_writing_s": writing_s,
        "dataloader_only_images_per_s": n / loading_s,
        "extract_shard_images_per_s": n / extract_s,
    }
    print(f"[jpeg] {row}", file=sys.stderr)
    return row


def explain_curves(settings: dict, device: torch.device) -> dict:
    spec = settings["explain"]
    model = build(settings, spec["shape"], device)
    n_images, n_tokens = spec["images"], model.patch_embed.num_patches
    size = settings["image_size"]
    rng = np.random.default_rng(0)
    images = torch.randn(n_images, 3, size, size, generator=torch.Generator().manual_seed(0))
    targets = rng.integers(0, model.num_classes, n_images)
    orderings = {"grads": explain_perturbation.importance_ordering(rng.random((n_images, n_tokens)))}
    curves = explain_perturbation.build_curves(
        orderings, explain_perturbation.random_orderings(n_tokens, spec["random_permutations"], 0), n_images
    )
    kept = explain_perturbation.kept_counts(n_tokens, spec["kept_step"])
    seconds, _ = benchmark_common.timed(
        lambda: explain_perturbation.evaluate_curves(
            model, images, targets, curves, kept, tokens_per_batch=spec["tokens_per_batch"], device=device
        ),
        device,
    )
    row = {
        **spec,
        "curves": len(curves),
        "kept_counts": len(kept),
        "forwards_per_image": len(curves) * len(kept),
        "seconds": seconds,
        "seconds_per_image": seconds / n_images,
        "seconds_per_image_and_curve": seconds / n_images / len(curves),
    }
    print(f"[explain] {row}", file=sys.stderr)
    return row


def streaming_probes(settings: dict, device: torch.device) -> dict:
    spec = settings["probes"]
    model = build(settings, spec["shape"], device)
    size, batch = settings["image_size"], spec["batch"]
    generator = torch.Generator().manual_seed(0)
    probe_images = torch.randn(spec["probe_images"], 3, size, size, generator=generator)
    probe_labels = torch.arange(spec["probe_images"]) % model.num_classes
    stimuli = torch.randn(spec["stimuli"], 3, size, size, generator=generator)
    stimulus_labels = torch.arange(spec["stimuli"]) % model.num_classes

    def batches(images, labels):
        return [(images[i : i + batch], labels[i : i + batch]) for i in range(0, len(labels), batch)]

    seconds, _ = benchmark_common.timed(
        lambda: probes.fit_and_score(
            model,
            batches(probe_images, probe_labels),
            batches(stimuli, stimulus_labels),
            alpha=1.0,
            device=device,
            memory_bytes=spec["memory_gb"] * 1e9,
        ),
        device,
    )
    n_tokens, dim, num_classes = probes.model_shape(model)
    row = {
        **spec,
        "probes": 3 * len(model.blocks) * n_tokens,
        "seconds": seconds,
        # Includes the fixed cost of the solves, so this overstates the per-image cost of larger runs.
        "seconds_per_image": seconds / (spec["probe_images"] + spec["stimuli"]),
    }
    print(f"[probes] {row}", file=sys.stderr)
    return row


def main() -> None:
    args = parse_args()
    device = benchmark_common.prepare(args)
    settings = QUICK if args.quick else FULL
    started = time.perf_counter()
    record = {
        "benchmark": "gpu",
        **benchmark_common.machine_record(device),
        "quick": args.quick,
        "timm": timm.__version__,
    }
    record["extraction_preloaded"] = extraction_preloaded(settings, device)
    record["extraction_from_jpeg"] = extraction_from_jpeg(settings, device)
    record["explain_perturbation_curves"] = explain_curves(settings, device)
    record["streaming_probes"] = streaming_probes(settings, device)
    record["wall_s"] = time.perf_counter() - started
    print(f"wrote {benchmark_common.write_record(record, args.output)} ({record['wall_s']:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    main()
