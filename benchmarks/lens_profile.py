"""Where the lens spends its time: each step of the per-state reduction, timed inside the forward.

A subclass of :class:`class_embedding.extraction.lens.ClassEmbeddingLens` repeats ``_reduce`` and the
memory hook step by step with a timer around each step (the steps mirror lens.py; keep them in
sync when it changes), then micro-benchmarks a few alternatives on the same tensors. CPU-oriented:
on CUDA the per-step timers would need synchronisation and mean little.

    python benchmarks/lens_profile.py [--batch 8] [--repeats 5] [--output benchmarks/results/lens_profile.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import benchmark_common  # puts the workflow package on the path
import timm
import torch

from class_embedding.extraction import incremental_projection, lens, projection, selection
from class_embedding.models import building


class TimedLens(lens.ClassEmbeddingLens):
    """The lens with a stopwatch around every step of its hooks (seconds summed per forward)."""

    def __init__(self, model, projection="incremental"):
        super().__init__(model, projection)
        self.seconds: dict[str, float] = defaultdict(float)
        self.samples: dict[str, torch.Tensor] = {}

    def _step(self, label: str, fn):
        start = time.perf_counter()
        value = fn()
        self.seconds[label] += time.perf_counter() - start
        return value

    def _reduce(self, name, states, is_last=False):
        logits = self._step(f"projection ({self.projection})", lambda: self._logits(name, states, is_last))
        targets = self.targets.view(-1, 1).expand(logits.shape[:2])
        rank, logit, top5 = self._step(
            "rank, logit, top-5 classes (selection)", lambda: selection.rank_logit_top5(logits, targets)
        )
        self.record.layers[name] = lens.LayerReduction(rank, logit, top5, self.record.memory_top5.pop(name, None))
        if name.startswith("mlp") and "states" not in self.samples:
            self.samples["states"], self.samples["logits"] = states, logits

    def _memory_hook(self, name, from_input):
        kind = name.split("_")[0]

        def hook(module, inputs, output=None):
            coefficients = inputs[0] if from_input else output
            self.samples.setdefault(f"{kind} memories", coefficients)
            self.record.memory_top5[name] = self._step(f"memory top-5 ({kind})", lambda: selection.top5(coefficients))

        return hook

    def _state_hook(self, name, keep_last=False):
        inner = super()._state_hook(name, keep_last)

        def hook(module, inputs, output):
            start = time.perf_counter()
            inner(module, inputs, output)
            self.seconds["(whole state hooks)"] += time.perf_counter() - start

        return hook


def timed(fn, repeats: int) -> float:
    """Fastest of ``repeats`` calls: on a shared machine the minimum is the least disturbed estimate."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def alternatives(model, samples: dict, targets: torch.Tensor, repeats: int) -> dict:
    """Fastest seconds of one call of each step the lens runs and of the torch ops it replaced, on
    captured tensors, and whether both give the same result there."""
    states, logits = samples["states"], samples["logits"]
    full_targets = targets.view(-1, 1).expand(logits.shape[:2])
    flat = states.reshape(-1, states.shape[-1])
    results = {}
    if incremental_projection.supports(model):
        head = incremental_projection.FoldedHead(model)
        raw = head.raw(states)
        results |= {
            "head matmul W_c·x (one per update)": timed(lambda: head.raw(states), repeats),
            "1/σ: inverse_deviation": timed(lambda: incremental_projection.inverse_deviation(flat, 1e-6), repeats),
            "1/σ: native_layer_norm": timed(
                lambda: torch.native_layer_norm(flat, flat.shape[-1:], None, None, 1e-6), repeats
            ),
            "scale and shift: logits from W_c·x": timed(lambda: head.logits(raw, states), repeats),
        }
    results |= {
        "direct projection: norm + addmm": timed(lambda: projection.project(model, states), repeats),
        "rank, logit, top-5: selection kernel": timed(lambda: selection.rank_logit_top5(logits, full_targets), repeats),
        "rank, logit, top-5: torch (sign-sum rank, gather, topk)": timed(
            lambda: selection.rank_logit_top5_torch(logits, full_targets), repeats
        ),
    }
    same = all(
        torch.equal(a, b)
        for a, b in zip(
            selection.rank_logit_top5(logits, full_targets), selection.rank_logit_top5_torch(logits, full_targets)
        )
    )
    for kind in ("attn", "mlp"):
        coefficients = samples[f"{kind} memories"]
        shape = tuple(coefficients.shape)
        results[f"memory top-5 ({kind}) {shape}: selection kernel"] = timed(
            lambda: selection.top5(coefficients), repeats
        )
        results[f"memory top-5 ({kind}) {shape}: torch.topk"] = timed(
            lambda: selection.top5_torch(coefficients), repeats
        )
        same = same and torch.equal(selection.top5(coefficients), selection.top5_torch(coefficients))
    results["(kernels identical to torch on these tensors)"] = same
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="vit_base_patch16_224", help="timm architecture, random weights")
    parser.add_argument("--config-model", default=None, help="profile this model of config.yaml instead of --arch")
    parser.add_argument("--config", default=str(benchmark_common.REPO / "config.yaml"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--projection", choices=("incremental", "direct"), default="incremental")
    parser.add_argument("--output", default=str(benchmark_common.RESULTS / "lens_profile.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.config_model:
        import yaml

        spec = yaml.safe_load(Path(args.config).read_text())["models"][args.config_model]
        model = building.build_model(spec, args.config_model)
        args.arch = args.config_model
    else:
        model = timm.create_model(args.arch, pretrained=False).eval()
    size = model.patch_embed.img_size
    x = torch.randn(args.batch, 3, *size)
    targets = torch.randint(model.num_classes, (args.batch,))

    def bare():
        with torch.inference_mode():
            model(x)

    hooks = TimedLens(model, args.projection)

    def with_lens():
        with hooks, torch.inference_mode():
            hooks.set_targets(targets)
            logits = model(x)
            start = time.perf_counter()
            lens.audit(model, hooks.record.last_state, logits, "profile")
            hooks.seconds["audit"] += time.perf_counter() - start

    bare()
    with_lens()
    bare_times, lens_times, steps = [], [], defaultdict(list)
    for _ in range(args.repeats):
        start = time.perf_counter()
        bare()
        bare_times.append(time.perf_counter() - start)
        hooks.seconds.clear()
        start = time.perf_counter()
        with_lens()
        lens_times.append(time.perf_counter() - start)
        for label, seconds in hooks.seconds.items():
            steps[label].append(seconds)
    bare_s = statistics.median(bare_times)
    lens_s = statistics.median(lens_times)
    per_step = {label: statistics.median(v) for label, v in steps.items()}

    with torch.inference_mode():
        alt = alternatives(model, hooks.samples, targets, max(args.repeats * 6, 20))
    n_blocks = len(model.blocks)

    print(
        f"{args.arch}, batch {args.batch}, {args.projection} projection, {torch.get_num_threads()} threads, "
        f"medians of {args.repeats}"
    )
    print(f"bare forward {bare_s:.3f} s, lens forward {lens_s:.3f} s, ratio {lens_s / bare_s:.2f}×\n")
    print("| step (summed over one forward) | s | % of bare forward |")
    print("|---|---|---|")
    for label, seconds in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"| {label} | {seconds:.3f} | {100 * seconds / bare_s:.1f} |")
    per_forward = f"× {3 * n_blocks} states or × {n_blocks} memories per forward"
    print(f"\n| alternative (fastest single call; {per_forward}) | ms |")
    print("|---|---|")
    for label, value in alt.items():
        print(f"| {label} | {value if isinstance(value, bool) else f'{1e3 * value:.2f}'} |")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "arch": args.arch,
                "batch": args.batch,
                "projection": args.projection,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "bare_median_s": bare_s,
                "lens_median_s": lens_s,
                "ratio": lens_s / bare_s,
                "steps_s_per_forward": per_step,
                "alternatives_s_per_call": alt,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
