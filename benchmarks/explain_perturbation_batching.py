"""Benchmark: the explainability perturbation test batched by kept count against one image at a time.

The original evaluated every (ordering, n, image) with its own forward (docs/method.md §4.13).
:func:`class_embedding.analyses.explain_perturbation.evaluate_curves` forwards, at each number n of kept
tokens, every (ordering, image) pair together (all have n + 1 tokens), in chunks of
``explainability.tokens_per_batch`` tokens; :func:`~class_embedding.analyses.explain_perturbation.one_at_a_time`
is the one-image loop. Both run on the [CLS] demo models of ``config.yaml`` (random weights,
in-memory random images; one importance ordering in both directions and ten seeded random
permutations, built as the rule builds its curves), every 7th n from 1 to N, alternating the two
so that a noisy shared machine slows both alike. The ratio is loop time / batched time in the
same run; their per-image correctness must be identical.

    python benchmarks/explain_perturbation_batching.py [--quick] [--output benchmarks/results/explain_perturbation_batching.json]
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import benchmark_common  # puts the workflow package on the path
import numpy as np
import torch
import yaml

from class_embedding.analyses import explain_perturbation
from class_embedding.models import building

# (images, timed repetitions of each variant) per setting
SETTINGS = {"default": (64, 2), "quick": (8, 1)}
RANDOM_PERMUTATIONS = 10  # as the rule's default
KEPT_STEP = 7  # every 7th n (plus N − 1 and N): the one-image loop over all n of 196 tokens takes too long
DEFAULT_TOKENS_PER_BATCH = 32768  # the schema default


def benchmark_model(
    name: str, spec: dict, n_images: int, repeats: int, device, tokens_per_batch: int, seed: int
) -> dict:
    torch.manual_seed(seed)
    model = building.build_model(spec, name).to(device).eval()
    n_tokens = model.patch_embed.num_patches
    size = model.patch_embed.img_size
    images = torch.randn(n_images, 3, *size, generator=torch.Generator().manual_seed(seed))
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, spec["num_classes"], n_images)
    orderings = {"grads": explain_perturbation.importance_ordering(rng.random((n_images, n_tokens)))}
    curves = explain_perturbation.build_curves(
        orderings, explain_perturbation.random_orderings(n_tokens, RANDOM_PERMUTATIONS, seed), n_images
    )
    kept = explain_perturbation.kept_counts(n_tokens, KEPT_STEP)

    def batched():
        return explain_perturbation.evaluate_curves(
            model, images, targets, curves, kept, tokens_per_batch=tokens_per_batch, device=device
        )

    def single():
        return explain_perturbation.one_at_a_time(model, images, targets, curves, kept, device)

    times = {"batched": [], "one_at_a_time": []}
    for _ in range(repeats):
        seconds, batched_result = benchmark_common.timed(batched, device)
        times["batched"].append(seconds)
        seconds, single_result = benchmark_common.timed(single, device)
        times["one_at_a_time"].append(seconds)
        if not np.array_equal(batched_result, single_result):
            raise AssertionError(f"{name}: batched and one-at-a-time correctness differ")
    median = {key: statistics.median(values) for key, values in times.items()}
    forwards = len(curves) * len(kept) * n_images
    return {
        "model": name,
        "n_image_tokens": int(n_tokens),
        "n_images": n_images,
        "curves": len(curves),
        "kept_counts": len(kept),
        "single_forwards": forwards,
        "seconds": times,
        "median_seconds": median,
        "ratio": median["one_at_a_time"] / median["batched"],
        "identical": True,
    }


def main() -> None:
    args = benchmark_common.argument_parser(
        __doc__, "explain_perturbation_batching", "few images, one repetition: a smoke run"
    ).parse_args()
    device = benchmark_common.prepare(args)
    config = yaml.safe_load(Path(args.config).read_text())
    explain = config.get("explainability") or {}
    tokens_per_batch = explain.get("tokens_per_batch", DEFAULT_TOKENS_PER_BATCH)
    n_images, repeats = SETTINGS["quick" if args.quick else "default"]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results = []
    for name, spec in config["models"].items():
        if not spec["class_token"]:
            continue
        result = benchmark_model(name, spec, n_images, repeats, device, tokens_per_batch, config.get("seed", 0))
        print(
            f"{name}: {result['curves']} curves × {result['kept_counts']} kept counts × {n_images} images: "
            f"batched {result['median_seconds']['batched']:.2f} s, one at a time "
            f"{result['median_seconds']['one_at_a_time']:.2f} s → {result['ratio']:.1f}×",
            flush=True,
        )
        results.append(result)
    record = {
        "benchmark": "explain_perturbation_batching",
        **benchmark_common.machine_record(device),
        "tokens_per_batch": tokens_per_batch,
        "load_average_start": load_before,
        "load_average_end": os.getloadavg()[0],
        "wall_seconds": time.perf_counter() - started,
        "results": results,
        "headline": [
            {
                "metric": f"explainability perturbation curves batched by kept count / one at a time, {r['model']} "
                f"({r['n_image_tokens']} tokens, {device})",
                "measured": f"{r['ratio']:.1f}× (identical correctness)",
                "goal": "batching pays off",
            }
            for r in results
        ],
    }
    output = benchmark_common.write_record(record, args.output)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
