"""The queries of docs/querying.md, run as written by DuckDB (and Polars) on a finished micro run,
each checked against the same answer computed in pandas from the files the layout names."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from class_embedding import results_layout as layout
from class_embedding import tables

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "querying.md"

# Every test reads the session's micro run (the doc's five queries and its Polars read are counted
# in test_docs.py).
pytestmark = pytest.mark.workflow


def doc_blocks(kind: str) -> dict[str, str]:
    """``<!-- kind: name -->`` followed by a fenced block → {name: its code}."""
    pattern = rf"<!-- {kind}: (\w+) -->\n```\w+\n(.*?)```"
    return dict(re.findall(pattern, DOC.read_text(), flags=re.S))


QUERIES = doc_blocks("query")


@pytest.fixture(scope="module")
def run_dir(micro_run) -> Path:
    """The working directory of the session's micro run (conftest.py)."""
    if micro_run.returncode != 0:
        pytest.fail(f"the micro run on {micro_run.executor} failed:\n{micro_run.output[-3000:]}")
    return micro_run.workdir


@pytest.fixture(scope="module")
def answers(run_dir, monkeypatch_module):
    """Each query's answer, run from the run's working directory as the doc says."""
    monkeypatch_module.chdir(run_dir)
    return {name: duckdb.sql(query).df() for name, query in QUERIES.items()}


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def model_facts(workdir: Path) -> dict[str, dict]:
    """Model → its metadata (num_classes, num_blocks, num_prefix_tokens), for every model extracted."""
    facts = {}
    for folder in sorted((workdir / "results" / "extract").glob("model=*")):
        model = folder.name.removeprefix("model=")
        facts[model] = tables.read_metadata(workdir / layout.predictions_table(model))
    assert facts, "the run extracted no model"
    return facts


def layer_frame(workdir: Path, model: str, kind: str, block: int) -> pd.DataFrame:
    return pd.read_parquet(workdir / layout.layer_table(model, kind, block), columns=["image", "token", "rank"])


def median_identifiability(workdir: Path) -> dict[str, list[float]]:
    """Model → the median class identifiability of its image tokens at each block (hs), in pandas."""
    medians = {}
    for model, meta in model_facts(workdir).items():
        medians[model] = []
        for block in range(meta["num_blocks"]):
            hs = layer_frame(workdir, model, "hs", block)
            image = hs[hs["token"] >= meta["num_prefix_tokens"]]
            medians[model].append(float(np.median(1 - image["rank"] / meta["num_classes"])))
    return medians


def first_blocks(medians: dict[str, list[float]], threshold: float) -> list[dict]:
    return [
        {"model": model, "first_block": next(b for b, m in enumerate(values) if m >= threshold)}
        for model, values in sorted(medians.items())
        if max(values) >= threshold
    ]


def test_first_block_where_the_median_image_token_passes_0_9(run_dir, answers):
    medians = median_identifiability(run_dir)
    assert answers["first_block_median_image_token"].to_dict("records") == first_blocks(medians, 0.9)
    # A threshold between the models' best medians, so that some models pass and some do not
    # whatever the run: the query, with it in place of 0.9, must say both.
    best = sorted(max(values) for values in medians.values())
    threshold = (best[0] + best[-1]) / 2
    assert best[0] < threshold <= best[-1]
    query = QUERIES["first_block_median_image_token"]
    assert query.count(">= 0.9") == 1
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(run_dir)
        got = duckdb.sql(query.replace(">= 0.9", f">= {threshold!r}")).df()
    expected = first_blocks(medians, threshold)
    assert got.to_dict("records") == expected and 0 < len(expected) < len(medians)


def test_top1_share_per_model_layer_and_block(run_dir, answers):
    rows = []
    for model, meta in model_facts(run_dir).items():
        for kind in layout.LAYER_KINDS:
            for block in range(meta["num_blocks"]):
                ranks = layer_frame(run_dir, model, kind, block)["rank"]
                rows.append((model, kind, block, float(np.mean(ranks == 0)), len(ranks)))
    expected = pd.DataFrame(rows, columns=["model", "layer", "block", "top1_share", "n_tokens"])
    expected = expected.sort_values(["model", "layer", "block"], ignore_index=True)
    got = answers["top1_share_per_layer"]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_polars_reads_the_same_partitions(run_dir, answers, monkeypatch_module):
    monkeypatch_module.chdir(run_dir)
    namespace: dict = {}
    exec(doc_blocks("polars")["top1_share_per_layer"], namespace)
    got = namespace["top1_share"].to_pandas()
    pd.testing.assert_frame_equal(got, answers["top1_share_per_layer"], check_dtype=False)


def test_accuracy_with_and_without_each_perturbation(run_dir, answers):
    rows = []
    for model in model_facts(run_dir):
        unperturbed = pd.read_parquet(run_dir / layout.predictions_table(model)).set_index("image")["correct"]
        for folder in sorted((run_dir / "results" / "perturbation" / f"model={model}").glob("perturbation=*")):
            perturbation = folder.name.removeprefix("perturbation=")
            tables_of_run = layout.perturbation_tables(model, perturbation)
            perturbed = pd.read_parquet(run_dir / tables_of_run["predictions"]).set_index("image")["correct"]
            rows.append((model, perturbation, perturbed.mean(), unperturbed.loc[perturbed.index].mean()))
    expected = pd.DataFrame(rows, columns=["model", "perturbation", "accuracy", "accuracy_unperturbed"])
    # The [CLS] models' two attention and two token perturbations.
    names = {"attn_self_only", "attn_no_cls", "tokens_no_context", "tokens_no_class_label"}
    assert len(expected) and all(set(group) == names for _, group in expected.groupby("model")["perturbation"])
    pd.testing.assert_frame_equal(answers["perturbation_accuracy"], expected, check_dtype=False)


def test_probe_beside_projection_on_cls(run_dir, answers):
    rows = []
    for model, meta in model_facts(run_dir).items():
        probe_table = run_dir / layout.probe_tables(model)["accuracy"]
        if not probe_table.is_file():
            continue
        probes = pd.read_parquet(probe_table)
        for block in range(meta["num_blocks"]):
            probe = probes[(probes["kind"] == "hs") & (probes["block"] == block) & (probes["token"] == 0)]
            hs = layer_frame(run_dir, model, "hs", block)
            projection = float(np.mean(hs[hs["token"] == 0]["rank"] == 0))
            rows.append((model, block, float(probe["accuracy"].item()), projection))
    expected = pd.DataFrame(rows, columns=["model", "block", "probe_accuracy", "projection_accuracy"])
    assert len(expected) > 0
    pd.testing.assert_frame_equal(answers["probe_vs_projection_cls"], expected, check_dtype=False)


def test_memory_agreement_over_the_random_baseline(run_dir, answers):
    frames = []
    for model in model_facts(run_dir):
        path = run_dir / layout.memory_tables(model)["classes"]
        if path.is_file():
            frames.append(pd.read_parquet(path).assign(model=model))
    table = pd.concat(frames)
    table = table[~table["includes_post_norm"]]
    grouped = table.groupby(["model", "layer_type", "block"], as_index=False).agg(
        agreement=("agreement_score", "mean"), random_agreement=("random_agreement_score", "mean")
    )
    grouped["excess"] = grouped["agreement"] - grouped["random_agreement"]
    pd.testing.assert_frame_equal(answers["memory_agreement_over_random"], grouped, check_dtype=False)
