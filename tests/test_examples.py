"""Every model-family example of config/examples/ run end to end: all of them in one workflow, as
Snakemake merges the config files given together (they share base.yaml's generated dataset).
The dry run of each family is not enough: token removal, explanations and memories only fail
when they run.

What runs for every example: training, extraction, memories, both token and both attention
perturbations, explanation maps and their perturbation curves, probes, the explorer page, and every
figure and table over all models. The figures of one model alone draw what its jobs compute and
differ between families only by the token layout: they run for one example of each layout
(:data:`LAYOUTS`). Each job runs on one thread, two at a time, which is what a 2-core machine
gives tiny models (the workflow's default is 4 threads per job and one GPU job at a time).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml
from workflow_runs import snakemake, write_config

from class_embedding import results_layout as layout

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_BASE = REPO / "config" / "examples" / "base.yaml"
EXAMPLES = sorted(path for path in (REPO / "config" / "examples").glob("*.yaml") if path != EXAMPLE_BASE)

pytestmark = pytest.mark.workflow


def example_models() -> dict[str, dict]:
    return {name: spec for path in EXAMPLES for name, spec in yaml.safe_load(path.read_text())["models"].items()}


def smaller(tmp_path: Path) -> Path:
    """What the test leaves out of the examples as shipped: the random twins (the demo and the
    micro tests run them on the same code) and every extraction shard but one per model."""
    models = {name: {"random_twin": False} for name in example_models()}
    return write_config({"models": models, "extraction": {"shard_size": None}}, tmp_path / "smaller.yaml")


# One example per token layout: [CLS]; none (GAP); [CLS] and [DIST]; [CLS] and registers; registers
# (GAP); a non-square 4x6 grid.
LAYOUTS = ("plain", "norm_then_pool_gap", "distilled", "registers_cls", "registers_avg", "relpos")
# Figures of one model that read its tables, or draw gradient maps with the code explain_maps runs
# for every [CLS] example (fig_explain_sum).
LAYOUT_FIGURES = (
    "fig_class_building",
    "fig_context_identifiability",
    "fig_token_maps",
    "fig_probe_vs_projection_acc",
    "fig_probe_perturbation",
    "fig_linear_probing_all",
    "fig_explain_sum",
)
# The greedy scheduler: the default solves an ILP for each of the ~260 job starts.
JOB_SETTINGS = ("--cores", "2", "--max-threads", "1", "--scheduler", "greedy", "--resources", "gpu=2")


def targets(configs: list[Path], workdir: Path) -> list[str]:
    """Every output `all` plans, less the :data:`LAYOUT_FIGURES` of examples outside :data:`LAYOUTS`."""
    summary = snakemake("--summary", configfiles=configs, workdir=workdir, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in summary[1:] if line.count("\t") >= 2]
    kept = [
        path
        for path, _, rule, *_ in rows
        if rule not in LAYOUT_FIGURES or any(Path(path).stem == f"{rule}_{name}" for name in LAYOUTS)
    ]
    assert len(kept) < len(rows) and all(name in example_models() for name in LAYOUTS)
    return kept


@pytest.fixture(scope="module")
def examples_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("examples")
    configs = [EXAMPLE_BASE, *EXAMPLES, smaller(tmp_path)]
    workdir = tmp_path / "work"
    wanted = targets(configs, workdir)
    start = time.perf_counter()
    result = snakemake(*wanted, *JOB_SETTINGS, configfiles=configs, workdir=workdir, timeout=3600)
    print(f"{len(EXAMPLES)} examples end to end in {time.perf_counter() - start:.0f} s")
    return result, configs, workdir, wanted


def test_every_example_runs_to_the_end(examples_run):
    result, configs, workdir, wanted = examples_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    rerun = snakemake("-n", *wanted, configfiles=configs, workdir=workdir)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


@pytest.mark.parametrize("name", sorted(example_models()))
def test_each_example_has_its_outputs(examples_run, name):
    _, _, workdir, _ = examples_run
    results = workdir / "results"
    assert (results / "explorer" / f"{name}.html").is_file()
    assert all((workdir / path).is_file() for path in layout.memory_tables(name).values())
    assert (workdir / layout.predictions_table(name)).is_file()
    figures = LAYOUT_FIGURES[:3] if name in LAYOUTS else ()
    for figure in figures:
        assert (results / "figures" / f"{figure}_{name}.pdf").is_file(), f"{figure}_{name}.pdf"
    perturbations = sorted(str(p) for p in (results / "perturbation" / f"model={name}").rglob("*.parquet"))
    # Both token and both attention perturbations, with their predictions: of [CLS] models only.
    assert len(perturbations) == (8 if example_models()[name]["class_token"] else 0), perturbations


# Prefix tokens besides [CLS]: 4 registers (registers_cls) and a distillation token (distilled).


def test_prefix_models_have_their_figures_and_tables(examples_run):
    results = examples_run[2] / "results"
    assert (results / "tables/tab_identifiability_rates.csv").is_file()
    for model in ("registers_cls", "distilled"):
        for name in ("fig_class_building", "fig_context_identifiability", "fig_explain_sum"):
            assert (results / f"figures/{name}_{model}.pdf").is_file()
    assert {"registers_cls", "distilled"} <= set(pd.read_csv(results / "tables/tab_context_perturbation.csv")["model"])


def test_prefix_tokens_are_not_image_tokens(examples_run):
    results = examples_run[2] / "results"
    rates = pd.read_csv(results / "tables/tab_identifiability_rates.csv").set_index("model")
    assert rates.loc["registers_cls", "n_image_tokens"] == 16
    assert rates.loc["distilled", "n_image_tokens"] == 16
    # Brute force from the extraction: grid tokens only (positions after [CLS] and the registers).
    hs = pq.read_table(results.parent / layout.layer_table("registers_cls", "hs", 1)).to_pandas()
    assert hs["token"].max() + 1 == 1 + 4 + 16
    image = hs[hs["token"] >= 5]
    per_image = image.groupby("image")["rank"].apply(lambda r: np.mean(r == 0) * 100)
    assert rates.loc["registers_cls", "pct_tokens"] == pytest.approx(per_image.mean())
    metadata = pq.read_schema(results.parent / layout.layer_table("registers_cls", "hs", 1)).metadata
    assert metadata[b"num_prefix_tokens"] == b"5"


def test_register_and_distillation_tokens_are_their_own_token_types(examples_run):
    results = examples_run[2] / "results"
    evolution = pd.read_csv(results / "tables/fig_identifiability_evolution.csv")
    kinds = evolution.groupby("model")["token_type"].agg(set)
    assert kinds["registers_cls"] == {"[CLS]", "register", "image"}
    assert kinds["distilled"] == {"[CLS]", "[DIST]", "image"}
    n_values = evolution.set_index(["model", "token_type"])["n_values"].groupby(level=[0, 1]).first()
    n_images = n_values["registers_cls", "[CLS]"]
    assert n_values["registers_cls", "register"] == 4 * n_images
    assert n_values["registers_cls", "image"] == 16 * n_images
    building = pd.read_csv(results / "tables/fig_class_building_distilled.csv")
    assert {"attn - [DIST]", "mlp - [DIST]"} <= set(building["series"])
