"""Prefix tokens ([CLS], [DIST], registers) through every analysis: hand-computed positions for
[CLS]-only, GAP, register and distilled layouts."""

import numpy as np
import pyarrow as pa
import pytest
import timm
import torch

from class_embedding.analyses import (
    class_building,
    class_building_statistics,
    explain_perturbation,
    identifiability,
    perturbation,
)
from class_embedding.analyses.memory_statistics import token_0_kind
from class_embedding.analyses.perturbation_masks import kept_token_mask
from class_embedding.errors import InputError
from class_embedding.extraction import model_audit
from class_embedding.extraction.shards import check_token_count
from class_embedding.models.tokens import CLS, DISTILLATION, IMAGE, REGISTER, TokenLayout
from class_embedding.tables import write_table

CLS_ONLY = TokenLayout(token_grid=2, class_token=True)
GAP = TokenLayout(token_grid=2, class_token=False)
REGISTERS = TokenLayout(token_grid=2, class_token=True, register_tokens=2)
DISTILLED = TokenLayout(token_grid=2, class_token=True, distillation_token=True)
REGISTERS_GAP = TokenLayout(token_grid=2, class_token=False, register_tokens=2)


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        (CLS_ONLY, {CLS: [0], IMAGE: [1, 2, 3, 4]}),
        (GAP, {IMAGE: [0, 1, 2, 3]}),
        (REGISTERS, {CLS: [0], REGISTER: [1, 2], IMAGE: [3, 4, 5, 6]}),
        (DISTILLED, {CLS: [0], DISTILLATION: [1], IMAGE: [2, 3, 4, 5]}),
        (REGISTERS_GAP, {REGISTER: [0, 1], IMAGE: [2, 3, 4, 5]}),
    ],
)
def test_token_types_split_by_kind(layout, expected):
    # Values equal to their position, one image: each kind gets exactly its positions.
    values = np.arange(layout.n_tokens)[None, :] + np.array([[0], [100]])
    split = identifiability.token_types(values, layout)
    assert list(split) == list(expected)
    for kind, positions in expected.items():
        single = kind in (CLS, DISTILLATION)
        np.testing.assert_array_equal(split[kind], values[:, positions[0]] if single else values[:, positions])
    # The corrected image tokens are the grid tokens: grid² of them.
    assert values[:, identifiability.image_tokens(layout)].shape[1] == 4


def test_rates_exclude_registers_but_the_paper_convention_keeps_them():
    # [CLS], 2 registers, 4 image tokens; the registers are identifiable, image tokens 3 and 6 of image 0.
    ranks = np.array([[0, 0, 0, 5, 0, 5, 0], [0, 0, 0, 5, 5, 5, 5]])
    corrected = identifiability.identifiability_rates(ranks, identifiability.image_tokens(REGISTERS))
    paper = identifiability.identifiability_rates(ranks, identifiability.image_tokens(REGISTERS, paper_convention=True))
    assert corrected["n_image_tokens"] == 4
    assert corrected["pct_tokens"] == pytest.approx(100 * (2 / 4 + 0 / 4) / 2)
    assert corrected["n_identifiable_images"] == 1
    # The original dropped token 0 only: the registers count as image tokens there.
    assert paper["n_image_tokens"] == 6
    assert paper["pct_tokens"] == pytest.approx(100 * (4 / 6 + 2 / 6) / 2)
    assert paper["n_identifiable_images"] == 2


def test_cls_only_and_gap_layouts_select_as_before():
    ranks = np.arange(10).reshape(2, 5) % 3
    assert identifiability.image_tokens(CLS_ONLY) == slice(1, None)
    assert ranks[:, identifiability.image_tokens(GAP)].shape == (2, 5)
    assert identifiability.image_tokens(GAP, paper_convention=True) == slice(1, None)


def test_change_rates_report_register_and_distillation_series():
    before = np.zeros((1, 7))
    after = np.array([[1, -1, 1, 1, 1, -1, -1]], dtype=float)
    rates = class_building.sublayer_change_rates(before, {"attn": after}, REGISTERS)
    assert rates == {"attn - [CLS]": 1.0, "attn - register": 0.5, "attn - Image": 0.5}
    rates = class_building.sublayer_change_rates(before[:, :6], {"mlp": after[:, :6]}, DISTILLED)
    assert rates == {"mlp - [CLS]": 1.0, "mlp - [DIST]": 0.0, "mlp - Image": 0.75}


def test_label_grid_places_image_token_t_after_every_prefix_token():
    is_class = np.array([[True, False, False, True]])
    np.testing.assert_array_equal(class_building.label_grid(is_class, DISTILLED), [[-1, -1, 1, 0, 0, 1]])
    np.testing.assert_array_equal(class_building.label_grid(is_class, REGISTERS_GAP), [[-1, -1, 1, 0, 0, 1]])
    np.testing.assert_array_equal(class_building.label_grid(is_class, REGISTERS), [[-1, -1, -1, 1, 0, 0, 1]])


def test_label_grid_of_a_register_model_refuses_a_cls_only_token_count(tmp_path):
    table = pa.table(
        {
            "image": pa.array(np.zeros(4, np.int32)),
            "token": pa.array(np.array([3, 0, 1, 2], np.int16)),
            "label": pa.array(["class", "class", "context", "context"]).dictionary_encode(),
        }
    )
    write_table(table, tmp_path / "token_labels_g2.parquet")
    model = {"name": "reg", "token_grid": 2, "class_token": True, "register_tokens": 2}
    model["token_labels"] = str(tmp_path / "token_labels_g2.parquet")
    np.testing.assert_array_equal(class_building_statistics.load_label_grid(model, 1, 7), [[-1, -1, -1, 1, 0, 0, 1]])
    with pytest.raises(InputError, match="token_labels_g2.parquet does not fit reg"):  # [CLS] + 4 tokens, not 7
        class_building_statistics.load_label_grid(model, 1, 5)


def test_token_perturbation_never_removes_prefix_tokens():
    class_mask = np.array([[True, False, False, True]])
    np.testing.assert_array_equal(kept_token_mask(class_mask, "context", 3), [[1, 1, 1, 1, 0, 0, 1]])
    np.testing.assert_array_equal(kept_token_mask(class_mask, "class_label", 1), [[1, 0, 1, 1, 0]])


def test_explain_keeps_every_prefix_token():
    ordering = np.array([[2, 0, 3, 1]])
    np.testing.assert_array_equal(explain_perturbation.kept_positions(ordering, 2, "negative", 3), [[0, 1, 2, 3, 5]])
    np.testing.assert_array_equal(explain_perturbation.kept_positions(ordering, 1, "positive", 1), [[0, 2]])


def test_attention_perturbation_leaves_prefix_rows_alone():
    weights = torch.full((1, 1, 5, 5), 0.2)
    self_only = perturbation.perturb_attention(weights, "self_only", n_prefix=2)
    torch.testing.assert_close(self_only[0, 0, :2], weights[0, 0, :2])
    torch.testing.assert_close(self_only[0, 0, 2:], torch.eye(5)[2:])
    no_cls = perturbation.perturb_attention(weights, "no_cls", n_prefix=2)
    assert no_cls[0, 0, 1, 0] == 0.2 and torch.all(no_cls[0, 0, 2:, 0] == 0)
    assert torch.all(no_cls[0, 0, 2:, 1:] == 0.2)


def test_token_zero_kind_names_a_register_of_a_gap_model():
    base = {"token_grid": 2}
    assert token_0_kind({**base, "class_token": True, "register_tokens": 4}) == "cls"
    assert token_0_kind({**base, "class_token": False}) == "image"
    assert token_0_kind({**base, "class_token": False, "register_tokens": 4}) == "register"


def test_extraction_refuses_a_token_count_the_layout_does_not_explain():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, reg_tokens=4)
    check_token_count(model, 4 + 1 + 4, "m")
    with pytest.raises(InputError, match="register_tokens"):
        check_token_count(model, 4 + 1, "m")


def test_image_token_maps_of_a_register_model_have_grid_squared_entries():
    from class_embedding.analyses import gradients

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=5, reg_tokens=4
    ).eval()
    layout = TokenLayout.of_timm(model)
    images = torch.randn(2, 3, 32, 32)
    targets = torch.tensor([1, 3])
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    grads = gradients.block_gradients(model, images, targets)
    assert gradients.summed_map(grads, layout.n_prefix).shape == (2, 4)
    relevance = gradients.chefer_relevance(model, images, targets)
    assert relevance.shape == (2, layout.n_tokens)


@pytest.mark.parametrize(
    ("arch", "kwargs", "prefix"),
    [
        ("vit_base_patch16_rope_reg1_gap_256", {}, [REGISTER]),  # EVA: registers without num_reg_tokens
        ("vit_small_patch16_dinov3", {}, [CLS] + [REGISTER] * 4),
        ("deit_tiny_distilled_patch16_224", {}, [CLS, DISTILLATION]),
        ("vit_relpos_small_patch16_224", {"class_token": True, "global_pool": "token"}, [CLS]),
        ("beit_base_patch16_224", {}, [CLS]),
    ],
)
def test_prefix_tokens_are_read_from_what_the_model_has(arch, kwargs, prefix):

    tiny = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1, "num_heads": 2, "num_classes": 5}
    model = timm.create_model(arch, pretrained=False, **tiny, **kwargs).eval()
    layout = TokenLayout.of_timm(model)
    assert list(layout.prefix) == prefix
    with torch.inference_mode():
        n_tokens = model.forward_features(torch.zeros(1, 3, 32, 32)).shape[1]
    assert n_tokens == layout.n_tokens == len(prefix) + 16
    check_token_count(model, n_tokens, "m")
    entry = {
        "display_name": "m",
        "dataset": "micro",
        "arch": arch,
        "kwargs": {**tiny, **kwargs},
        "num_blocks": 1,
        "token_grid": 4,
        "class_token": CLS in prefix,
        "distillation_token": DISTILLATION in prefix,
        "register_tokens": prefix.count(REGISTER),
        "num_classes": 5,
        "weights": {"source": "demo_training"},
        "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
    }
    model_audit.check_architecture(entry, "m")  # the declared layout is the model's
    with pytest.raises(InputError, match="register_tokens is"):
        model_audit.check_architecture({**entry, "register_tokens": prefix.count(REGISTER) + 1}, "m")


def test_prefix_tokens_of_an_unknown_kind_are_refused():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, reg_tokens=2)
    model.num_prefix_tokens = 4  # one more than [CLS] and the two registers
    with pytest.raises(InputError, match="puts 4 prefix tokens before its patch tokens, of which only 3 are"):
        TokenLayout.of_timm(model)
