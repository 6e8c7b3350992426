"""End-to-end runs of the workflow on a micro config through the Snakemake API."""

import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import workflow_runs
import yaml
from chromium import Browser, find_browser
from snakemake.exceptions import WorkflowError

from class_embedding import results_layout as layout
from class_embedding import tables
from class_embedding.models import checkpoints

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "configs" / "micro.yaml"

pytestmark = pytest.mark.workflow


# snakemake --cores 2 [-n] --configfile config targets, in this process through the Snakemake API.
run = workflow_runs.run_api


def jobs_to_run(workdir: Path, capfd, targets=(), config: Path = MICRO) -> str:
    capfd.readouterr()
    run(workdir, targets, config=config, dryrun=True)
    captured = capfd.readouterr()
    return captured.out + captured.err


@pytest.fixture(scope="module")
def built(micro_run):
    """One micro workdir: first a single figure, then everything (the session's micro run of
    conftest.py, shared with test_slurm.py: on SLURM when a slurm test is selected)."""
    if micro_run.returncode != 0:
        pytest.fail(f"the micro run on {micro_run.executor} failed:\n{micro_run.output[-3000:]}")
    return micro_run.workdir, micro_run.single_figure


def test_single_figure_builds_only_its_upstream(built):
    _, files = built
    assert "results/figures/fig_change_rate.pdf" in files
    assert not [f for f in files if "_random" in f], "the change rate needs no random twin"
    assert not [f for f in files if f.startswith("results/figures/") and "fig_change_rate" not in f]
    assert not [f for f in files if "token_labels" in f]


def test_everything_is_built_and_consistent(built):
    workdir, _ = built
    results = workdir / "results"
    figures = [
        "fig_identifiability_hist",
        "fig_identifiability_evolution",
        "fig_identifiability_mean_evolution",
        "fig_change_rate",
        "fig_class_value_agreement",
        "fig_key_value_agreement_rate",
        "fig_agreement_accuracy_diff",
        "fig_memory_compositionality",
        "fig_memory_compare",
        *[
            f"{name}_{model}"
            for name in ("fig_class_building", "fig_context_identifiability", "fig_token_maps")
            for model in ("micro_cls", "micro_gap")
        ],
        # Explanations, perturbation test and linear probes: [CLS] models only.
        "fig_explain_head",
        "fig_explain_combined",
        "fig_perturbation_neg",
        "fig_perturbation_pos",
        *[
            f"{name}_micro_cls"
            for name in (
                "fig_explain_sum",
                "fig_probe_vs_projection_acc",
                "fig_probe_perturbation",
                "fig_linear_probing_all",
            )
        ],
    ]
    for name in figures:
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 1000
        assert (results / "figures" / f"{name}.png").stat().st_size > 1000
    # One offline explorer page per trained model, linked from the index.
    index = (results / "explorer" / "index.html").read_text()
    for model in ("micro_cls", "micro_gap"):
        assert f'href="{model}.html"' in index and (results / "explorer" / f"{model}.html").stat().st_size > 10_000
    for name in [
        "tab_context_change_rate_diff",
        "tab_attn_perturbation",
        "tab_context_perturbation",
        "tab_value_vector_classes",
        "tab_explain_perturbation_auc",
    ]:
        assert len(pd.read_csv(results / "tables" / f"{name}.csv")) > 0
    # Perturbations run for the [CLS] model only.
    assert set(pd.read_csv(results / "tables/tab_attn_perturbation.csv")["model"]) == {"micro_cls"}
    stimuli = pd.read_parquet(results / "data/micro/stimuli.parquet")
    # 6 classes, one short in validation (3 < 3 images? no: short classes get fewer than asked).
    assert len(stimuli) % 3 == 0 and stimuli["image"].tolist() == list(range(len(stimuli)))
    n_images = len(stimuli)
    for model, n_tokens in [("micro_cls", 17), ("micro_gap", 16), ("micro_cls_random", 17)]:
        extract = results / "extract" / f"model={model}"
        names = sorted(str(p.relative_to(extract)) for p in extract.rglob("*.parquet"))
        assert names == sorted(
            [f"layer={k}/block={b}/tokens.parquet" for k in ("hs", "attn", "mlp") for b in range(2)]
            + ["predictions.parquet"]
        )
        hs_1 = results.parent / layout.layer_table(model, "hs", 1)
        hs = pq.read_table(hs_1).to_pandas()
        assert len(hs) == n_images * n_tokens  # shards of 7 images merged without loss
        assert hs["image"].tolist() == list(np.repeat(np.arange(n_images), n_tokens))
        meta = tables.read_metadata(hs_1)
        assert meta["weights_sha256"] == checkpoints.sha256(results.parent / layout.checkpoint(model))
        assert "mem_top5" in pq.read_schema(results.parent / layout.layer_table(model, "mlp", 0)).names
        assert not list(extract.rglob("*.partial"))
    assert not (results / "extract" / "model=micro_gap_random").exists()
    assert (
        not list((results / "figures").glob("*micro_gap*probe*"))
        and not (results / "explain" / "model=micro_gap").exists()
    )
    # The rates table agrees with a recomputation from the Parquet tables.
    rates = pd.read_csv(results / "tables/tab_identifiability_rates.csv").set_index("model")
    hs = pq.read_table(results.parent / layout.layer_table("micro_cls", "hs", 1)).to_pandas()
    image_tokens = hs[hs["token"] > 0]
    per_image = image_tokens.groupby("image")["rank"].apply(lambda r: (r == 0).mean() * 100)
    assert rates.loc["micro_cls", "pct_tokens"] == pytest.approx(per_image.mean())
    predictions = pd.read_parquet(results.parent / layout.predictions_table("micro_cls"))
    assert rates.loc["micro_cls", "accuracy"] == pytest.approx(predictions["correct"].mean() * 100)
    labels = pd.read_parquet(results / "data/micro/token_labels_g4.parquet")
    assert len(labels) == n_images * 16 and set(labels["label"]) <= {"class", "context"}


def test_rerun_with_nothing_changed_does_nothing(built, capfd):
    workdir, _ = built
    assert "Nothing to be done" in jobs_to_run(workdir, capfd)


def planned_rules(output: str) -> set[str]:
    """The rules of a dry run's job table ("rule  count" lines between "Job stats:" and "total")."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {match.group(1) for match in re.finditer(r"^(\w+)\s+\d+\s*$", table, re.MULTILINE)}


def test_config_saved_with_sorted_keys_plans_nothing(built, tmp_path, capfd):
    """YAML mappings have no order: the same config written with sorted keys reruns nothing."""
    workdir, _ = built
    config = tmp_path / "sorted.yaml"
    config.write_text(yaml.safe_dump(yaml.safe_load(MICRO.read_text()), sort_keys=True))
    assert config.read_text() != MICRO.read_text()
    assert "Nothing to be done" in jobs_to_run(workdir, capfd, config=config)


def test_new_display_name_reruns_only_figures_tables_and_pages(built, tmp_path, capfd):
    workdir, _ = built
    config = edited_micro_config(tmp_path, lambda c: c["models"]["micro_cls"].update(display_name="Micro ViT, renamed"))
    rules = planned_rules(jobs_to_run(workdir, capfd, config=config))
    assert "fig_class_building" in rules and "explorer_page" in rules
    presentation = {rule for rule in rules if rule.startswith(("fig_", "tab_", "explorer_"))}
    assert rules - presentation == {"all"}


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["extraction"].update(batch_size=3, workers=1, device="cpu"),
        lambda c: c.update(probing={**c["probing"], "batch_size": 5, "memory_gb": 0.5}),
        lambda c: c.update(explainability={"batch_size": 2, "tokens_per_batch": 100}),
    ],
)
def test_new_batch_size_or_device_plans_nothing(built, tmp_path, capfd, edit):
    """Batch sizes, the device, workers and memory budgets are resources, not results."""
    workdir, _ = built
    assert "Nothing to be done" in jobs_to_run(workdir, capfd, config=edited_micro_config(tmp_path, edit))


def test_a_result_setting_still_reruns_what_depends_on_it(built, tmp_path, capfd):
    """The check above can fail: a setting that changes the output (the shard size) does rerun."""
    workdir, _ = built
    config = edited_micro_config(tmp_path, lambda c: c["extraction"].update(shard_size=5))
    assert "extract_shard" in planned_rules(jobs_to_run(workdir, capfd, config=config))


def test_corrupt_image_stops_extraction_without_partial_output(built, tmp_path, capfd):
    workdir = tmp_path / "corrupt"
    shutil.copytree(built[0] / "results", workdir / "results")
    stimuli = pd.read_parquet(workdir / "results/data/micro/stimuli.parquet")
    bad = workdir / "results/data/micro/ImageNetS919" / stimuli["file"].iloc[4]
    bad.write_bytes(b"\xff\xd8\xff not a jpeg")
    for model in ("micro_cls", "micro_gap", "micro_cls_random"):
        shutil.rmtree(workdir / "results/extract" / f"model={model}")
    capfd.readouterr()
    with pytest.raises(Exception):  # noqa: B017 (the message is what is checked, below)
        run(workdir, [layout.layer_table("micro_cls", "hs", 0)])
    output = "".join(capfd.readouterr())
    assert f"{bad.name} is corrupt" in output and "replace the file" in output
    extract = workdir / "results/extract/model=micro_cls"
    shards = workdir / layout.extraction_shard("micro_cls", 0)
    # The failed shard (images 0..6) left nothing; no layer table exists; no temporary file
    # remains. Shards that finished are complete and are reused when the run resumes.
    assert not shards.exists()
    assert not list(extract.rglob("*.parquet"))
    assert not [p for p in [*extract.rglob("*"), *shards.parent.rglob("*")] if "partial" in p.name]


def edited_micro_config(tmp_path: Path, edit) -> Path:
    config = yaml.safe_load(MICRO.read_text())
    edit(config)
    return workflow_runs.write_config(config, tmp_path / "config.yaml")


SCHEMA_HINT = "config/schema.yaml documents every key"


@pytest.mark.parametrize(
    "edit, problem, remedy",
    [
        (
            lambda c: c["extraction"].update(batch_size="eight"),
            "extraction.batch_size: 'eight' is not of type 'integer'",
            SCHEMA_HINT,
        ),
        (
            lambda c: c["models"]["micro_cls"].update(colour="red"),
            "models.micro_cls: Additional properties are not allowed ('colour' was unexpected)",
            SCHEMA_HINT,
        ),
        (
            lambda c: c["models"]["micro_cls"].update(dataset="imagenet"),
            "models.micro_cls.dataset 'imagenet' is not a key of datasets (micro)",
            "name one of them or add the dataset",
        ),
        (
            lambda c: c["models"]["micro_cls"].update(display_name="</script><script>document.title='x'</script>"),
            "models.micro_cls.display_name: \"</script><script>document.title='x'</script>\" contains '<'",
            "the report embeds config text in a script element",
        ),
        (
            lambda c: c.update(model_order=["micro_gap", "micro_vit"]),
            "model_order: micro_vit is not a key of models (micro_cls, micro_gap)",
            "model_order",
        ),
        (
            lambda c: c["datasets"].update(real={"root": "/no/such/imagenet-s"}),
            "datasets.real.root: '/no/such/imagenet-s' does not exist",
            "docs/paper.md says how to obtain ImageNet-S",
        ),
    ],
)
def test_bad_config_names_the_key(tmp_path, edit, problem, remedy):
    with pytest.raises(WorkflowError) as error:
        run(tmp_path, config=edited_micro_config(tmp_path, edit), dryrun=True)
    assert problem in str(error.value)
    assert remedy in str(error.value)


def test_config_with_a_key_given_twice_is_refused(tmp_path):
    """A second `extraction:` block would silently drop the first one's shard_size."""
    config = tmp_path / "twice.yaml"
    config.write_text(MICRO.read_text() + "\nextraction:\n  batch_size: 4\n")
    with pytest.raises(WorkflowError) as error:
        run(tmp_path, config=config, dryrun=True)
    lines = [i + 1 for i, line in enumerate(config.read_text().splitlines()) if line.startswith("extraction:")]
    assert str(config) in str(error.value) and "'extraction'" in str(error.value)
    assert f"lines {lines[0]} and {lines[1]}" in str(error.value)


def test_truncated_table_stops_the_dry_run_naming_it(built, tmp_path, capfd):
    """A table cut short is named with how to rebuild it, before any job deletes a good output."""
    workdir = tmp_path / "truncated"
    shutil.copytree(built[0] / "results", workdir / "results")
    table = workdir / layout.layer_table("micro_cls", "hs", 1)
    table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    figure = workdir / "results/figures/fig_change_rate.pdf"
    with pytest.raises(WorkflowError) as error:
        run(workdir, dryrun=True)
    assert layout.layer_table("micro_cls", "hs", 1) in str(error.value) and "rebuild them as targets" in str(
        error.value
    )
    assert figure.is_file()
    # What the message says to do: delete it, and ask for it.
    table.unlink()
    target = layout.layer_table("micro_cls", "hs", 1)
    assert "merge_extraction_micro_cls" in planned_rules(jobs_to_run(workdir, capfd, targets=[target]))


def test_unknown_model_architecture_names_the_key(tmp_path):
    """Stopped when the workflow is read (the model check builds every architecture), before any job."""
    config = edited_micro_config(tmp_path, lambda c: c["models"]["micro_cls"].update(arch="vit_does_not_exist"))
    with pytest.raises(WorkflowError) as error:
        run(tmp_path, [layout.checkpoint("micro_cls_random")], config=config)
    assert "invalid config: models.micro_cls.arch: 'vit_does_not_exist' is not a timm model" in str(error.value)
    assert not (tmp_path / "results").exists()


def test_report_has_every_figure_and_table_with_its_caption(built, tmp_path):
    """`snakemake --report` packs every reported output with the caption from report/<name>.rst."""
    import zipfile

    workdir, _ = built
    report = tmp_path / "report.zip"
    workflow_runs.snakemake("--report", str(report), configfiles=[MICRO], workdir=workdir, timeout=None, check=True)
    names = zipfile.ZipFile(report).namelist()
    page = "".join(
        zipfile.ZipFile(report).read(n).decode(errors="ignore") for n in names if n.endswith((".html", ".js"))
    )
    reported = [
        p
        for p in (workdir / "results").rglob("*")
        if p.suffix in (".pdf", ".csv") and (p.parent.name == "figures" or p.name.startswith("tab_"))
    ]
    assert len(reported) >= 20
    for path in reported:
        assert any(n.endswith(path.name) for n in names), f"{path.name} is missing from the report"
        base = path.stem
        caption_file = next(
            (
                REPO / "report" / f"{stem}.rst"
                for stem in [base, base.rsplit("_micro", 1)[0]]
                if (REPO / "report" / f"{stem}.rst").is_file()
            ),
            None,
        )
        assert caption_file is not None, f"no caption report/<name>.rst for {path.name}"
        # Plain words only: the report escapes symbols such as § in its embedded data.
        first_words = r"\W+".join(re.findall(r"[A-Za-z]+", caption_file.read_text())[:2])
        assert re.search(first_words, page), f"the caption of {path.name} is not in the report"


def test_report_with_odd_display_name_opens_cleanly_in_chromium(built, tmp_path):
    """Quotes, a backslash, an ampersand and a `$` in a display name reach the report's embedded
    params (a `<` is refused at the dry run, above): the page loads without a script error and
    lists the figures."""
    executable = find_browser()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs chromium (.ci/run), but no Chromium is on PATH")
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    workdir, _ = built
    name = 'Micro "ViT" \\ it\'s & $x$ é'
    config = edited_micro_config(tmp_path, lambda c: c["models"]["micro_cls"].update(display_name=name))
    report = tmp_path / "report.html"
    workflow_runs.snakemake("--report", str(report), configfiles=[config], workdir=workdir, timeout=None, check=True)
    browser = Browser(executable, tmp_path / "profile")
    try:
        browser.open(report.as_uri())
        title = browser.evaluate("document.title")
        # The report's own navigation, clicked as a user would: the category, then the model.
        for label in ("Class building", "micro_cls"):
            browser.evaluate(
                "[...document.querySelectorAll('*')]"
                f".find((e) => e.children.length === 0 && e.textContent.trim() === {label!r}).click()"
            )
            time.sleep(0.5)
        assert "fig_class_building_micro_cls.pdf" in browser.evaluate("document.body.innerText")
        assert browser.errors() == []
        assert browser.evaluate("document.title") == title
    finally:
        browser.close()
