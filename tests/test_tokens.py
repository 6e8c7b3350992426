"""Token layouts: the prefix tokens of timm ViTs, counted from the models themselves."""

import pytest
import timm
import torch

from class_embedding.models.tokens import CLS, DISTILLATION, IMAGE, REGISTER, TokenLayout


@pytest.mark.parametrize(
    ("arch", "kwargs", "prefix"),
    [
        ("vit_tiny_patch16_224", {}, (CLS,)),
        ("vit_tiny_patch16_224", {"reg_tokens": 4}, (CLS, *[REGISTER] * 4)),
        ("deit_tiny_distilled_patch16_224", {}, (CLS, DISTILLATION)),
        ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}, ()),
    ],
)
def test_layout_of_timm_counts_the_tokens_of_the_forward(arch, kwargs, prefix):
    model = timm.create_model(arch, pretrained=False, depth=1, img_size=64, **kwargs).eval()
    layout = TokenLayout.of_timm(model)
    with torch.inference_mode():
        tokens = model.forward_features(torch.randn(1, 3, 64, 64))
    assert layout.prefix == prefix
    assert layout.n_prefix == model.num_prefix_tokens
    assert tokens.shape[1] == layout.n_tokens == len(prefix) + 16
    assert layout.token_kinds()[layout.image_tokens] == [IMAGE] * 16


def test_layout_of_a_config_entry_defaults_to_no_distillation_or_registers():
    layout = TokenLayout.of({"token_grid": 7, "class_token": True})
    assert (layout.n_prefix, layout.n_tokens, layout.image_tokens) == (1, 50, slice(1, None))
    assert TokenLayout.of({"token_grid": 2, "class_token": False, "register_tokens": 2}).positions(REGISTER) == [0, 1]
