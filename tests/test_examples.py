"""Every model-family example of config/examples/ run end to end: all of them in one workflow, as
Snakemake merges the config files given together (they share base.yaml's generated dataset).
The dry run of each family is not enough: token removal, explanations and memories only fail
when they run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from workflow_runs import snakemake, write_config

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


@pytest.fixture(scope="module")
def examples_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("examples")
    configs = [EXAMPLE_BASE, *EXAMPLES, smaller(tmp_path)]
    start = time.perf_counter()
    result = snakemake("--cores", "2", configfiles=configs, workdir=tmp_path / "work", timeout=3600)
    print(f"{len(EXAMPLES)} examples end to end in {time.perf_counter() - start:.0f} s")
    return result, configs, tmp_path / "work"


def test_every_example_runs_to_the_end(examples_run):
    result, configs, workdir = examples_run
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    rerun = snakemake("-n", configfiles=configs, workdir=workdir)
    assert "Nothing to be done" in rerun.stdout + rerun.stderr


@pytest.mark.parametrize("name", sorted(example_models()))
def test_each_example_has_its_figures(examples_run, name):
    _, _, workdir = examples_run
    figures = workdir / "results" / "figures"
    for figure in ("fig_class_building", "fig_token_maps", "fig_context_identifiability"):
        assert (figures / f"{figure}_{name}.pdf").is_file(), f"{figure}_{name}.pdf"
    assert (workdir / "results" / "explorer" / f"{name}.html").is_file()
