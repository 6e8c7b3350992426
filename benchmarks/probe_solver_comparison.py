"""Comparison: the workflow's exact ridge probes against the original's ``Ridge(solver="lsqr")``.

The original (docs/method.md §4.14) fitted each (layer, token) probe with scikit-learn
``Ridge(alpha=1.0, solver="lsqr")``, which stops LSQR at its tolerance; the workflow solves the
same regularised least squares exactly (:class:`class_embedding.analyses.probes.RidgeAccumulator`). This
script measures how far that moves the results on a finished demo run: both fits on the same
activations of the same probe images (the run's probe split), scored on the run's stimuli, then

* the top-1 accuracy of every (layer, token) probe, and the share of equal ranks;
* the ``linear_probe`` ordering of the explainability perturbation test (residual-stream ranks
  summed over blocks) from each fit, evaluated as the rule does (same kept counts), and its
  paper-convention and trapezoid AUCs in both directions.

The exact side is checked against the run's own ``results/probes/<model>/ranks.parquet``.
Activations are float32, as the original's were; scikit-learn keeps that dtype for lsqr.

    python benchmarks/probe_solver_comparison.py --results /path/to/results [--model demo_vit_g7]
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import benchmark_common  # puts the workflow package on the path
import numpy as np
import torch
import yaml

from class_embedding import results_layout as layout
from class_embedding import tables
from class_embedding.analyses import explain_auc, explain_perturbation, model_runs, probes
from class_embedding.extraction import lens
from class_embedding.models import preprocessing


def parse_args():
    parser = benchmark_common.argument_parser(__doc__, "probe_solver_comparison", "first 2 blocks only")
    parser.add_argument("--results", default=str(benchmark_common.REPO / "results"), help="a finished demo run")
    parser.add_argument("--model", default="demo_vit_g7", help="a probed model with the perturbation test")
    parser.add_argument("--batch-size", type=int, default=64)
    return parser.parse_args()


def activations(model, batches, blocks: list[int]) -> dict[str, torch.Tensor]:
    """layer -> (T, n_images, D) float32 states of every image (the probes' inputs)."""
    parts: dict[str, list[torch.Tensor]] = {}

    def keep(name, states):
        parts.setdefault(name, []).append(states.clone())

    with probes.LayerStates(model, blocks, keep) as states, torch.inference_mode():
        for images, _ in batches:
            states.run(images)
    return {name: torch.cat(chunks, dim=1) for name, chunks in parts.items()}


def lsqr_probes(train: torch.Tensor, labels: np.ndarray, num_classes: int, alpha: float):
    """The original's fit per token: weights (T, D, C) and intercepts (T, C) of sklearn's lsqr Ridge."""
    from sklearn.linear_model import Ridge

    targets = -np.ones((len(labels), num_classes), np.float32)
    targets[np.arange(len(labels)), labels] = 1
    weights, intercepts = [], []
    for features in train.numpy():
        ridge = Ridge(alpha=alpha, solver="lsqr").fit(features, targets)
        weights.append(torch.from_numpy(ridge.coef_.T.astype(np.float64)))
        intercepts.append(torch.from_numpy(np.asarray(ridge.intercept_, np.float64)))
    return torch.stack(weights), torch.stack(intercepts)


def exact_probes(train: torch.Tensor, labels: np.ndarray, num_classes: int, alpha: float):
    accumulator = probes.RidgeAccumulator(train.shape[0], train.shape[2], num_classes)
    accumulator.update(train, torch.from_numpy(labels))
    return accumulator.solve(alpha)


def probe_ordering(ranks: dict[str, np.ndarray], images: np.ndarray, n_images: int, n_tokens: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "ranks.parquet"
        tables.write_table(probes.ranks_table(images, ranks), path, {})
        return explain_perturbation.linear_probe_ordering(path, n_images, n_tokens)


def main() -> None:
    args = parse_args()
    device = benchmark_common.prepare(args)
    results = Path(args.results)
    workdir = results.parent  # the run's working directory: layout paths start with results/
    config = yaml.safe_load(Path(args.config).read_text())
    spec = config["models"][args.model]
    dataset = spec["dataset"]
    alpha = config.get("probing", {}).get("alpha", 1.0)
    kept_step = config.get("explainability", {}).get("kept_step", 1)
    images_dir = workdir / layout.dataset_dir(dataset) / "ImageNetS919"
    setup = model_runs.Setup.load(
        spec, args.model, str(workdir / layout.checkpoint(args.model)),
        str(workdir / layout.stimuli_table(dataset)), str(images_dir),
    )  # fmt: skip
    model = setup.model.eval()
    probe_table = tables.read_table(workdir / layout.probe_stimuli_table(dataset))
    preprocess = preprocessing.Preprocessing(spec["preprocessing"])
    probe_set = probes.LabelledImages(probe_table, images_dir, preprocess)
    probe_images = torch.stack([probe_set[i][0] for i in range(len(probe_set))])
    probe_labels = probe_set.targets
    stimuli = torch.stack([setup.dataset[i] for i in range(len(setup.dataset))])
    n_blocks = 2 if args.quick else len(model.blocks)
    blocks = list(range(n_blocks))
    num_classes = model.num_classes

    def batches(images):
        return [(images[i : i + args.batch_size], None) for i in range(0, len(images), args.batch_size)]

    started = time.perf_counter()
    train = activations(model, batches(probe_images), blocks)
    test = activations(model, batches(stimuli), blocks)
    targets = torch.from_numpy(setup.targets)
    ranks = {"exact": {}, "lsqr": {}}
    fit_seconds = {"exact": 0.0, "lsqr": 0.0}
    for name in lens.layer_names(len(model.blocks)):
        if name not in train:
            continue
        for solver, fit in (("exact", exact_probes), ("lsqr", lsqr_probes)):
            start = time.perf_counter()
            weights, intercepts = fit(train[name], probe_labels, num_classes, alpha)
            fit_seconds[solver] += time.perf_counter() - start
            ranks[solver][name] = probes.probe_ranks(test[name], weights, intercepts, targets).numpy()

    record = {**benchmark_common.machine_record(device), "model": args.model, "results": str(results)}
    record.update(probe_images=len(probe_labels), stimuli=len(targets), alpha=alpha, blocks=n_blocks)
    record["fit_seconds"] = fit_seconds
    stored_path = workdir / layout.probe_tables(args.model)["ranks"]
    if stored_path.exists():  # the rule's own probes: the exact side must reproduce them
        stored = tables.read_table(stored_path).to_pandas()
        mismatches = 0
        for name, layer_ranks in ranks["exact"].items():
            rows = stored[stored["layer"] == name].sort_values(["image", "token"])
            mismatches += int(np.sum(rows["rank"].to_numpy().reshape(layer_ranks.shape) != layer_ranks))
        record["exact_vs_stored_rank_mismatches"] = mismatches

    accuracy = {
        solver: np.stack([(r == 0).mean(axis=0) for r in per_layer.values()]) for solver, per_layer in ranks.items()
    }  # (layers, tokens)
    difference = accuracy["lsqr"] - accuracy["exact"]
    equal = np.mean([np.mean(ranks["lsqr"][n] == ranks["exact"][n]) for n in ranks["exact"]])
    record["accuracy"] = {
        "probes": int(difference.size),
        "max_abs_difference": float(np.abs(difference).max()),
        "mean_abs_difference": float(np.abs(difference).mean()),
        "probes_with_a_different_accuracy": int(np.count_nonzero(difference)),
        "share_of_equal_ranks": float(equal),
        # fig_probe_vs_projection_acc's points: mean over image tokens per layer
        "image_token_mean_per_layer": {
            name: {solver: float(accuracy[solver][i, 1:].mean()) for solver in ranks}
            for i, name in enumerate(ranks["exact"])
        },
    }

    if not args.quick:
        n_images, n_tokens = len(targets), model.patch_embed.num_patches
        orderings = {solver: probe_ordering(ranks[solver], setup.images, n_images, n_tokens) for solver in ranks}
        curves = [
            explain_perturbation.Curve(solver, 0, direction, ordering)
            for solver, ordering in orderings.items()
            for direction in explain_auc.DIRECTIONS
        ]
        kept = explain_perturbation.kept_counts(n_tokens, kept_step)
        correct = explain_perturbation.evaluate_curves(
            model, stimuli, setup.targets, curves, kept, tokens_per_batch=32768, device=device
        )
        record["kept_step"] = kept_step
        record["orderings_equal_share"] = float(np.mean(orderings["exact"] == orderings["lsqr"]))
        record["auc"] = {}
        for curve, hits in zip(curves, correct):
            curve_accuracy = hits.mean(axis=1)
            record["auc"][f"{curve.method}_{curve.direction}"] = {
                kind: float(function(kept, curve_accuracy, n_tokens))
                for kind, function in explain_auc.AUC_KINDS.items()
            }
    record["seconds"] = time.perf_counter() - started
    record["load_average"] = os.getloadavg()[0]
    benchmark_common.write_record(record, args.output)
    summary = {k: v for k, v in record["accuracy"].items() if k != "image_token_mean_per_layer"}
    print(
        json.dumps({**{k: v for k, v in record.items() if k != "accuracy"}, "accuracy": summary}, indent=1, default=str)
    )


if __name__ == "__main__":
    main()
