"""`snakemake preflight` on the paper config: every download, checkpoint, conversion and weight
check, and the check of your paths, but nothing that reads ImageNet or needs a GPU. The path
checks themselves on small fakes of each layout. Offline, it fails in seconds and ends with one
summary of every check that says what to do for each failure."""

import os
import pickle
import re
import tarfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from test_downloads import closed_port_url
from test_paper_config import REPO, dry_run, job_counts, paper_copy
from workflow_runs import snakemake, write_config

from class_embedding import job_status
from class_embedding.data import user_inputs
from class_embedding.errors import InputError
from class_embedding.models import building, checkpoints, pretrained

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

# What preflight may plan: fetching, converting and auditing, and checks (all on the CPU).
PREFLIGHT_RULES = {
    "download", "download_sample_image", "download_checkpoint", "fetch_timm_weights", "convert_checkpoint",
    "fetch_finetune_init", "random_twin_checkpoint", "weight_check", "check_user_inputs", "preflight",
}  # fmt: skip


def preflight_jobs(tmp_path, **edits):
    config = paper_copy(tmp_path, **edits)
    result = dry_run(tmp_path, config, "preflight")
    assert result.returncode == 0, result.stderr[-3000:]
    return job_counts(result.stdout + result.stderr)


@pytest.mark.workflow
def test_preflight_plans_downloads_checkpoints_and_checks_only(tmp_path):
    jobs = preflight_jobs(tmp_path)
    jobs.pop("total")
    assert set(jobs) == PREFLIGHT_RULES
    assert jobs["download"] == 6  # the five ImageNet-S files and the CIFAR-100 archive
    assert jobs["download_sample_image"] == 2  # the beagle and the impala
    assert jobs["fetch_timm_weights"] == 5 and jobs["random_twin_checkpoint"] == 6
    assert jobs["download_checkpoint"] == 1 and jobs["convert_checkpoint"] == 1  # the DeiT release
    assert jobs["fetch_finetune_init"] == 1  # the CIFAR model's start, not its fine-tuning
    assert jobs["weight_check"] == 1  # ViT-B/16, the model with the tutorial's values
    # No GPU job and nothing that reads the ImageNet archive or the CIFAR images.
    for rule in ("finetune_cifar", "prepare_imagenet_s", "prepare_cifar100", "extract_shard", "stimuli"):
        assert rule not in jobs


@pytest.mark.workflow
def test_preflight_converts_a_given_cifar_checkpoint(tmp_path):
    checkpoint = tmp_path / "vit_base_patch16_224-CIFAR100.pt"
    checkpoint.write_bytes(b"")
    jobs = preflight_jobs(tmp_path, **{"models.vit_cifar_16.weights.path": str(checkpoint)})
    assert jobs["convert_checkpoint"] == 2 and "fetch_finetune_init" not in jobs


@pytest.mark.workflow
def test_preflight_plans_no_gpu_resource(tmp_path):
    result = dry_run(tmp_path, paper_copy(tmp_path), "preflight", quiet=False)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "resources:" in output and "gpu=" not in output


# Rules that fetch from the network, and where they write: under resources/, so deleting
# results/ never deletes what took hours to download.
FETCHED = {"download": 6, "download_sample_image": 2, "download_checkpoint": 1}


@pytest.mark.workflow
def test_downloads_go_to_resources_not_results(tmp_path):
    result = dry_run(tmp_path, paper_copy(tmp_path), "preflight", quiet=False)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {rule: [] for rule in FETCHED}
    rule = None
    for line in (result.stdout + result.stderr).splitlines():
        if match := re.match(r"\s*(?:local)?rule (\w+):$", line):
            rule = match.group(1)
        elif (match := re.match(r"\s*output: (.*)$", line)) and rule in outputs:
            outputs[rule] += match.group(1).split(", ")
    assert {rule: len(paths) for rule, paths in outputs.items()} == FETCHED
    for rule, paths in outputs.items():
        assert all(path.startswith("resources/") for path in paths), (rule, paths)
    assert "resources/weights/release/deit_ensemble_16.pth" in outputs["download_checkpoint"]
    assert yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["weights_cache"] == "resources/weights"


def imagenet_s_datasets(val):
    return {"imagenet_s": {"imagenet_s": {"imagenet_val": str(val), "downloads": {}}}}


def test_imagenet_val_archive_is_opened_not_read(tmp_path):
    image = tmp_path / "ILSVRC2012_val_00000001.JPEG"
    image.write_bytes(b"jpeg bytes")
    archive = tmp_path / "val.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(image, arcname=image.name)
    (checked,) = user_inputs.check_user_inputs(imagenet_s_datasets(archive), set())
    assert checked["kind"] == "tar archive" and checked["key"] == "datasets.imagenet_s.imagenet_s.imagenet_val"
    not_tar = tmp_path / "val_copy.tar"
    not_tar.write_bytes(b"not an archive")
    with pytest.raises(InputError, match="neither a directory nor a tar archive"):
        user_inputs.check_user_inputs(imagenet_s_datasets(not_tar), set())


def test_imagenet_val_folder_counts_its_images(tmp_path):
    folder = tmp_path / "val"
    for index, wnid in enumerate(["n01440764", "n01443537", None]):
        target = folder / wnid if wnid else folder
        target.mkdir(parents=True, exist_ok=True)
        (target / f"ILSVRC2012_val_{index + 1:08d}.JPEG").write_bytes(b"x")
    (checked,) = user_inputs.check_user_inputs(imagenet_s_datasets(folder), set())
    assert checked["images"] == 3 and "50000" in checked["warning"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"imagenet_val: the folder '.*empty' holds no ILSVRC2012_val_"):
        user_inputs.check_user_inputs(imagenet_s_datasets(empty), set())


def cifar_root(tmp_path, files=("test", "meta"), classes=100):
    folder = tmp_path / "cifar" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in files:
        content = {"fine_label_names": [f"c{i}" for i in range(classes)]} if name == "meta" else {}
        (folder / name).write_bytes(pickle.dumps(content))
    return {"cifar100": {"cifar100": {"root": str(tmp_path / "cifar")}}}


def test_cifar_root_layout(tmp_path):
    (checked,) = user_inputs.check_user_inputs(cifar_root(tmp_path / "a"), set())
    assert checked["files"] == ["test", "meta"]
    # Fine-tuning here needs the training split too.
    with pytest.raises(InputError, match=r"datasets\.cifar100\.cifar100\.root: .* lacks cifar-100-python/train"):
        user_inputs.check_user_inputs(cifar_root(tmp_path / "b"), {"cifar100"})
    with pytest.raises(InputError, match="names 10 classes, CIFAR-100 has 100"):
        user_inputs.check_user_inputs(cifar_root(tmp_path / "c", classes=10), set())


# Offline: every fetching job fails in seconds, is never retried, and names what it needs and the
# two ways to supply it; the run ends with one table of every check (class_embedding/job_status.py).
TIMM_TAGS = {
    name: spec["weights"].get("tag") or spec["weights"]["finetune"]["init_tag"]
    for name, spec in yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["models"].items()
    if spec["weights"]["source"] == "timm" or spec["weights"].get("finetune")
}


def offline_env(monkeypatch=None) -> dict:
    """The environment of an offline machine: no proxy, and the Hugging Face Hub on a closed port."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env["HF_ENDPOINT"] = closed_port_url("")
    if monkeypatch is not None:
        for name in PROXY_VARIABLES:
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.setenv("HF_ENDPOINT", env["HF_ENDPOINT"])
    return env


def point_urls_at(node, base):
    """Every ``url`` of the config on ``base``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "url":
                node[key] = f"{base}/{value.rsplit('/', 1)[-1]}"
            else:
                point_urls_at(value, base)


@pytest.mark.workflow
def test_offline_preflight_fails_fast_with_one_summary_saying_what_to_do(tmp_path):
    config_path = paper_copy(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    point_urls_at(config, closed_port_url(""))
    write_config(config, config_path)
    with tarfile.open(tmp_path / "ILSVRC2012_img_val.tar", "w") as tar:  # opens as an archive
        image = tmp_path / "ILSVRC2012_val_00000001.JPEG"
        image.write_bytes(b"jpeg")
        tar.add(image, arcname=image.name)
    # The random twins (CPU minutes at full size) are taken as built.
    checkpoints = tmp_path / "work" / "results" / "checkpoints"
    checkpoints.mkdir(parents=True)
    twins = [f"{m}_random" for m, spec in config["models"].items() if spec["random_twin"]]
    for twin in twins:
        (checkpoints / f"{twin}.pt").write_bytes(b"")

    start = time.monotonic()
    result = snakemake(
        "preflight", "-k", "--cores", "2", configfiles=[config_path], workdir=tmp_path / "work", env=offline_env()
    )
    elapsed = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert elapsed < 120, f"offline preflight took {elapsed:.0f} s"
    assert "Trying to restart" not in output, "an unreachable host must not be retried"
    assert "Traceback" not in output and "LocalEntryNotFoundError" not in output
    assert output.count("Preflight summary:") == 1
    summary = output[output.index("Preflight summary:") :]
    # Failed: 6 timm fetches, 6 dataset downloads, the DeiT release, 2 sample images; not run: the
    # DeiT conversion and the weight check; ok: the check of your paths and the random twins.
    assert summary.startswith("Preflight summary: 15 of 24 checks FAILED, 2 not run.")
    rows = {check: status for status, check in re.findall(r"^ +\d+  (ok|FAILED|not run) +(.+?)  +\S+$", summary, re.M)}
    assert len(rows) == 24 and rows["check_user_inputs"] == "ok"
    assert all(rows[f"random_twin_checkpoint {twin}"] == "ok" for twin in twins)
    assert rows["weight_check vit_b_16"] == "not run" and "weight_check vit_b_16 (not run): waits for" in summary
    for name, tag in TIMM_TAGS.items():
        rule = "fetch_finetune_init" if name == "vit_cifar_16" else "fetch_timm_weights"
        assert rows[f"{rule} {name}"] == "FAILED"
        assert f"models.{name} needs the timm weights {tag}" in summary
        assert f"hf download timm/{tag} model.safetensors --cache-dir resources/weights" in summary
        if rule == "fetch_timm_weights":
            assert f"models.{name}.weights: {{source: file, path: /path/to/model.safetensors}}" in summary
    assert "models.deit_ensemble_16.weights: {source: file, path:" in summary
    assert "put it at resources/downloads/imagenet_s/segmentation" in summary
    assert (tmp_path / "work" / "results" / "logs" / "preflight_summary.txt").read_text().strip() in summary


def test_summary_rows_say_ok_failed_or_what_a_check_waits_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("ok.txt").write_text("x")
    log_dir = Path("logs")
    log_dir.mkdir()
    for rule, error in [("fetch", "huggingface.co is unreachable"), ("make", None)]:
        smk = SimpleNamespace(rule=rule, log=[str(log_dir / f"{rule}.log")], output=[f"{rule}.txt"])
        job_status.write(smk, error, ["UNVERIFIED download: x"] if rule == "make" else [])
    checks = [
        job_status.Check("fetch m", ["fetch.txt"], log=str(log_dir / "fetch.log")),
        job_status.Check("make", ["ok.txt"], log=str(log_dir / "make.log")),
        job_status.Check("check m", ["check.txt"], inputs=["fetch.txt", "ok.txt"], log=str(log_dir / "check.log")),
    ]
    rows = job_status.summarise(checks, since=0)
    assert [(row.status, row.detail) for row in rows] == [
        ("FAILED", "huggingface.co is unreachable"),
        ("ok", ""),
        ("not run", "waits for [1] fetch m"),
    ]
    text = job_status.format_summary(rows)
    assert text.startswith("Preflight summary: 1 of 3 checks FAILED, 1 not run.")
    assert "[1] fetch m (FAILED): huggingface.co is unreachable" in text
    assert "Notices:\n  [2] make: UNVERIFIED download: x" in text
    assert job_status.format_summary(rows[1:2]).startswith("Preflight summary: all 1 checks passed.")
    # Records of an earlier run: neither its failure nor its notices count now.
    later = job_status.summarise(checks, since=time.time() + 1)
    assert [row.status for row in later] == ["not run", "ok", "not run"] and not later[1].notices


def test_offline_fetch_names_the_tag_and_both_remedies_in_seconds(tmp_path, monkeypatch):
    offline_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    tag = TIMM_TAGS["vit_b_16"]
    start = time.monotonic()
    with pytest.raises(InputError) as error:
        pretrained.check_available("vit_b_16", tag, "resources/weights")
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert (
        f"models.vit_b_16 needs the timm weights {tag}: file model.safetensors of the Hugging Face repository timm/{tag}"
        in message
    )
    assert "models.vit_b_16.weights: {source: file, path: /path/to/model.safetensors}" in message
    assert f"hf download timm/{tag} model.safetensors --cache-dir resources/weights" in message
    with pytest.raises(
        InputError, match=r"(?s)the start of its fine-tuning.*1\. give .*models\.vit_cifar_16\.weights\.path: "
    ):
        pretrained.check_available("vit_cifar_16", tag, "resources/weights", finetune=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="HF_HUB_OFFLINE is set"):
        pretrained.check_available("vit_b_16", tag, "resources/weights")


def tiny_vit_spec():
    tiny = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 1000}
    return {
        "arch": "vit_base_patch16_224", "kwargs": tiny, "num_blocks": 2, "token_grid": 4, "class_token": True,
        "num_classes": 1000, "final_norm": "norm", "display_name": "Tiny", "dataset": "micro",
        "weights": {"source": "timm", "tag": "vit_base_patch16_224.augreg_in21k_ft_in1k"},
        "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
    }  # fmt: skip


def test_weights_in_the_cache_are_read_without_network(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    offline_env(monkeypatch)
    monkeypatch.chdir(tmp_path)
    spec, tag = tiny_vit_spec(), "vit_base_patch16_224.augreg_in21k_ft_in1k"
    source = building.random_model(spec, "m", seed=3)
    # The Hub's cache layout, as `hf download timm/<tag> model.safetensors --cache-dir cache` leaves it.
    repo = tmp_path / "cache" / f"models--timm--{tag}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    weights = repo / "snapshots" / "0123abcd" / "model.safetensors"
    save_file(source.state_dict(), weights)
    pretrained.check_available("m", tag, tmp_path / "cache")
    loaded = pretrained.load_timm_weights(spec, "m", tag, tmp_path / "cache")
    assert all(torch.equal(value, source.state_dict()[key]) for key, value in loaded.state_dict().items())
    # The same file given as `weights: {source: file, path: .../model.safetensors}`: read as tensors.
    state = checkpoints.read_state_dict(weights, "m")
    converted = checkpoints.load_backbone(building.build_model(spec, "m"), state, "m", str(weights))
    assert all(torch.equal(value, source.state_dict()[key]) for key, value in converted.state_dict().items())
