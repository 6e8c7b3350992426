"""End to end on a plain labelled image folder, with and without masks (prefix tokens besides
[CLS] run end to end in tests/test_examples.py: registers_cls, distilled)."""

import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import yaml
from PIL import Image
from workflow_runs import snakemake, write_config

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.workflow


def run_micro(config: Path, workdir: Path, *targets: str) -> subprocess.CompletedProcess:
    return snakemake("--cores", "2", *targets, configfiles=[config], workdir=workdir, timeout=3000)


def write_image_folder(root: Path) -> None:
    """Three class folders (class names of timm's ImageNet-1k list) of four small PNGs each."""
    rng = np.random.default_rng(0)
    for label in ("tench", "goldfish", "great_white_shark"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"img{i}.png")


def image_folder_config(tmp_path: Path, masks: Path | None = None) -> Path:
    """The micro config on your own folder (and masks), with your own 1000-class checkpoint (a
    random tiny model here)."""
    images = tmp_path / "images"
    write_image_folder(images)
    config = yaml.safe_load((REPO / "tests" / "configs" / "micro.yaml").read_text())
    folder = {"root": str(images), "labels": "class_name", **({"masks": str(masks)} if masks else {})}
    config["datasets"] = {"mine": {"image_folder": folder}}
    cls_model = config["models"]["micro_cls"]
    kwargs = {**cls_model["kwargs"], "num_classes": 1000}
    torch.manual_seed(0)
    checkpoint = tmp_path / "mine.pt"
    torch.save(timm.create_model(cls_model["arch"], pretrained=False, **kwargs).state_dict(), checkpoint)
    config["models"] = {
        "folder_cls": {
            **cls_model,
            "dataset": "mine",
            "kwargs": kwargs,
            "num_classes": 1000,
            "weights": {"source": "file", "path": str(checkpoint)},
            "random_twin": False,
        }
    }
    config["stimuli"]["images_per_class"] = 2
    return write_config(config, tmp_path / "config.yaml")


def test_image_folder_masks_outline_the_token_maps(tmp_path):
    masks = tmp_path / "masks"
    for label in ("tench", "goldfish", "great_white_shark"):
        (masks / label).mkdir(parents=True)
        for i in range(4):
            pixels = np.zeros((40, 36), dtype=np.uint8)
            pixels[:20, :18] = 255  # the top-left quarter is the class
            Image.fromarray(pixels).save(masks / label / f"img{i}.png")
    config_file = image_folder_config(tmp_path, masks)
    workdir = tmp_path / "work"
    result = run_micro(config_file, workdir, "results/figures/fig_token_maps_folder_cls.pdf")
    assert result.returncode == 0, result.stderr[-5000:]
    labels = pd.read_parquet(workdir / "results/data/mine/token_labels_g4.parquet")
    # 40x36 pixels resized and cropped to the 4x4 grid: the top-left 2x2 tokens are the class.
    first = labels[labels["image"] == 0].sort_values("token")["label"].astype(str).tolist()
    assert first == ["class", "class", "context", "context"] * 2 + ["context"] * 8


def test_image_folder_without_masks_skips_the_class_context_targets(tmp_path):
    config_file = image_folder_config(tmp_path)
    workdir = tmp_path / "work"
    result = run_micro(config_file, workdir)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "Skipped targets:" in result.stderr
    assert "fig_context_identifiability_folder_cls" in result.stderr
    results = workdir / "results"
    stimuli = pd.read_parquet(results / "data/mine/stimuli.parquet")
    assert list(stimuli["class_index"]) == [1, 1, 2, 2, 0, 0]  # goldfish, great white shark, tench
    assert not list(results.glob("data/mine/token_labels_*"))
    assert not (results / "figures/fig_context_identifiability_folder_cls.pdf").exists()
    assert (results / "figures/fig_identifiability_evolution.pdf").is_file()
    assert (results / "figures/fig_class_building_folder_cls.pdf").is_file()
    assert pd.read_csv(results / "tables/tab_identifiability_rates.csv")["n_image_tokens"].tolist() == [16]


def test_dry_run_says_what_an_image_folder_leaves_out_and_stops_when_too_little_remains(tmp_path):
    """Short folders and macOS `._` files are said on the console at the dry run; with too few
    classes left the dry run stops naming the folders and both settings."""
    config_file = image_folder_config(tmp_path)
    images = tmp_path / "images"
    (images / "goldfish" / "img3.png").unlink()
    (images / "goldfish" / "._img0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    config = yaml.safe_load(config_file.read_text())
    config["stimuli"]["images_per_class"] = 4
    write_config(config, config_file)
    result = snakemake("-n", configfiles=[config_file], workdir=tmp_path / "work")
    assert result.returncode == 0, result.stderr[-5000:]
    assert "datasets.mine.image_folder:" in result.stderr and "goldfish" in result.stderr
    assert "1 hidden file" in result.stderr
    (images / "tench" / "img3.png").unlink()
    result = snakemake("-n", configfiles=[config_file], workdir=tmp_path / "work")
    assert result.returncode != 0
    output = result.stdout + result.stderr  # Snakemake prints errors of the Snakefile on stdout
    assert "'goldfish' (3), 'tench' (3)" in output
    assert "stimuli.images_per_class" in output and "stimuli.min_class_share" in output
