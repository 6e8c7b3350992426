"""What the paper run costs: forwards and backwards of every GPU job of the paper config's DAG.

A dry run of ``config/paper.yaml`` (user paths pointed at empty dummy files, as the tests do) lists
the jobs; those with ``gpu=1`` among their resources are counted from the config (images per class,
perturbation settings, epochs) and the dataset sizes below. Costs are in full-image forwards of each
job's model; a backward counts as two forwards, a forward with the lens as the measured lens/bare
ratio, and a forward on n + 1 of the N + 1 tokens (the perturbation curves) as (n + 1)/(N + 1) of one.
Models are weighed by their transformer FLOPs, blocks · tokens · (24·D² + 4·tokens·D), against the
ViT-B/16 shape whose images/s were measured (benchmarks/results/extraction_overhead.json on the CPU;
benchmarks/results/gpu.json where a GPU run exists). ``--docs`` rewrites the table in docs/paper.md.

    python benchmarks/paper_cost.py [--docs]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import benchmark_common  # puts the workflow package on the path
import timm
import torch
import yaml

REPO = benchmark_common.REPO
DOCS = REPO / "docs" / "paper.md"
MARKERS = ("<!-- paper-cost -->", "<!-- /paper-cost -->")
# Dataset sizes the config does not hold (docs/method.md, stimuli and probe images of ImageNet-S;
# the CIFAR-100 stimuli; CIFAR-100's training split for fine-tuning).
DATASET_CLASSES = {"imagenet_s": 910, "cifar100": 100}
PROBE_IMAGES = 9090
CIFAR_TRAIN_IMAGES = 50_000
BACKWARD_FORWARDS = 2.0
# Orderings of the perturbation test besides the random permutations: gradients and Chefer
# relevance, plus the linear probes' for models with probes; each is run in both directions.
BASE_ORDERINGS = 2


def dry_run_jobs(config: Path, workdir: Path) -> list[dict]:
    """Every job of the DAG: rule, wildcards, and whether it asks for a GPU."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
         "--configfile", str(config), "--directory", str(workdir)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if result.returncode:
        sys.exit(f"dry run of {config} failed:\n{result.stderr[-3000:]}")
    return parse_dry_run(result.stdout + result.stderr)


def parse_dry_run(text: str) -> list[dict]:
    """Jobs of a ``snakemake -n`` listing: rule, wildcards, and whether ``gpu=1`` is among its resources."""
    jobs = []
    # Jobs of group jobs are indented; checkpoints are jobs too.
    for block in re.split(r"\n(?=\s*(?:local)?(?:rule|checkpoint) \w+:)", text):
        head = re.match(r"\s*(?:local)?(?:rule|checkpoint) (\w+):", block)
        if not head:
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, flags=re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, flags=re.M)
        jobs.append(
            {
                "rule": head.group(1),
                "wildcards": dict(kv.split("=", 1) for kv in wildcards.group(1).split(", ")) if wildcards else {},
                "gpu": bool(resources and re.search(r"\bgpu=1\b", resources.group(1))),
            }
        )
    return jobs


def paper_config_copy(tmp: Path) -> Path:
    """config/paper.yaml with its one required user path pointed at an empty dummy archive."""
    archive = tmp / "ILSVRC2012_img_val.tar"
    archive.write_bytes(b"")
    text = (REPO / "config" / "paper.yaml").read_text().replace("/path/to/ILSVRC2012_img_val.tar", str(archive))
    path = tmp / "paper.yaml"
    path.write_text(text)
    return path


def model_spec(config: dict, model: str) -> dict:
    return config["models"][model.removesuffix("_random") if model not in config["models"] else model]


def model_shape(spec: dict) -> dict:
    with torch.device("meta"):
        model = timm.create_model(spec["arch"], pretrained=False, **(spec.get("kwargs") or {}))
    return {
        "blocks": len(model.blocks),
        "tokens": model.patch_embed.num_patches + model.num_prefix_tokens,
        "image_tokens": model.patch_embed.num_patches,
        "dim": model.embed_dim,
    }


def relative_flops(shape: dict, reference: dict) -> float:
    def flops(s):
        return s["blocks"] * s["tokens"] * (24 * s["dim"] ** 2 + 4 * s["tokens"] * s["dim"])

    return flops(shape) / flops(reference)


def stimuli_count(config: dict, dataset: str) -> int:
    return DATASET_CLASSES[dataset] * int(config["stimuli"]["images_per_class"])


def job_cost(job: dict, config: dict, shape: dict, lens_ratio: float) -> dict:
    """Forwards and backwards of one GPU job, in full-image forwards of its model."""
    rule, model = job["rule"], job["wildcards"].get("model")
    spec = model_spec(config, model) if model else None
    stimuli = stimuli_count(config, spec["dataset"]) if spec else 0
    forwards = backwards = 0.0
    lens_forwards = 0.0
    if rule == "extract_shard":
        shard_size = config["extraction"].get("shard_size")
        shard = int(job["wildcards"].get("shard", 0))
        images = min(shard_size, stimuli - shard * shard_size) if shard_size else stimuli
        forwards = images
        lens_forwards = images * (lens_ratio - 1)
    elif rule in ("attn_perturbation", "token_perturbation"):
        forwards = stimuli
    elif rule == "explain_maps":
        # The summed gradient map and the Chefer relevance: a forward and a backward each.
        forwards = backwards = 2 * stimuli
    elif rule == "explain_perturbation":
        explain = config["explainability"]
        orderings = BASE_ORDERINGS + (model in (config["probing"].get("models") or []))
        curves = 2 * orderings + int(explain["random_permutations"])
        n_image = shape["image_tokens"]
        step = int(explain.get("kept_step", 1))
        kept = sorted(set(range(1, n_image + 1, step)) | {n_image - 1, n_image})
        token_share = sum((n + 1) / (n_image + 1) for n in kept)
        forwards = curves * token_share * stimuli
    elif rule == "linear_probes":
        # One pass over the probe images and one over the stimuli (all statistics in one block chunk).
        forwards = PROBE_IMAGES + stimuli
    elif rule == "finetune_cifar":
        epochs = int(spec["weights"]["finetune"]["epochs"])
        forwards = backwards = epochs * CIFAR_TRAIN_IMAGES
    elif rule == "weight_check":
        forwards = 1
    elif rule == "random_twin_checkpoint":
        forwards = 0
    else:
        raise ValueError(f"GPU rule {rule} has no cost model in benchmarks/paper_cost.py: add one")
    return {
        "forwards": forwards,
        "backwards": backwards,
        "forward_equivalents": forwards + lens_forwards + BACKWARD_FORWARDS * backwards,
    }


def throughputs(args) -> dict[str, dict]:
    """Measured images/s of a bare ViT-B/16-shaped forward, and the lens ratio, per device."""
    out = {}
    cpu = json.loads(Path(args.cpu_record).read_text())["models"]["vit_b16"]
    # The fastest runs: on a shared machine other processes only ever add time.
    out["CPU"] = {
        "images_per_s": cpu["batch"] / cpu["timing"]["bare_min_s"],
        "lens_ratio": cpu["timing"]["ratio_of_minima"],
        "source": f"{Path(args.cpu_record).relative_to(REPO)} (ViT-B/16 shape, batch {cpu['batch']}, "
        f"{cpu.get('threads', 2)} threads, fastest of {cpu['timing']['pairs']} runs)",
    }
    gpu_path = Path(args.gpu_record)
    if gpu_path.is_file():
        gpu = json.loads(gpu_path.read_text())
        if not gpu.get("quick"):
            row = next(
                r
                for r in gpu["extraction_preloaded"]
                if (r["shape"], r["batch"], r["precision"]) == ("vit_b16", 256, "tf32")
            )
            out[f"GPU ({gpu['device_name']})"] = {
                "images_per_s": row["bare_images_per_s"],
                "lens_ratio": row["lens_incremental_over_bare"],
                "source": f"{gpu_path.relative_to(REPO)} (ViT-B/16 shape, batch 256, TF32)",
            }
    return out


def cost_table(jobs: list[dict], config: dict, devices: dict) -> tuple[str, dict]:
    reference = model_shape({"arch": "vit_base_patch16_224"})
    rows: dict[tuple[str, str], dict] = {}
    totals = {device: 0.0 for device in devices}
    for job in (j for j in jobs if j["gpu"]):
        model = job["wildcards"].get("model", "-")
        shape = model_shape(model_spec(config, model)) if model != "-" else reference
        weight = relative_flops(shape, reference)
        for device, measured in devices.items():
            cost = job_cost(job, config, shape, measured["lens_ratio"])
            hours = cost["forward_equivalents"] * weight / measured["images_per_s"] / 3600
            row = rows.setdefault((model, job["rule"]), {"jobs": 0, "forwards": 0.0, "backwards": 0.0, "hours": {}})
            if device == next(iter(devices)):
                row["jobs"] += 1
                row["forwards"] += cost["forwards"]
                row["backwards"] += cost["backwards"]
            row["hours"][device] = row["hours"].get(device, 0.0) + hours
            totals[device] += hours
    header = (
        "| model | rule | jobs | forwards (full images) | backwards | "
        + " | ".join(f"hours, {d}" for d in devices)
        + " |"
    )
    lines = [header, "|" + "---|" * (5 + len(devices))]
    for (model, rule), row in sorted(rows.items()):
        hours = " | ".join(f"{row['hours'][d]:,.2f}" for d in devices)
        lines.append(
            f"| {model} | {rule} | {row['jobs']} | {row['forwards']:,.0f} | {row['backwards']:,.0f} | {hours} |"
        )
    lines.append("| **all** | | | | | " + " | ".join(f"**{totals[d]:,.1f}**" for d in devices) + " |")
    return "\n".join(lines), totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-record", default=str(benchmark_common.RESULTS / "extraction_overhead.json"))
    parser.add_argument("--gpu-record", default=str(benchmark_common.RESULTS / "gpu.json"))
    parser.add_argument("--docs", action="store_true", help=f"rewrite the table between the markers in {DOCS}")
    args = parser.parse_args()
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    with tempfile.TemporaryDirectory(prefix="paper_cost_") as tmp:
        jobs = dry_run_jobs(paper_config_copy(Path(tmp)), Path(tmp) / "work")
    devices = throughputs(args)
    table, totals = cost_table(jobs, config, devices)
    inputs = (
        f"Inputs: the DAG of `snakemake -n --configfile config/paper.yaml` ({len(jobs)} jobs, "
        f"{sum(j['gpu'] for j in jobs)} asking for a GPU); image counts from config/paper.yaml "
        f"(`stimuli.images_per_class`, `explainability`, `probing`, fine-tuning `epochs`) with "
        f"{DATASET_CLASSES['imagenet_s']} ImageNet-S classes, {DATASET_CLASSES['cifar100']} CIFAR-100 classes, "
        f"{PROBE_IMAGES} probe images and {CIFAR_TRAIN_IMAGES} CIFAR-100 training images; throughput: "
        + "; ".join(
            f"{d}: {m['images_per_s']:.2f} images/s bare, lens ×{m['lens_ratio']:.2f}, from {m['source']}"
            for d, m in devices.items()
        )
        + ". A backward counts as 2 forwards; models are weighed by transformer FLOPs against ViT-B/16."
        + ("" if len(devices) > 1 else " Not measured on a GPU.")
    )
    text = f"{inputs}\n\n{table}\n"
    print(text)
    if args.docs:
        docs = DOCS.read_text()
        start, end = docs.index(MARKERS[0]) + len(MARKERS[0]), docs.index(MARKERS[1])
        DOCS.write_text(docs[:start] + "\n" + text + docs[end:])
        print(f"rewrote the table in {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    main()
