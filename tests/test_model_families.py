"""Every supported timm ViT family at a tiny size, with random norm, LayerScale and bias
parameters: the hooked residual updates add up to the block outputs, the lens audit passes with
the model's own pooling and fails with a wrong one, the prefix tokens are counted, gated MLPs
report memories from fc2's input, and unsupported models stop the dry run."""

import subprocess
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from workflow_runs import snakemake, write_config

from class_embedding.analyses import value_projections
from class_embedding.errors import InputError
from class_embedding.extraction import lens, model_audit, model_checks, projection
from class_embedding.models import building, families
from class_embedding.models.spec import ModelSpec
from class_embedding.models.tokens import CLS, DISTILLATION, REGISTER, TokenLayout

REPO = Path(__file__).resolve().parents[1]
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 7}
# family -> (arch, extra kwargs, block class name, prefix tokens, pooling kind, first pooled token)
FAMILIES = {
    "plain": ("vit_base_patch16_224", {}, "Block", [CLS], "token", 0),
    "distilled": ("deit_tiny_distilled_patch16_224", {}, "Block", [CLS, DISTILLATION], "distilled", 0),
    # timm's distilled head never applies fc_norm: its heads read the raw tokens.
    "distilled_fc_norm": (
        "deit_tiny_distilled_patch16_224",
        {"fc_norm": True},
        "Block",
        [CLS, DISTILLATION],
        "distilled",
        0,
    ),
    "registers_cls": ("vit_base_patch16_224", {"reg_tokens": 4}, "Block", [CLS] + [REGISTER] * 4, "token", 0),
    "registers_avg": ("vit_base_patch16_reg4_gap_256", {}, "Block", [REGISTER] * 4, "avg", 4),
    "avg_cls": ("vit_base_patch16_224", {"global_pool": "avg"}, "Block", [CLS], "avg", 1),
    "norm_then_pool_gap": (
        "vit_base_patch16_224",
        {"global_pool": "avg", "class_token": False, "fc_norm": False},
        "Block",
        [],
        "avg",
        0,
    ),
    "respost_gap": ("vit_base_patch16_rpn_224", {}, "ResPostBlock", [], "avg", 0),
    "deit3_layerscale": ("deit3_small_patch16_224", {}, "Block", [CLS], "token", 0),
    "clip_pre_norm": ("vit_base_patch16_clip_224", {}, "Block", [CLS], "token", 0),
    "relpos": ("vit_relpos_small_patch16_224", {}, "RelPosBlock", [], "avg", 0),
    "relpos_post_norm": ("vit_relpos_base_patch16_rpn_224", {}, "ResPostRelPosBlock", [], "avg", 0),
    "beit": ("beit_base_patch16_224", {}, "Block", [CLS], "avg", 1),
    "eva02": ("eva02_tiny_patch14_224", {}, "EvaBlock", [CLS], "avg", 1),
    "eva_post_norm": ("eva02_tiny_patch14_224", {"use_post_norm": True}, "EvaBlockPostNorm", [CLS], "avg", 1),
    # EVA with registers: timm's Eva keeps them in reg_token, with no num_reg_tokens attribute.
    "dinov3_registers": ("vit_small_patch16_dinov3", {}, "EvaBlock", [CLS] + [REGISTER] * 4, "avg", 5),
    "eva_register_gap": ("vit_base_patch16_rope_reg1_gap_256", {}, "EvaBlock", [REGISTER], "avg", 1),
    "swiglu_packed": ("vit_giant_patch14_dinov2", {"mlp_ratio": 5.33334}, "Block", [CLS], "token", 0),
    "swiglu": ("aimv2_large_patch14_224", {}, "Block", [], "avg", 0),
    "max_pool": ("vit_base_patch16_224", {"global_pool": "max", "class_token": False}, "Block", [], "max", 0),
}


POST_NORM_BLOCKS = ("ResPostBlock", "ResPostRelPosBlock", "EvaBlockPostNorm")


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    arch, extra, *_ = FAMILIES[family]
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **{**TINY, **extra})
    return families.randomise_identity_like(model, seed).eval()


def images(n: int = 3, size: tuple[int, int] = (32, 32)) -> torch.Tensor:
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("family", FAMILIES)
def test_hooked_updates_add_up_to_each_block_output(family):
    model = tiny(family)
    assert type(model.blocks[0]).__name__ == FAMILIES[family][2]
    seen = {}

    def keep(key):
        return lambda module, inputs, output: seen.__setitem__(key, output.clone())

    handles = []
    for b, block in enumerate(model.blocks):
        attn, mlp = lens.residual_update_modules(block)
        handles += [
            block.register_forward_pre_hook(lambda module, inputs, b=b: seen.__setitem__(("in", b), inputs[0].clone())),
            attn.register_forward_hook(keep(("attn", b))),
            mlp.register_forward_hook(keep(("mlp", b))),
            block.register_forward_hook(keep(("out", b))),
        ]
    with torch.inference_mode():
        model(images())
    for handle in handles:
        handle.remove()
    for b in range(len(model.blocks)):
        update = seen[("attn", b)] + seen[("mlp", b)]
        assert update.abs().max() > 1e-2  # far above the tolerance: the check means something
        torch.testing.assert_close(seen[("in", b)] + update, seen[("out", b)], rtol=0, atol=1e-5)
    # Every hooked module is its own object: a shared one would fire for two updates.
    modules = [m for block in model.blocks for m in lens.residual_update_modules(block)]
    assert len({id(m) for m in modules}) == len(modules)


@pytest.mark.parametrize("family", FAMILIES)
def test_lens_audit_passes_with_the_models_own_pooling(family):
    model = tiny(family)
    pool = families.pooling(model)
    assert (pool.kind, pool.first_token) == FAMILIES[family][4:]
    model_audit.audit_on_random_images(model, family)


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_tokens_are_counted_from_the_model(family):
    model = tiny(family)
    layout = TokenLayout.of_timm(model)
    assert list(layout.prefix) == FAMILIES[family][3]
    assert layout.n_prefix == model.num_prefix_tokens and layout.n_image_tokens == 16
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.zeros(2, dtype=torch.long))
        model(images(2))
    assert hooks.record.last_state.shape[1] == layout.n_tokens
    assert hooks.record.layers["hs_1"].rank.shape == (2, layout.n_tokens)


def test_pooling_the_registers_too_fails_the_audit():
    # timm averages x[:, 4:]; averaging all 20 tokens (registers included) must not pass.
    model = tiny("registers_avg")
    wrong = families.Pooling("avg", first_token=0, norm_first=False)
    with pytest.raises(RuntimeError, match="lens audit failed for registers"):
        model_audit.audit_on_random_images(model, "registers", pooling=wrong)


def test_projecting_the_cls_token_alone_fails_for_avg_pooled_and_distilled_models():
    for family in ("avg_cls", "distilled", "beit"):
        with pytest.raises(RuntimeError, match="lens audit failed"):
            model_audit.audit_on_random_images(tiny(family), family, pooling=families.Pooling("token"))


def test_distilled_model_output_is_the_mean_of_its_two_heads():
    model = tiny("distilled")
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.zeros(3, dtype=torch.long))
        logits = model(images())
        normed = model.norm(hooks.record.last_state)
        by_hand = (normed[:, 0] @ model.head.weight.T + model.head.bias + normed[:, 1] @ model.head_dist.weight.T) / 2
        by_hand += model.head_dist.bias / 2
    torch.testing.assert_close(logits, by_hand, rtol=1e-4, atol=1e-4)
    weight, bias = projection.linear_head(model)
    torch.testing.assert_close(weight, (model.head.weight + model.head_dist.weight) / 2)
    torch.testing.assert_close(bias, (model.head.bias + model.head_dist.bias) / 2)


def captured_states(model, batch: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every block's stream and sublayer updates, caught at the modules the test above checks."""
    seen, handles = {}, []
    for b, block in enumerate(model.blocks):
        attn, mlp = lens.residual_update_modules(block)
        for name, module in ((f"attn_{b}", attn), (f"mlp_{b}", mlp), (f"hs_{b}", block)):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.clone())))
    with torch.inference_mode():
        model(batch)
    for handle in handles:
        handle.remove()
    return seen


def own_output(model, states: torch.Tensor) -> torch.Tensor:
    """Brute force, (..., C): the model's own output, through its own norms, pool and heads, when
    its last block outputs each state (..., D) at every token position."""
    flat = states.reshape(-1, states.shape[-1])
    handle = model.blocks[-1].register_forward_hook(lambda m, i, o: flat[:, None, :].expand(-1, o.shape[1], -1))
    with torch.inference_mode():
        out = model(images(1, tuple(model.patch_embed.img_size)))
    handle.remove()
    return out.reshape(*states.shape[:-1], -1).float()


def swapped_output(model, batch: torch.Tensor, order: list[int]) -> torch.Tensor:
    """The model's output with the tokens of its last block's output reordered."""
    handle = model.blocks[-1].register_forward_hook(lambda m, i, o: o[:, order])
    with torch.inference_mode():
        out = model(batch)
    handle.remove()
    return out.float()


@pytest.mark.parametrize("family", FAMILIES)
def test_every_cell_is_the_models_own_output_for_that_token(family):
    """Rank, logit and top-5 of every (layer, image, token) cell against a full sort of the model's
    own output with that cell's state at every position."""
    assert_every_cell_is_the_models_own_output(tiny(family), images(3))


def assert_every_cell_is_the_models_own_output(model, batch: torch.Tensor) -> None:
    targets = torch.tensor([0, 3, 6])
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(targets)
        model(batch)
    states = captured_states(model, batch)
    assert set(states) == set(hooks.record.layers)
    for name, state in states.items():
        logits = own_output(model, state)
        target_logit = logits.gather(-1, targets.view(-1, 1, 1).expand(*logits.shape[:2], 1)).squeeze(-1)
        order = logits.argsort(dim=-1, descending=True, stable=True)
        rank = (order == targets.view(-1, 1, 1)).float().argmax(-1)
        got = hooks.record.layers[name]
        tolerance = 1e-4 * max(logits.abs().max().item(), 1.0)
        torch.testing.assert_close(got.logit, target_logit, rtol=0, atol=tolerance, msg=name)
        # A rank or top-5 may differ only where two classes are within rounding of each other.
        gaps = (logits[..., :, None] - logits[..., None, :]).abs() + torch.eye(logits.shape[-1]) * 1e9
        near_tie = gaps.min(-1).values.min(-1).values <= tolerance
        assert torch.equal(got.rank.long()[~near_tie], rank[~near_tie]), name
        assert torch.equal(got.top5.long()[~near_tie], order[..., :5][~near_tie]), name
        assert (~near_tie).float().mean() > 0.9, name  # the comparison covers nearly every cell


@pytest.mark.parametrize("family", FAMILIES)
def test_what_the_per_token_numbers_add_up_to(family):
    """docs/configuration.md (Supported models), per pooling: which combination of the per-token
    projections of the last block is the model's output, against the model's own forward."""
    model = tiny(family)
    pool = families.pooling(model)
    batch = images(4)
    with torch.inference_mode():
        logits = model(batch).float()
    last = captured_states(model, batch)[f"hs_{len(model.blocks) - 1}"]
    per_token = own_output(model, last)
    pooled = per_token[:, pool.first_token :]

    def close(a, b):
        return torch.allclose(a, b, rtol=0, atol=1e-4 * max(logits.abs().max().item(), 1.0))

    if pool.kind == "token":
        assert close(per_token[:, 0], logits)
    elif pool.kind == "distilled":
        # The mean head of [CLS] and [DIST] is not the output; the output with the two swapped adds the rest.
        assert not close(per_token[:, :2].mean(1), logits)
        assert close(
            per_token[:, 0] + per_token[:, 1], logits + swapped_output(model, batch, [1, 0, *range(2, last.shape[1])])
        )
    elif pool.norm_first:
        assert close(pooled.mean(1), logits)
    else:
        # Pool, then norm: the projection of the pooled state is the output, the mean of the tokens' is not.
        tokens = last[:, pool.first_token :]
        mean, peak = tokens.mean(1), tokens.amax(1)
        state = {"avg": mean, "max": peak, "avgmax": (mean + peak) / 2}[pool.kind]
        assert close(own_output(model, state), logits)
        assert not close(pooled.mean(1), logits)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_lens_through_another_norm_fails_the_audit(family, monkeypatch):
    # The audit compares with the model's own forward, so a norm the forward does not apply cannot pass.
    model = tiny(family)
    real = families.final_norm(model)
    other = torch.nn.Identity() if not families.is_identity(real) else torch.nn.LayerNorm(32)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=torch.Generator().manual_seed(1)))
    monkeypatch.setattr(families, "final_norm", lambda model: other)
    with pytest.raises(RuntimeError, match="lens audit failed"):
        model_audit.audit_on_random_images(model, family)


def test_a_distilled_model_with_fc_norm_is_read_without_it(monkeypatch):
    """timm's distilled head never applies fc_norm: the old lens, which projected through it, fails
    the audit; the lens follows the forward and passes."""
    model = tiny("distilled_fc_norm")
    assert families.is_identity(model.norm) and not families.is_identity(model.fc_norm)
    assert families.is_identity(families.final_norm(model)) and building.final_norm(model) == "norm"
    model_audit.audit_on_random_images(model, "distilled")
    monkeypatch.setattr(families, "final_norm", lambda model: torch.nn.Sequential(model.norm, model.fc_norm))
    with pytest.raises(RuntimeError, match="lens audit failed for distilled"):
        model_audit.audit_on_random_images(model, "distilled")


def test_the_per_token_audit_alone_catches_a_norm_the_forward_does_not_apply(monkeypatch):
    model = tiny("distilled_fc_norm")
    batch = images(2)
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.zeros(2, dtype=torch.long))
        model(batch)
    monkeypatch.setattr(families, "final_norm", lambda model: model.fc_norm)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="a token's projection differs from the model's own"):
        lens.audit_projection(model, batch, hooks.record.last_state, "distilled")


def brute_force_fc2_input(mlp, hidden: torch.Tensor) -> torch.Tensor:
    """The gated MLP's fc2 input, recomputed from its weights."""
    if hasattr(mlp, "fc1_g"):  # SwiGLU
        gate, value = mlp.fc1_g(hidden), mlp.fc1_x(hidden)
    else:  # GluMlp / SwiGLUPacked: one fc1, gate first unless gate_last
        first, second = mlp.fc1(hidden).chunk(2, dim=-1)
        gate, value = (second, first) if mlp.gate_last else (first, second)
    return mlp.norm(torch.nn.functional.silu(gate) * value)


@pytest.mark.parametrize("family", ["swiglu", "swiglu_packed", "eva02"])
def test_gated_mlp_memories_are_the_top5_of_fc2s_input(family):
    model = tiny(family)
    mlp_inputs = {}
    handles = [
        block.mlp.register_forward_pre_hook(lambda m, inputs, b=b: mlp_inputs.__setitem__(b, inputs[0].clone()))
        for b, block in enumerate(model.blocks)
    ]
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.zeros(3, dtype=torch.long))
        model(images())
    for handle in handles:
        handle.remove()
    for b, block in enumerate(model.blocks):
        with torch.inference_mode():
            coefficients = brute_force_fc2_input(block.mlp, mlp_inputs[b])
        assert coefficients.shape[-1] == block.mlp.fc2.in_features
        if hasattr(block.mlp, "fc1"):
            assert block.mlp.fc1.out_features == 2 * block.mlp.fc2.in_features  # packed: fc1 is twice as wide
        expected = coefficients.topk(5, dim=-1).indices
        assert torch.equal(hooks.record.layers[f"mlp_{b}"].mem_top5.long(), expected)


def update_per_value_vector(model, block, layer_type: str) -> torch.Tensor:
    """Brute force, D×M: what the block adds to the stream when the input of the sublayer's output
    projection (``attn.proj`` / ``mlp.fc2``) is one-hot on each coefficient, minus what it adds at
    zero, read at the hooked update module of a real forward pass."""
    linear = block.mlp.fc2 if layer_type == "mlp" else block.attn.proj
    width = linear.in_features
    attn_update, mlp_update = lens.residual_update_modules(block)
    update_module = mlp_update if layer_type == "mlp" else attn_update
    n_tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    n_images = -(-(width + 1) // n_tokens)
    one_hot = torch.cat([torch.zeros(1, width), torch.eye(width)])
    one_hot = torch.cat([one_hot, torch.zeros(n_images * n_tokens - width - 1, width)])
    seen = {}
    handles = [
        linear.register_forward_pre_hook(lambda m, inputs: (one_hot.view(n_images, n_tokens, width),)),
        update_module.register_forward_hook(lambda m, inputs, output: seen.setdefault("update", output)),
    ]
    with torch.inference_mode():
        model(torch.randn(n_images, 3, 32, 32))
    for handle in handles:
        handle.remove()
    rows = seen["update"].reshape(-1, seen["update"].shape[-1])
    return (rows[1 : width + 1] - rows[0]).T


@pytest.mark.parametrize("family", [f for f in FAMILIES if FAMILIES[f][2] not in POST_NORM_BLOCKS])
@pytest.mark.parametrize("layer_type", ["attn", "mlp"])
def test_value_vectors_are_what_one_coefficient_adds_to_the_stream(family, layer_type):
    model = tiny(family)
    block = model.blocks[-1]
    if family in ("deit3_layerscale", "beit", "swiglu_packed"):
        assert families.layer_scale(block, layer_type) is not None  # the case this test is about
    expected = update_per_value_vector(model, block, layer_type).numpy()
    values = value_projections.value_matrix(block, layer_type, includes_post_norm=False)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)


def test_plain_mlp_memories_stay_the_pre_gelu_fc1_output():
    model = tiny("plain")
    fc1_out = {}
    model.blocks[1].mlp.fc1.register_forward_hook(lambda m, i, o: fc1_out.__setitem__("x", o.clone()))
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.zeros(3, dtype=torch.long))
        model(images())
    assert torch.equal(hooks.record.layers["mlp_1"].mem_top5.long(), fc1_out["x"].topk(5, dim=-1).indices)


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"global_pool": "map", "class_token": False}, "attention pool"),
        ({"global_pool": "max", "class_token": False, "fc_norm": False}, "maximum over normalised tokens"),
        ({"global_pool": ""}, "logits per token"),
    ],
)
def test_pooling_no_projection_reproduces_is_refused(kwargs, reason):
    entry = entry_of("vit_base_patch16_224", {**TINY, **kwargs}, class_token=kwargs.get("class_token", True))
    with pytest.raises(InputError, match=f"models.m \\(arch vit_base_patch16_224\\) cannot be analysed.*{reason}"):
        model_audit.check_architecture(entry, "m")


@pytest.mark.parametrize(
    ("arch", "kwargs", "overrides", "message"),
    [
        (
            "cait_xxs24_224",
            {},
            {},
            r"models\.m \(arch cait_xxs24_224\) cannot be analysed with the class-embedding lens: timm's Cait adds "
            r"its \[CLS\] token only in the class-attention blocks after the patch-token blocks, so the token its "
            r"head reads never enters the residual stream the lens hooks; the lens reads Beit, Eva,",
        ),
        (
            "naflexvit_base_patch16_gap",
            {},
            {"class_token": False},
            r"models\.m \(arch naflexvit_base_patch16_gap\) cannot be analysed .*: timm's NaFlexVit embeds each image "
            r"as a variable-length sequence of patches without a fixed token grid, which the token labels need;",
        ),
        (
            "deit_tiny_distilled_patch16_224",
            {"global_pool": "avg"},
            {"distillation_token": True},
            r"models\.m: timm cannot build 'deit_tiny_distilled_patch16_224' with kwargs .*'global_pool': 'avg'.*: the "
            r"distilled head reads the class and distillation tokens; change the kwargs\.",
        ),
        (
            "vit_base_patch16_224",
            {"num_classes": 0},
            {},
            r"models\.m \(arch vit_base_patch16_224\) cannot be analysed .*: the model has no classification head "
            r"\(num_classes 0\), so there are no class embeddings to project onto; set kwargs\.num_classes",
        ),
        (
            "vit_base_patch16_224",
            {"dynamic_img_size": True},
            {"preprocessing": {"resize": [16, 64], "mean": [0.5] * 3, "std": [0.5] * 3}},
            r"models\.m\.preprocessing gives 16x64 images, which the dynamic_img_size model cuts into a 2x8 token "
            r"grid \(rows x columns\), not the declared token_grid 4x4: make resize \(and crop\) 32x32",
        ),
        (
            "vit_base_patch16_224",
            {"dynamic_img_size": True},
            {"preprocessing": {"resize": [48, 48], "mean": [0.5] * 3, "std": [0.5] * 3}},
            r"models\.m\.preprocessing gives 48x48 images, which the dynamic_img_size model cuts into a 6x6 token "
            r"grid \(rows x columns\), not the declared token_grid 4x4: make resize \(and crop\) 32x32 or fix "
            r"token_grid\.",
        ),
        (
            "vit_base_patch16_224",
            {},
            {"preprocessing": {"resize": 40, "crop": 24, "mean": [0.5] * 3, "std": [0.5] * 3}},
            r"models\.m\.preprocessing gives 24x24 images, but the model takes 32x32 \(img_size, without "
            r"dynamic_img_size\)",
        ),
        (
            "vit_base_patch16_224",
            {"dynamic_img_size": True},
            {"preprocessing": {"resize": 32, "mean": [0.5] * 3, "std": [0.5] * 3}},
            r"models\.m\.preprocessing resizes the shorter side to 32 without a crop, so each image's aspect ratio "
            r"sets its size and token grid",
        ),
        (
            "vit_base_patch16_224",
            {},
            {"token_grid": [4, 8]},
            r"models\.m\.token_grid is 4x8 but the timm model 'vit_base_patch16_224' has 4\.",
        ),
        (
            "vit_base_patch16_224",
            {},
            {"token_grid": [4, 8, 2]},
            r"models\.m\.token_grid is \[4, 8, 2\]: give the side of a square token grid or \[rows, cols\]",
        ),
    ],
    ids=[
        "cait",
        "naflexvit",
        "distilled_avg",
        "no_head",
        "grid_2x8",
        "grid_6x6",
        "image_size",
        "aspect",
        "grid_4x8_declared",
        "grid_of_three",
    ],
)
def test_models_the_lens_cannot_read_are_refused_with_the_reason(arch, kwargs, overrides, message):
    entry = {**entry_of(arch, {**TINY, **kwargs}, class_token=True), **overrides}
    with pytest.raises(InputError, match=message):
        model_audit.check_architecture(entry, "m")


def test_the_same_16_tokens_on_another_grid_pass_the_token_count_but_not_the_check():
    # 16x64 images give 2x8 = 16 patch tokens, as the declared 4x4 grid: only the grid check tells them apart.
    entry = entry_of("vit_base_patch16_224", {**TINY, "dynamic_img_size": True}, class_token=True)
    model_audit.check_architecture(entry, "m")
    model = building.build_model(entry, "m")
    with torch.inference_mode():
        tokens = model.forward_features(torch.zeros(1, 3, 16, 64)).shape[1]
    assert tokens == TokenLayout.of({**entry, "name": "m"}).n_tokens == 17
    with pytest.raises(InputError, match="2x8 token grid"):
        model_audit.check_architecture({**entry, "preprocessing": {**entry["preprocessing"], "resize": [16, 64]}}, "m")


def test_a_changed_image_size_is_checked_again(tmp_path):
    entry = entry_of("vit_base_patch16_224", {**TINY, "dynamic_img_size": True}, class_token=True)
    cache = tmp_path / "checks.json"
    model_checks.check_models({"m": entry}, cache)
    wide = {**entry, "preprocessing": {**entry["preprocessing"], "resize": [16, 64]}}
    with pytest.raises(InputError, match="models.m.preprocessing gives 16x64 images"):
        model_checks.check_models({"m": wide}, cache)
    # Mean and std say nothing about the grid: the verdict is reused.
    assert model_checks.verdict_key({**entry, "preprocessing": {**entry["preprocessing"], "mean": [0.0] * 3}}) == (
        model_checks.verdict_key(entry)
    )


def test_unsupported_block_type_names_it_and_what_is_supported():
    entry = entry_of("vit_small_patch16_18x2_224", TINY, class_token=True)
    with pytest.raises(
        InputError, match="models.m .*unsupported block type .*ParallelThingsBlock.*vision_transformer.Block"
    ):
        model_audit.check_architecture(entry, "m")


def test_class_valued_kwargs_say_which_arch_to_start_from():
    with pytest.raises(InputError, match="kwargs.mlp_layer is the string 'SwiGLUPacked'.*vit_giant_patch14_dinov2"):
        ModelSpec.from_params(entry_of("vit_base_patch16_224", {"mlp_layer": "SwiGLUPacked"}, class_token=True), "m")


def test_the_check_builds_a_two_block_copy_but_checks_the_declared_tokens():
    entry = entry_of("vit_base_patch16_224", {**TINY, "depth": 12}, class_token=True, num_blocks=12)
    model_audit.check_architecture(entry, "m")
    with pytest.raises(InputError, match="models.m.register_tokens is 2 but"):
        model_audit.check_architecture({**entry, "register_tokens": 2}, "m")


def test_verdicts_are_cached_and_torch_is_not_needed_for_a_cached_one(tmp_path, monkeypatch):
    models = {"a": entry_of("vit_base_patch16_224", TINY, class_token=True)}
    bad = {"b": entry_of("vit_base_patch16_224", {**TINY, "global_pool": "map"}, class_token=True)}
    cache = tmp_path / "checks.json"
    model_checks.check_models(models, cache)
    with pytest.raises(InputError, match="models.b .*attention pool"):
        model_checks.check_models(bad, cache)

    def no_build(*args):
        raise AssertionError("a cached verdict was recomputed")

    monkeypatch.setattr(model_audit, "check_architecture", no_build)
    model_checks.check_models(models, cache)
    with pytest.raises(InputError, match="models.c .*attention pool"):  # the cached message names the model asked
        model_checks.check_models({"c": bad["b"]}, cache)


def entry_of(arch: str, kwargs: dict, class_token: bool, num_blocks: int = 2) -> dict:
    return {
        "display_name": "m",
        "dataset": "micro",
        "arch": arch,
        "kwargs": kwargs,
        "num_blocks": num_blocks,
        "token_grid": 4,
        "class_token": class_token,
        "num_classes": 7,
        "weights": {"source": "demo_training"},
        "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
    }


def dry_run(configs: list[Path], workdir: Path) -> subprocess.CompletedProcess:
    return snakemake("-n", "--quiet", "rules", configfiles=configs, workdir=workdir, timeout=600)


EXAMPLE_BASE = REPO / "config" / "examples" / "base.yaml"
EXAMPLES = sorted(path for path in (REPO / "config" / "examples").glob("*.yaml") if path != EXAMPLE_BASE)


def test_there_is_an_example_config_per_family():
    variants = {"relpos_post_norm", "eva_post_norm", "max_pool", "eva_register_gap"}
    assert {path.stem for path in EXAMPLES} == set(FAMILIES) - variants
    for path in EXAMPLES:
        assert set(yaml.safe_load(path.read_text())) == {"models"}, f"{path}: only the family's model"


@pytest.mark.workflow
def test_example_configs_pass_the_dry_run(tmp_path):
    """Every family's example after the shared base; given together, Snakemake merges their models
    into one plan, so one dry run checks them all."""
    result = dry_run([EXAMPLE_BASE, *EXAMPLES], tmp_path / "work")
    assert result.returncode == 0, result.stderr[-3000:]
    for path in EXAMPLES:
        (name,) = yaml.safe_load(path.read_text())["models"]
        assert f"merge_extraction_{name}" in result.stdout, f"{path}: no extraction of {name} planned"


@pytest.mark.workflow
def test_dry_run_refuses_an_attention_pooled_model_before_any_job(tmp_path):
    config = yaml.safe_load((REPO / "config" / "examples" / "plain.yaml").read_text())
    config["models"]["siglip_like"] = config["models"].pop("plain")
    config["models"]["siglip_like"]["kwargs"].update(global_pool="map", class_token=False)
    config["models"]["siglip_like"]["class_token"] = False
    path = write_config(config, tmp_path / "map.yaml")
    result = dry_run([EXAMPLE_BASE, path], tmp_path / "work")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "invalid config: models.siglip_like (arch vit_base_patch16_224) cannot be analysed" in output
    assert "global_pool 'map' is an attention pool" in output
    assert "train_demo_model" not in output  # stopped before any job was planned
