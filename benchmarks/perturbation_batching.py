"""Benchmark: batched attention and token perturbations against one image at a time.

The original ran every perturbation with batch 1 in stimulus order (docs/method.md §4.9, §4.10). Here
:func:`class_embedding.analyses.perturbation.attention_perturbation` batches all images, and
:func:`~class_embedding.analyses.perturbation.token_perturbation` groups them by kept length. Both are
timed on the demo models of ``config.yaml`` (random weights, in-memory random images and random
class/context labels with the demo's ≈25% class tokens), once with the config's
``extraction.batch_size`` and once with batch size 1 (the one-image-at-a-time loop), alternating
the two so that a noisy shared machine slows both alike. The ratio is loop time / batched time
measured in the same run; the ranks of both runs must be identical. ``bare_forward`` times the
unmodified model alone the same two ways: the ceiling of what batching can buy on the machine.

Goal: ratio ≥ 10× on CPU.

    python benchmarks/perturbation_batching.py [--quick] [--output benchmarks/results/perturbation_batching.json]
"""

from __future__ import annotations

import statistics
from pathlib import Path

import benchmark_common  # puts the workflow package on the path
import numpy as np
import torch
import yaml

from class_embedding.analyses import perturbation
from class_embedding.analyses.perturbation_masks import ATTENTION_TYPES, MASK_TYPES, kept_token_mask
from class_embedding.models import building

RATIO_GOAL = 10.0
CLASS_TOKEN_FRACTION = 0.25  # share of class-labelled tokens in the demo's token labels
# (images, timed repetitions of each variant) per setting
SETTINGS = {"default": (150, 5), "quick": (32, 1)}


def cls_models(config: dict) -> dict[str, dict]:
    return {name: spec for name, spec in config["models"].items() if spec["class_token"]}


def compare(run, batch_size: int, repeats: int, device: torch.device) -> dict:
    """Median times of ``run(batch_size)`` and ``run(1)``, alternated after one warm-up each."""
    run(batch_size), run(1)
    batched, single = [], []
    for _ in range(repeats):
        seconds, batched_result = benchmark_common.timed(lambda: run(batch_size), device)
        batched.append(seconds)
        seconds, single_result = benchmark_common.timed(lambda: run(1), device)
        single.append(seconds)
    if batched_result is not None and not batched_result.tokens.column("rank").equals(
        single_result.tokens.column("rank")
    ):
        raise RuntimeError("batched and one-image-at-a-time ranks differ")
    batched_s, single_s = statistics.median(batched), statistics.median(single)
    return {"batched_s": batched_s, "one_at_a_time_s": single_s, "ratio": single_s / batched_s}


def main() -> None:
    args = benchmark_common.argument_parser(
        __doc__, "perturbation_batching", "few images, one repetition: a smoke run"
    ).parse_args()
    device = benchmark_common.prepare(args)
    n_images, repeats = SETTINGS["quick" if args.quick else "default"]
    config = yaml.safe_load(Path(args.config).read_text())
    batch_size = int(config["extraction"]["batch_size"])
    rng = np.random.default_rng(0)
    torch.manual_seed(0)

    results = []
    for name, spec in cls_models(config).items():
        model = building.build_model(spec, name).to(device)
        height, width = spec["preprocessing"]["resize"]
        images = list(torch.randn(n_images, 3, height, width))
        stimuli = np.arange(n_images)
        targets = rng.integers(0, spec["num_classes"], n_images)
        class_mask = rng.random((n_images, spec["token_grid"] ** 2)) < CLASS_TOKEN_FRACTION
        cases = {"bare_forward": None} | {f"attn_{kind}": kind for kind in ATTENTION_TYPES}
        cases |= {f"tokens_no_{mask}": mask for mask in MASK_TYPES}
        for case, kind in cases.items():
            if kind is None:
                # The ceiling: the unmodified model alone, no hooks, no lens, no data loading.
                stacked = torch.stack(images).to(device)

                def run(size):
                    with torch.inference_mode():
                        for chunk in stacked.split(size):
                            model(chunk)
            elif case.startswith("attn_"):

                def run(size, kind=kind):
                    return perturbation.attention_perturbation(
                        model, images, stimuli, targets, kind, batch_size=size, device=device
                    )
            else:
                keep = kept_token_mask(class_mask, kind)

                def run(size, keep=keep):
                    return perturbation.token_perturbation(
                        model, images, stimuli, targets, keep, batch_size=size, device=device
                    )

            row = {"model": name, "perturbation": case, "n_images": n_images, "batch_size": batch_size}
            row |= compare(run, batch_size, repeats, device)
            results.append(row)
            print(
                f"{name:14s} {case:22s} batched {row['batched_s']:7.3f} s   one at a time "
                f"{row['one_at_a_time_s']:7.3f} s   ratio {row['ratio']:6.1f}x",
                flush=True,
            )

    worst = min(row["ratio"] for row in results if row["perturbation"] != "bare_forward")
    print(f"worst ratio {worst:.1f}x (goal >= {RATIO_GOAL:.0f}x): {'met' if worst >= RATIO_GOAL else 'NOT met'}")
    record = {
        "benchmark": "perturbation_batching",
        **benchmark_common.machine_record(device),
        "setting": "quick" if args.quick else "default",
        "ratio_goal": RATIO_GOAL,
        "worst_ratio": worst,
        "results": results,
    }
    output = benchmark_common.write_record(record, args.output)
    print(f"written {output}")


if __name__ == "__main__":
    main()
