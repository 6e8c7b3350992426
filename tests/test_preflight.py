"""`snakemake preflight` on the paper config: every download, checkpoint, conversion and weight
check, and the check of your paths, but nothing that reads ImageNet or needs a GPU. The path
checks themselves on small fakes of each layout."""

import pickle
import re
import tarfile

import pytest
import yaml
from test_paper_config import REPO, dry_run, job_counts, paper_copy

from class_embedding.data import preflight
from class_embedding.errors import InputError

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
    (checked,) = preflight.check_user_inputs(imagenet_s_datasets(archive), set())
    assert checked["kind"] == "tar archive" and checked["key"] == "datasets.imagenet_s.imagenet_s.imagenet_val"
    not_tar = tmp_path / "val_copy.tar"
    not_tar.write_bytes(b"not an archive")
    with pytest.raises(InputError, match="neither a directory nor a tar archive"):
        preflight.check_user_inputs(imagenet_s_datasets(not_tar), set())


def test_imagenet_val_folder_counts_its_images(tmp_path):
    folder = tmp_path / "val"
    for index, wnid in enumerate(["n01440764", "n01443537", None]):
        target = folder / wnid if wnid else folder
        target.mkdir(parents=True, exist_ok=True)
        (target / f"ILSVRC2012_val_{index + 1:08d}.JPEG").write_bytes(b"x")
    (checked,) = preflight.check_user_inputs(imagenet_s_datasets(folder), set())
    assert checked["images"] == 3 and "50000" in checked["warning"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"imagenet_val: the folder '.*empty' holds no ILSVRC2012_val_"):
        preflight.check_user_inputs(imagenet_s_datasets(empty), set())


def cifar_root(tmp_path, files=("test", "meta"), classes=100):
    folder = tmp_path / "cifar" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name in files:
        content = {"fine_label_names": [f"c{i}" for i in range(classes)]} if name == "meta" else {}
        (folder / name).write_bytes(pickle.dumps(content))
    return {"cifar100": {"cifar100": {"root": str(tmp_path / "cifar")}}}


def test_cifar_root_layout(tmp_path):
    (checked,) = preflight.check_user_inputs(cifar_root(tmp_path / "a"), set())
    assert checked["files"] == ["test", "meta"]
    # Fine-tuning here needs the training split too.
    with pytest.raises(InputError, match=r"datasets\.cifar100\.cifar100\.root: .* lacks cifar-100-python/train"):
        preflight.check_user_inputs(cifar_root(tmp_path / "b"), {"cifar100"})
    with pytest.raises(InputError, match="names 10 classes, CIFAR-100 has 100"):
        preflight.check_user_inputs(cifar_root(tmp_path / "c", classes=10), set())
