"""Non-square token grids (``token_grid: [rows, cols]``, images resized to [height, width]): the
layout, the token labels against a cell-by-cell brute force, every lens cell against the model's
own output, token removal against the masked full forward, and the demo training's shifts."""

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from masked_attention import build, last_block, reference
from test_model_families import TINY, assert_every_cell_is_the_models_own_output, images

from class_embedding.analyses import model_runs
from class_embedding.data import imagenet_s
from class_embedding.errors import InputError
from class_embedding.extraction import model_audit
from class_embedding.models import families, training
from class_embedding.models.tokens import TokenLayout
from class_embedding.token_grid import grid_name, parse_grid_name

WIDE = (32, 48)  # height x width: 4 rows of 6 patches of 8 pixels


def test_a_grid_is_a_side_or_rows_and_columns():
    wide = TokenLayout.of({"token_grid": [4, 6], "class_token": True})
    assert (wide.grid, wide.n_image_tokens, wide.n_tokens, wide.grid_name) == ((4, 6), 24, 25, "4x6")
    assert wide.metadata()["token_grid"] == [4, 6]
    square = TokenLayout.of({"token_grid": [5, 5], "class_token": False})
    assert (square.token_grid, square.grid, square.grid_name) == (5, (5, 5), "5")
    assert TokenLayout(token_grid=7, class_token=True).metadata()["token_grid"] == 7  # as before
    assert [parse_grid_name(grid_name(g)) for g in (7, [4, 6], (6, 4))] == [(7, 7), (4, 6), (6, 4)]
    for bad in ([4, 0], [4, 6, 2], "4", True, 2.5):
        with pytest.raises(InputError, match="models.m.token_grid is"):
            TokenLayout.of({"name": "m", "token_grid": bad, "class_token": True})


def brute_force_labels(mask: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell by cell: the label of the pixel nearest-neighbour resizing takes (the cell's top-left
    source pixel) and the share of class pixels among the cell's pixels."""
    height, width = mask.shape
    labels, fractions = [], []
    for r in range(rows):
        for c in range(cols):
            labels.append(mask[int(r * height / rows), int(c * width / cols)])
            top, bottom = int(r * height / rows), int((r + 1) * height / rows)
            left, right = int(c * width / cols), int((c + 1) * width / cols)
            fractions.append(mask[top:bottom, left:right].mean())
    return np.array(labels, np.int8), np.array(fractions, np.float32)


@pytest.mark.parametrize("grid", [(3, 5), (5, 3), (4, 4)])
def test_token_labels_of_a_grid_are_the_cell_by_cell_brute_force(grid):
    mask = np.random.default_rng(1).random((13, 20)) < 0.4
    labels, fractions = imagenet_s.token_labels(mask, grid)
    expected_labels, expected_fractions = brute_force_labels(mask, *grid)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(fractions, expected_fractions, rtol=1e-6)
    table = imagenet_s.token_label_rows(np.array([0, 1]), [mask, ~mask], grid).to_pydict()
    assert len(table["token"]) == 2 * grid[0] * grid[1]
    if grid[0] == grid[1]:  # a square grid given as its side is the same grid
        np.testing.assert_array_equal(imagenet_s.token_labels(mask, grid[0])[0], labels)


@pytest.mark.parametrize(
    ("arch", "extra"),
    [
        ("vit_base_patch16_224", {}),
        ("vit_relpos_small_patch16_224", {}),
        ("eva02_tiny_patch14_224", {}),
        ("vit_small_patch16_dinov3", {}),
    ],
    ids=["plain", "relpos", "eva02_rope", "dinov3_rope_registers"],
)
def test_every_cell_of_a_wide_model_is_its_own_output(arch, extra):
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, **{**TINY, "img_size": WIDE, **extra})
    model = families.randomise_identity_like(model, 0).eval()
    assert TokenLayout.of_timm(model).grid == (4, 6)
    assert_every_cell_is_the_models_own_output(model, images(3, WIDE))


@pytest.mark.parametrize("family", ["plain", "relpos_table", "beit", "eva02", "rope_mixed", "dinov3"])
def test_token_removal_on_a_wide_grid_is_the_masked_full_forward(scrambled_vit, family):
    model = build(scrambled_vit, family, 5, img_size=(16, 24))
    batch = torch.randn(3, 3, 16, 24, generator=torch.Generator().manual_seed(2))
    n_prefix, n_patches = model.num_prefix_tokens, model.patch_embed.num_patches
    assert n_patches == 24
    generator = torch.Generator().manual_seed(3)
    chosen = [torch.randperm(n_patches, generator=generator)[:7].sort().values + n_prefix for _ in range(3)]
    positions = torch.cat([torch.arange(n_prefix).expand(3, -1), torch.stack(chosen)], dim=1)
    with model_runs.TokenSelection(model) as tokens:
        tokens.set_positions(positions)
        state, logits = last_block(model, batch)
    expected, expected_logits = reference(model, batch, positions)
    torch.testing.assert_close(state, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-4, atol=1e-4)


def test_a_wide_dynamic_model_checks_rows_and_columns_apart():
    entry = {
        "dataset": "d",
        "arch": "vit_base_patch16_224",
        "kwargs": {**TINY, "img_size": list(WIDE), "dynamic_img_size": True},
        "num_blocks": 2,
        "token_grid": [4, 6],
        "class_token": True,
        "num_classes": 7,
        "weights": {"source": "demo_training"},
        "preprocessing": {"resize": list(WIDE), "mean": [0.5] * 3, "std": [0.5] * 3},
    }
    model_audit.check_architecture(entry, "m")
    # 48x32 images give the same 24 tokens, transposed: refused, naming both grids.
    tall = {**entry, "preprocessing": {**entry["preprocessing"], "resize": [48, 32]}}
    with pytest.raises(
        InputError, match=r"cuts into a 6x4 token grid \(rows x columns\), not the declared token_grid 4x6"
    ):
        model_audit.check_architecture(tall, "m")


def old_square_augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The shifts as written before non-square images (square images only)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    side = images.shape[-1]
    pad = side // 8
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    return padded[..., dy : dy + side, dx : dx + side]


def test_training_shifts_keep_wide_images_and_square_runs_as_they_were():
    square = torch.randn(4, 3, 32, 32)
    for seed in range(5):
        got = training.augment(square, torch.Generator().manual_seed(seed))
        torch.testing.assert_close(got, old_square_augment(square, torch.Generator().manual_seed(seed)), rtol=0, atol=0)
    wide = torch.randn(2, 3, 32, 48)
    shifts = set()
    for seed in range(30):
        got = training.augment(wide, torch.Generator().manual_seed(seed))
        assert got.shape == wide.shape
        shifts.add(find_shift(wide, got))
    # Each axis shifted within its own range: up to 1/8 of the height (4) and of the width (6).
    assert {dy for dy, _ in shifts} <= set(range(9)) and {dx for _, dx in shifts} <= set(range(13))
    assert max(dx for _, dx in shifts) > 8 and len(shifts) > 10


def find_shift(images: torch.Tensor, got: torch.Tensor) -> tuple[int, int]:
    """The (dy, dx) offset into the reflect-padded batch (each image flipped or not) that gives ``got``."""
    height, width = images.shape[-2:]
    pad_y, pad_x = height // 8, width // 8
    both = [F.pad(x, (pad_x, pad_x, pad_y, pad_y), mode="reflect") for x in (images, images.flip(-1))]
    for dy in range(2 * pad_y + 1):
        for dx in range(2 * pad_x + 1):
            crops = [p[..., dy : dy + height, dx : dx + width] for p in both]
            if all(any(torch.equal(c[i], got[i]) for c in crops) for i in range(len(got))):
                return dy, dx
    raise AssertionError("no shift within 1/8 of each side gives the augmented images")
