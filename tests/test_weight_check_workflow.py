"""The weight check and the tutorial figures through the real rules: a sample image downloaded
from a file:// URL with its sha256, a tiny checkpoint given as a file, expected values computed
by brute force. Extraction waits for the check; a wrong expected value stops the run naming it."""

import hashlib
import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_weight_check import CLASS, SQUASH, TINY, brute_force_values, sample, spec  # noqa: F401 (fixture)
from workflow_runs import snakemake, write_config

from class_embedding import results_layout as layout
from class_embedding.models import preprocessing

pytestmark = pytest.mark.workflow


def run_tiny(config: dict, workdir: Path, *targets, dry_run=False) -> subprocess.CompletedProcess:
    mode = ["-n", "--quiet", "rules"] if dry_run else ["--cores", "2"]
    config_file = write_config(config, workdir / "config.yaml")
    return snakemake(*targets, *mode, configfiles=[config_file], workdir=workdir, timeout=600)


@pytest.fixture(scope="module")
def setup(tmp_path_factory, scrambled_vit, sample):  # noqa: F811
    root = tmp_path_factory.mktemp("weight_check_workflow")
    model = scrambled_vit(seed=0, **TINY)
    checkpoint = root / "tiny.pt"
    torch.save(model.state_dict(), checkpoint)
    image = preprocessing.Preprocessing(SQUASH)(preprocessing.load_image(sample.path))
    expected = brute_force_values(model, image, CLASS)
    expected["image"] = "sample"
    entry = {**spec(), "dataset": "micro", "weights": {"source": "file", "path": str(checkpoint)}, "random_twin": False}
    config = {
        "seed": 2,
        # Never generated here: the sample image is a downloaded file, not a stimulus.
        "datasets": {"micro": {"generate": {"num_classes": 4, "image_size": [32, 48]}}},
        "models": {"tiny": entry},
        "sample_images": {"sample": {
            "url": sample.path.as_uri(),
            "checksum": "sha256:" + hashlib.sha256(sample.path.read_bytes()).hexdigest(),
            "class_index": CLASS,
        }},
        "expected_values": {"tiny": expected},
        "tutorial": {"model": "tiny", "cls_logits": {"image": "sample"}, "heatmap": {"image": "sample"}},
    }  # fmt: skip
    return root, config, sample


def test_check_passes_and_tutorial_figures_are_built(setup):
    root, config, sample_image = setup
    work = root / "pass"
    targets = [f"results/figures/fig_tutorial_{name}.pdf" for name in ("cls_logits", "heatmap")]
    result = run_tiny(config, work, *targets)
    assert result.returncode == 0, result.stderr[-4000:]
    results = work / "results"
    assert (work / "resources/samples/sample").read_bytes() == sample_image.path.read_bytes()
    report = json.loads((results / "checks/weights_tiny.json").read_text())
    assert len(report["compared"]) == 3 * 6 * 5 and all(entry["ok"] for entry in report["compared"])
    logits = pd.read_csv(results / "tables/fig_tutorial_cls_logits.csv")
    assert set(logits["layer"]) == {"hs_0"}  # null block = the second to last of 2
    assert len(logits) == 10
    heatmap = pd.read_csv(results / "tables/fig_tutorial_heatmap.csv")
    assert heatmap["token"].tolist() == list(range(1, 17)) and set(heatmap["target"]) == {CLASS}
    assert heatmap["normalised"].min() == 0 and heatmap["normalised"].max() == 1
    for name in ("cls_logits", "heatmap"):
        assert (results / f"figures/fig_tutorial_{name}.png").stat().st_size > 1000


def test_every_extraction_waits_for_the_check(setup):
    root, config, _ = setup
    result = run_tiny(config, root / "plan", layout.layer_table("tiny", "hs", 0), dry_run=True)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = result.stdout + result.stderr
    assert "weight_check" in jobs and "download_sample_image" in jobs and "extract_shard" in jobs


def test_a_wrong_value_stops_the_run_naming_it(setup):
    root, config, _ = setup
    expected = json.loads(json.dumps(config["expected_values"]["tiny"]))
    right = expected["ranks"]["hs_1"][2]
    expected["ranks"]["hs_1"][2] = (right + 1) % 10
    expected["logits"] = {}  # the rank is then the first mismatch listed
    wrong = {**config, "expected_values": {"tiny": expected}}
    result = run_tiny(wrong, root / "fail", "results/checks/weights_tiny.json")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "weight check of model 'tiny' failed on sample image 'sample'" in output
    assert f"rank of class {CLASS} at hs_1 token 2: expected {(right + 1) % 10}, found {right}" in output
    assert not (root / "fail/results/checks/weights_tiny.json").exists()


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c["expected_values"]["tiny"]["ranks"].update(hs_7=[0]),
            r"expected_values\.tiny\.ranks\.hs_7: model 'tiny' has blocks 0\.\.1",
        ),
        (
            lambda c: c["expected_values"].update(other={"image": "sample"}),
            r"expected_values\.other: 'other' is not a model or random twin",
        ),
        (
            lambda c: c["expected_values"]["tiny"].update(image="beagle"),
            r"expected_values\.tiny\.image: 'beagle' is not a key of sample_images",
        ),
        (lambda c: c["sample_images"]["sample"].pop("checksum"), r"sample_images\.sample"),
    ],
)
def test_config_errors_stop_the_dry_run(setup, tmp_path, edit, message):
    import re

    _, config, _ = setup
    config = json.loads(json.dumps(config))
    edit(config)
    result = run_tiny(config, tmp_path, dry_run=True)
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr), (result.stdout + result.stderr)[-2000:]
