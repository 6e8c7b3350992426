"""Each model's preprocessing in config/paper.yaml (docs/method.md §1): hand-computed pixels, and the
MIIL entry against timm's own eval transform for that model."""

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from class_embedding.models import preprocessing

PAPER = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "paper.yaml").read_text())
PREPROCESSING = {name: spec["preprocessing"] for name, spec in PAPER["models"].items()}


def unique_pixels(width: int, height: int) -> Image.Image:
    """An image whose pixels are distinguishable: R = column, G = row (mod 256), B = 7."""
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    return Image.fromarray(np.stack([cols % 256, rows % 256, np.full_like(cols, 7)], -1).astype(np.uint8))


def normalised(rgb, spec) -> np.ndarray:
    return (np.asarray(rgb, np.float32) / 255 - np.asarray(spec["mean"], np.float32)) / np.asarray(
        spec["std"], np.float32
    )


def test_the_paper_declares_what_the_original_used():
    squash = {"resize": [224, 224], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
    for name in ("vit_b_32", "vit_b_16", "vit_large_16", "vit_gap_16", "vit_cifar_16"):
        assert PREPROCESSING[name] == squash, name
    assert PREPROCESSING["deit_ensemble_16"] == {
        "resize": [256, 256],
        "crop": 224,
        "interpolation": "bicubic",
        "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225],
    }
    assert PREPROCESSING["vit_miil_16"] == {
        "resize": 256,
        "crop": 224,
        "interpolation": "bilinear",
        "mean": [0.0] * 3,
        "std": [1.0] * 3,
    }


@pytest.mark.parametrize("name", ["vit_b_16", "vit_gap_16", "vit_cifar_16"])
def test_squash_keeps_a_224_image_and_normalises_by_half(name):
    spec = PREPROCESSING[name]
    out = preprocessing.Preprocessing(spec)(unique_pixels(224, 224))
    assert out.shape == (3, 224, 224)
    # Pixel (row 100, column 30) = (30, 100, 7) → (v/255 − 0.5)/0.5.
    assert out[:, 100, 30].numpy() == pytest.approx([30 / 127.5 - 1, 100 / 127.5 - 1, 7 / 127.5 - 1], abs=1e-6)


def test_cifar_squash_upsamples_a_uniform_32_pixel_image_to_224():
    out = preprocessing.Preprocessing(PREPROCESSING["vit_cifar_16"])(Image.new("RGB", (32, 32), (10, 128, 250)))
    assert out.shape == (3, 224, 224)
    assert out[:, 0, 0].numpy() == pytest.approx([10 / 127.5 - 1, 128 / 127.5 - 1, 250 / 127.5 - 1], abs=1e-6)
    assert torch.all(out == out[:, :1, :1])


def test_deit_crops_the_centre_224_of_the_256_square():
    spec = PREPROCESSING["deit_ensemble_16"]
    out = preprocessing.Preprocessing(spec)(unique_pixels(256, 256))  # already 256×256: no resampling
    assert out.shape == (3, 224, 224)
    # Output (0, 0) is input (16, 16); output (10, 200) is input row 26, column 216.
    assert out[:, 0, 0].numpy() == pytest.approx(normalised((16, 16, 7), spec), abs=1e-5)
    assert out[:, 10, 200].numpy() == pytest.approx(normalised((216, 26, 7), spec), abs=1e-5)


def test_miil_resizes_the_shorter_side_and_crops_like_timm():
    spec = PREPROCESSING["vit_miil_16"]
    # 256 wide, 301 high: the shorter side is already 256, so only the crop acts; torchvision
    # centres it at round((301 − 224)/2) = round(38.5) = 38 (half to even), not floor + 1.
    out = preprocessing.Preprocessing(spec)(unique_pixels(256, 301))
    assert out.shape == (3, 224, 224)
    assert out[:, 0, 0].numpy() == pytest.approx([16 / 255, 38 / 255, 7 / 255], abs=1e-6)


@pytest.mark.parametrize("size", [(500, 366), (333, 500), (640, 427), (256, 256)])
def test_miil_equals_timms_eval_transform_for_its_pretrained_config(size):
    import timm.data
    from timm.models import get_pretrained_cfg

    cfg = timm.data.resolve_data_config(
        pretrained_cfg=get_pretrained_cfg("vit_base_patch16_224_miil.in21k_ft_in1k").to_dict()
    )
    assert cfg["interpolation"] == "bilinear" and cfg["crop_pct"] == 0.875 and cfg["mean"] == (0.0, 0.0, 0.0)
    timm_transform = timm.data.create_transform(**cfg)
    image = Image.fromarray(np.random.default_rng(sum(size)).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    ours = preprocessing.Preprocessing(PREPROCESSING["vit_miil_16"])(image)
    assert torch.allclose(ours, timm_transform(image), atol=1e-6)


@pytest.mark.parametrize("size", [(500, 375), (375, 500)])
def test_squash_equals_a_bilinear_pil_resize(size):
    spec = PREPROCESSING["vit_b_32"]
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    expected = normalised(image.resize((224, 224), Image.Resampling.BILINEAR), spec).transpose(2, 0, 1)
    assert preprocessing.Preprocessing(spec)(image).numpy() == pytest.approx(expected, abs=1e-6)
