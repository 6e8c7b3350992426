"""Check: the lens's incremental head projection against the direct one, on the same forwards.

For the demo's trained models and their random twins (checkpoints and stimuli of a finished demo
run, read only; skipped when absent) and a ViT-B/16-shaped model with random weights: how many
ranks and top-5 lists differ between ``ClassEmbeddingLens(model, projection="incremental")`` and
``projection="direct"``, whether every difference sits at a near-tie of the direct logits (two
classes within float32 rounding of each other), the largest logit difference, and, for the demo,
the same counts against the tables the demo run stored. Float32 drift: per block, the error of
both paths' [CLS]-stream logits against a float64 projection of the same float32 states.

    python benchmarks/incremental_projection_check.py [--demo-results /work/demo-run/results] [--images 16]
"""

from __future__ import annotations

import sys
from pathlib import Path

import benchmark_common  # puts the workflow package on the path
import numpy as np
import pyarrow.parquet as pq
import timm
import torch
import yaml

from class_embedding import results_layout as layout
from class_embedding.extraction import lens, projection, shards
from class_embedding.models import building, checkpoints, preprocessing

# Two logits closer than this (relative to the largest logit) may swap under float32 rounding.
NEAR_TIE = 1e-5


def run_lens(model, batches, projection: str) -> dict[str, lens.LayerReduction]:
    hooks = lens.ClassEmbeddingLens(model, projection=projection)
    parts: dict[str, list] = {}
    with hooks, torch.inference_mode():
        for images, targets in batches:
            hooks.set_targets(targets)
            model(images)
            for name, reduction in hooks.record.layers.items():
                parts.setdefault(name, []).append(reduction)
    return {
        name: lens.LayerReduction(*(torch.cat([getattr(p, f) for p in ps]) for f in ("rank", "logit", "top5")))
        for name, ps in parts.items()
    }


def direct_logits(model, batches) -> dict[str, torch.Tensor]:
    """Every state's full logits (direct projection), to tell near-ties from real differences."""
    captured: dict[str, list] = {}
    handles = []
    for b, block in enumerate(model.blocks):
        attn_update, mlp_update = lens.residual_update_modules(block)
        for name, module in ((f"attn_{b}", attn_update), (f"mlp_{b}", mlp_update), (f"hs_{b}", block)):

            def keep(module, inputs, output, name=name):
                captured.setdefault(name, []).append(projection.project(model, output))

            handles.append(module.register_forward_hook(keep))
    with torch.inference_mode():
        for images, _ in batches:
            model(images)
    for handle in handles:
        handle.remove()
    return {name: torch.cat(parts) for name, parts in captured.items()}


def compare(a: dict, b: dict, logits: dict, targets: torch.Tensor) -> dict:
    """Counts of differing ranks / top-5 lists between two sets of reductions (b may be stored
    tables as numpy), and how many of them are at near-ties of the direct logits."""
    rank_diff = rank_tie = top5_diff = top5_tie = cells = 0
    max_logit = 0.0
    for name, full in logits.items():
        scale = NEAR_TIE * max(full.abs().max().item(), 1.0)
        target_logit = full.gather(-1, targets.view(-1, 1, 1).expand(*full.shape[:2], 1))
        tied_target = ((full - target_logit).abs() <= scale).sum(-1) > 1
        top6 = full.topk(lens.TOP_K + 1, dim=-1).values
        tied_top5 = (top6.diff(dim=-1).abs() <= scale).any(-1)
        ranks = a[name].rank.long() != torch.as_tensor(b[name].rank).long()
        top5 = (a[name].top5.long() != torch.as_tensor(b[name].top5).long()).any(-1)
        rank_diff += int(ranks.sum())
        rank_tie += int((ranks & tied_target).sum())
        top5_diff += int(top5.sum())
        top5_tie += int((top5 & tied_top5).sum())
        cells += ranks.numel()
        max_logit = max(max_logit, (a[name].logit - torch.as_tensor(b[name].logit)).abs().max().item())
    return {
        "cells": cells,
        "ranks_differ": rank_diff,
        "ranks_differ_at_near_ties": rank_tie,
        "top5_differ": top5_diff,
        "top5_differ_at_near_ties": top5_tie,
        "max_abs_logit_difference": max_logit,
    }


def drift(model, batches, incremental: dict, direct: dict, targets) -> list[dict]:
    """Per block: largest error of the target logit of each path against a float64 projection of
    the same float32 stream."""
    states: dict[int, list] = {}
    handles = [
        block.register_forward_hook(lambda m, i, o, b=b: states.setdefault(b, []).append(o.double()))
        for b, block in enumerate(model.blocks)
    ]
    with torch.inference_mode():
        for images, _ in batches:
            model(images)
    for handle in handles:
        handle.remove()
    model64 = model.double()
    rows = []
    with torch.inference_mode():
        for b in range(len(model.blocks)):
            # project() computes in float32: the reference is its float64 counterpart.
            normed = model64.fc_norm(model64.norm(torch.cat(states[b])))
            reference = normed @ model64.head.weight.T + model64.head.bias
            target = reference.gather(-1, targets.view(-1, 1, 1).expand(*reference.shape[:2], 1)).squeeze(-1)
            rows.append(
                {
                    "block": b,
                    "direct_max_abs_error": (direct[f"hs_{b}"].logit.double() - target).abs().max().item(),
                    "incremental_max_abs_error": (incremental[f"hs_{b}"].logit.double() - target).abs().max().item(),
                    "logit_scale": target.abs().max().item(),
                }
            )
    model.float()
    return rows


def check(model, batches) -> tuple[dict, dict, dict, dict]:
    targets = torch.cat([t for _, t in batches])
    incremental = run_lens(model, batches, "incremental")
    direct = run_lens(model, batches, "direct")
    logits = direct_logits(model, batches)
    return incremental, direct, {"incremental_vs_direct": compare(incremental, direct, logits, targets)}, logits


def demo_batches(workdir: Path, spec: dict, batch: int) -> list:
    stimuli = pq.read_table(workdir / layout.stimuli_table(spec["dataset"]))
    dataset = shards.StimulusImages(
        stimuli.column("file").to_pylist(),
        workdir / layout.dataset_dir(spec["dataset"]) / "ImageNetS919",
        preprocessing.Preprocessing(spec["preprocessing"]),
    )
    images = torch.stack([dataset[i] for i in range(len(dataset))])
    targets = torch.from_numpy(stimuli.column("class_index").to_numpy().astype(np.int64))
    return [(images[i : i + batch], targets[i : i + batch]) for i in range(0, len(images), batch)]


def stored_tables(paths: dict, names) -> dict:
    out = {}
    for name in names:
        table = pq.read_table(paths[name])
        n_tokens = int(table.column("token").to_numpy().max()) + 1
        out[name] = lens.LayerReduction(
            rank=torch.from_numpy(table.column("rank").to_numpy().reshape(-1, n_tokens)),
            logit=torch.from_numpy(table.column("logit").to_numpy().reshape(-1, n_tokens)),
            top5=torch.from_numpy(
                np.stack(table.column("top5").to_numpy(zero_copy_only=False)).reshape(-1, n_tokens, lens.TOP_K)
            ),
        )
    return out


def main() -> None:
    parser = benchmark_common.argument_parser(__doc__, "incremental_projection_check", "ViT-B/16 on 2 images only")
    parser.add_argument("--demo-results", default="/work/demo-run/results", help="results/ of a finished demo run")
    parser.add_argument("--images", type=int, default=16, help="random images for the ViT-B/16 shape")
    args = parser.parse_args()
    device = benchmark_common.prepare(args)
    if device.type != "cpu":
        sys.exit("run this check on the CPU: it compares float32 paths, and the demo ran on the CPU")
    torch.manual_seed(0)
    record = {"benchmark": "incremental_projection_check", **benchmark_common.machine_record(device), "models": {}}

    results = Path(args.demo_results)
    workdir = results.parent  # the run's working directory: layout paths start with results/
    config = yaml.safe_load(Path(args.config).read_text())
    for name, spec in (config.get("models") or {}).items():
        for variant in [name] + ([f"{name}_random"] if spec.get("random_twin") else []):
            checkpoint = workdir / layout.checkpoint(variant)
            if not checkpoint.is_file():
                print(f"[{variant}] no checkpoint at {checkpoint}: skipped", file=sys.stderr)
                continue
            model = checkpoints.load_checkpoint(building.build_model(spec, name), checkpoint, variant)
            batches = demo_batches(workdir, spec, 64)
            incremental, direct, entry, logits = check(model, batches)
            targets = torch.cat([t for _, t in batches])
            tables = {name: workdir / path for name, path in layout.layer_tables(variant, spec["num_blocks"]).items()}
            if all(path.is_file() for path in tables.values()):
                entry["incremental_vs_stored_tables"] = compare(
                    incremental, stored_tables(tables, logits), logits, targets
                )
                entry["direct_vs_stored_tables"] = compare(direct, stored_tables(tables, logits), logits, targets)
            record["models"][variant] = entry
            print(f"[{variant}] {entry}", file=sys.stderr)

    n_images = 2 if args.quick else args.images
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    images = torch.randn(n_images, 3, 224, 224)
    targets = torch.randint(1000, (n_images,))
    batches = [(images[i : i + 8], targets[i : i + 8]) for i in range(0, n_images, 8)]
    incremental, direct, entry, _ = check(model, batches)
    entry["float32_drift_per_block"] = drift(model, batches, incremental, direct, targets)
    record["models"]["vit_b16_random"] = entry
    print(f"[vit_b16_random] {entry}", file=sys.stderr)
    print(f"wrote {benchmark_common.write_record(record, args.output)}", file=sys.stderr)


if __name__ == "__main__":
    main()
