"""Benchmark: streaming ridge probes against the original's per-(layer, token) re-extraction.

The original (docs/method.md §4.14, §7.23) fits one probe per (layer, token): for each pair it runs the
network over all probe images and all stimuli to extract that one token's features, fits
scikit-learn ``Ridge(alpha=1, solver="lsqr")`` on the ±1 targets and ranks the stimuli's
correct class. :func:`class_embedding.analyses.probes.fit_and_score` instead accumulates every pair's
sufficient statistics in one pass over the probe images (block chunks within a memory budget),
solves them in closed form and scores every pair in one pass over the stimuli.

Both run in one process on the same model (random weights) and the same in-memory random images
and labels. The streaming side runs completely (every layer and token). The original's loop is
timed on ``--pairs`` (layer, token) pairs spread over the layers and extrapolated linearly to all
pairs (its cost per pair does not depend on the pair: each is a full forward over both image
sets plus one fit); the ratio is extrapolated original time / streaming time. The measured pairs'
top-1 accuracies of both methods and the share of equal ranks are reported side by side (lsqr
stops at a tolerance, so ranks can differ slightly from the exact solution). Labels follow the
paper's design: 10 probe images per class, stimuli of the same classes.

    python benchmarks/streaming_probes.py [--quick] [--output benchmarks/results/streaming_probes.json]
"""

from __future__ import annotations

import argparse
import os

import benchmark_common  # puts the workflow package on the path
import numpy as np
import torch

from class_embedding.analyses import probes
from class_embedding.extraction import lens

SHAPES = {
    # name: timm architecture and keyword arguments, image size
    "vit_b_32": ("vit_base_patch32_224", {}, 224),
    "demo_vit_g7": (
        "vit_base_patch16_224",
        {"img_size": 56, "patch_size": 8, "embed_dim": 96, "depth": 6, "num_heads": 4, "num_classes": 34},
        56,
    ),
}
# (probe images, stimuli, original pairs timed) per setting
PER_CLASS = 10
SETTINGS = {"default": ("vit_b_32", 100, 50, 3), "quick": ("demo_vit_g7", 64, 32, 3)}


def parse_args() -> argparse.Namespace:
    parser = benchmark_common.argument_parser(
        __doc__, "streaming_probes", "demo-sized model, few images: a smoke run", with_config=False
    )
    parser.add_argument(
        "--model", choices=sorted(SHAPES), help="model shape (default: vit_b_32, demo_vit_g7 with --quick)"
    )
    parser.add_argument("--probe-images", type=int, help="probe training images")
    parser.add_argument("--stimuli", type=int, help="scored images")
    parser.add_argument("--pairs", type=int, help="(layer, token) pairs of the original loop to time")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--memory-gb", type=float, default=4.0, help="budget of the probe statistics")
    return parser.parse_args()


def batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int):
    return [(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, len(labels), batch_size)]


def token_features(model, name: str, token: int, data, device) -> np.ndarray:
    """The original's extraction: a full forward over every image, keeping one token of one layer."""
    kind, block = name.split("_")
    block = int(block)
    if kind == "hs":
        module = model.blocks[block]
    else:
        module = lens.residual_update_modules(model.blocks[block])[kind == "mlp"]
    kept = []
    handle = module.register_forward_hook(lambda m, i, output: kept.append(output[:, token].double().cpu()))
    try:
        with torch.inference_mode():
            for images, _ in data:
                model(images.to(device))
    finally:
        handle.remove()
    return torch.cat(kept).numpy()


def original_pair(model, name, token, probe_data, stimulus_data, probe_labels, stimulus_labels, num_classes, device):
    from sklearn.linear_model import Ridge

    x_train = token_features(model, name, token, probe_data, device)
    targets = -np.ones((len(probe_labels), num_classes))
    targets[np.arange(len(probe_labels)), probe_labels] = 1
    ridge = Ridge(alpha=1.0, solver="lsqr").fit(x_train, targets)
    scores = ridge.predict(token_features(model, name, token, stimulus_data, device))
    # The original's rank: position of the correct class in a descending sort.
    order = np.argsort(scores, axis=1)[:, ::-1]
    return np.argmax(order == stimulus_labels[:, None], axis=1)


def main() -> None:
    args = parse_args()
    device = benchmark_common.prepare(args)
    default_model, n_probe, n_stimuli, n_pairs = SETTINGS["quick" if args.quick else "default"]
    shape = args.model or default_model
    n_probe, n_stimuli, n_pairs = args.probe_images or n_probe, args.stimuli or n_stimuli, args.pairs or n_pairs

    import timm

    arch, kwargs, size = SHAPES[shape]
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **kwargs).eval().to(device)
    n_tokens, dim, num_classes = probes.model_shape(model)
    generator = torch.Generator().manual_seed(0)
    # As in the paper: 10 probe images per class (classes drawn at random), stimuli of the same
    # classes; a class without probe images would score a constant and tie with every other such class.
    classes = torch.randperm(num_classes, generator=generator)[: max(1, min(num_classes, n_probe // PER_CLASS))]
    probe_images = torch.randn(n_probe, 3, size, size, generator=generator)
    probe_labels = classes[torch.arange(n_probe) % len(classes)]
    stimuli = torch.randn(n_stimuli, 3, size, size, generator=generator)
    stimulus_labels = classes[torch.randint(0, len(classes), (n_stimuli,), generator=generator)]
    probe_data = batches(probe_images, probe_labels, args.batch_size)
    stimulus_data = batches(stimuli, stimulus_labels, args.batch_size)
    load_start = os.getloadavg()[0]

    streaming_s, result = benchmark_common.timed(
        lambda: probes.fit_and_score(
            model, probe_data, stimulus_data, alpha=1.0, device=device, memory_bytes=args.memory_gb * 1e9
        ),
        device,
    )

    layers = list(result.ranks)
    all_pairs = len(layers) * n_tokens
    picks = np.linspace(0, all_pairs - 1, n_pairs).round().astype(int)
    pairs = [(layers[p // n_tokens], int(p % n_tokens)) for p in picks]
    per_pair, agreement = [], []
    for name, token in pairs:
        seconds, ranks = benchmark_common.timed(
            lambda: original_pair(
                model,
                name,
                token,
                probe_data,
                stimulus_data,
                probe_labels.numpy(),
                stimulus_labels.numpy(),
                num_classes,
                device,
            ),
            device,
        )
        per_pair.append(seconds)
        streamed = result.ranks[name][:, token]
        agreement.append(
            {
                "layer": name,
                "token": token,
                "top1_original": float(np.mean(ranks == 0)),
                "top1_streaming": float(np.mean(streamed == 0)),
                "ranks_equal": float(np.mean(ranks == streamed)),
                "max_rank_difference": int(np.max(np.abs(ranks.astype(int) - streamed.astype(int)))),
            }
        )
    original_s = float(np.mean(per_pair)) * all_pairs
    record = {
        **benchmark_common.machine_record(device),
        "model_shape": shape,
        "blocks_x_kinds_x_tokens": [len(model.blocks), len(lens.LAYER_KINDS), n_tokens],
        "dim": dim,
        "classes": num_classes,
        "probe_images": n_probe,
        "stimuli": n_stimuli,
        "batch_size": args.batch_size,
        "memory_gb": args.memory_gb,
        "block_chunks": result.n_chunks,
        "streaming_s": streaming_s,
        "original_pairs_timed": n_pairs,
        "original_s_per_pair": per_pair,
        "original_s_extrapolated": original_s,
        "ratio": original_s / streaming_s,
        "agreement": agreement,
        "load_average": [load_start, os.getloadavg()[0]],
        "headline": [
            {
                "metric": f"all {all_pairs} ridge probes in one streaming pass / the original's re-extraction per "
                f"(layer, token), {shape} shape ({device})",
                "measured": f"{original_s / streaming_s:.0f}× ({streaming_s / 60:.1f} min vs {original_s / 3600:.1f} h, "
                "extrapolated from the timed pairs)",
                "goal": "hours become minutes",
            }
        ],
    }
    benchmark_common.write_record(record, args.output)
    print(
        f"{shape}: {all_pairs} probes ({len(model.blocks)} blocks x 3 kinds x {n_tokens} tokens), "
        f"{n_probe} probe images, {n_stimuli} stimuli, {device}\n"
        f"  streaming (fit + score, {result.n_chunks} block chunk(s)): {streaming_s:.1f} s\n"
        f"  original: {np.mean(per_pair):.2f} s per (layer, token) over {n_pairs} pairs -> {original_s:.0f} s for all\n"
        f"  ratio original / streaming: {original_s / streaming_s:.0f}x\n"
        f"  timed pairs, top-1 original vs streaming, equal ranks: "
        + ", ".join(
            f"{a['layer']} t{a['token']} {a['top1_original']:.2f}/{a['top1_streaming']:.2f} {100 * a['ranks_equal']:.0f}%"
            for a in agreement
        )
    )


if __name__ == "__main__":
    main()
