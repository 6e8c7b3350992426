"""The incremental head projection against the direct one, on random tiny models of each block family."""

import pytest
import torch

from class_embedding.extraction import incremental_projection, lens, projection, selection

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=4, num_heads=4, num_classes=23)
FAMILIES = {
    "pre-norm Block, [CLS]": ("vit_base_patch16_224", {}),
    "ResPostBlock, GAP": ("vit_base_patch16_rpn_224", {}),
    "Block with LayerScale": ("vit_base_patch16_224", {"init_values": 0.5}),
}


def run(model, images, targets, projection):
    hooks = lens.ClassEmbeddingLens(model, projection=projection)
    hooks.set_targets(targets)
    with hooks, torch.no_grad():
        model(images)
    return hooks


def direct_logits(model, images):
    """Every state of every block, projected directly: hs_b, attn_b, mlp_b by name."""
    captured = {}
    handles = []
    for b, block in enumerate(model.blocks):
        attn_update, mlp_update = lens.residual_update_modules(block)
        for name, module in ((f"attn_{b}", attn_update), (f"mlp_{b}", mlp_update), (f"hs_{b}", block)):
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: captured.__setitem__(name, o)))
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    return {name: projection.project(model, state) for name, state in captured.items()}


def assert_same_up_to_near_ties(direct, hooks, targets, tolerance):
    for name, logits in direct.items():
        got = hooks.record.layers[name]
        expected_rank = selection.rank_of(logits, targets.view(-1, 1).expand(logits.shape[:2]))
        target_logit = logits.gather(-1, targets.view(-1, 1, 1).expand(*logits.shape[:2], 1))
        # A rank may only move where another class is within rounding of the target's logit.
        near_tie = ((logits - target_logit).abs() <= tolerance).sum(-1) > 1
        differs = got.rank.long() != expected_rank
        assert not (differs & ~near_tie).any(), name
        top5 = logits.topk(lens.TOP_K, dim=-1)
        fifth, sixth = logits.topk(lens.TOP_K + 1, dim=-1).values[..., -2:].unbind(-1)
        top5_differs = (got.top5.long() != top5.indices).any(-1)
        adjacent_gap = top5.values.diff(dim=-1).abs().min(-1).values
        top5_near_tie = (adjacent_gap <= tolerance) | ((fifth - sixth) <= tolerance)
        assert not (top5_differs & ~top5_near_tie).any(), name
        assert torch.allclose(got.logit, target_logit.squeeze(-1), atol=tolerance, rtol=0), name


@pytest.mark.parametrize("family", FAMILIES)
def test_incremental_equals_direct_projection(family, scrambled_vit):
    arch, extra = FAMILIES[family]
    model = scrambled_vit(arch, scale=0.3, seed=2, **TINY_VIT, **extra)
    images = torch.randn(5, 3, 32, 32)
    targets = torch.tensor([0, 4, 22, 13, 7])
    incremental = run(model, images, targets, "incremental")
    assert incremental.projection == "incremental"
    direct = direct_logits(model, images)
    scale = max(logits.abs().max().item() for logits in direct.values())
    assert_same_up_to_near_ties(direct, incremental, targets, tolerance=1e-5 * max(scale, 1.0))
    # The direct path of the lens is the brute-force projection itself.
    direct_hooks = run(model, images, targets, "direct")
    assert direct_hooks.projection == "direct"
    for name, logits in direct.items():
        expected = logits.gather(-1, targets.view(-1, 1, 1).expand(*logits.shape[:2], 1)).squeeze(-1)
        assert torch.equal(direct_hooks.record.layers[name].logit, expected), name


def test_folded_head_matches_layer_norm_and_head_by_hand():
    torch.manual_seed(0)
    model = torch.nn.Module()
    model.norm = torch.nn.LayerNorm(6, eps=1e-6)
    model.fc_norm = torch.nn.Identity()
    model.head = torch.nn.Linear(6, 4)
    with torch.no_grad():
        model.norm.weight.copy_(torch.randn(6))
        model.norm.bias.copy_(torch.randn(6))
    x = torch.randn(3, 2, 6) * 5 + 2
    head = incremental_projection.FoldedHead(model)
    mu = x.mean(-1, keepdim=True)
    sigma = ((x - mu) ** 2).mean(-1, keepdim=True).add(1e-6).sqrt()
    expected = ((x - mu) / sigma * model.norm.weight + model.norm.bias) @ model.head.weight.T + model.head.bias
    with torch.no_grad():
        assert torch.allclose(head.logits(head.raw(x), x), expected, atol=1e-5)


def test_identity_final_norm_has_no_statistics_step(scrambled_vit):
    model = scrambled_vit("vit_base_patch16_224", scale=0.3, **TINY_VIT)
    model.norm = torch.nn.Identity()
    images, targets = torch.randn(2, 3, 32, 32), torch.tensor([1, 2])
    incremental = run(model, images, targets, "incremental")
    assert incremental.projection == "incremental" and incremental._incremental.head.eps is None
    direct = direct_logits(model, images)
    assert_same_up_to_near_ties(direct, incremental, targets, tolerance=1e-4)


def test_other_final_norms_fall_back_to_direct(scrambled_vit):
    model = scrambled_vit("vit_base_patch16_224", scale=0.3, **TINY_VIT)
    model.norm = torch.nn.RMSNorm(TINY_VIT["embed_dim"])
    hooks = run(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), "incremental")
    assert hooks.projection == "direct"
    with pytest.raises(ValueError, match="projection must be"):
        lens.ClassEmbeddingLens(model, projection="folded")


def test_block_that_breaks_the_running_sum_is_caught(scrambled_vit):
    model = scrambled_vit("vit_base_patch16_224", scale=0.3, **TINY_VIT)
    # A last block whose output is not its input plus the two hooked updates.
    model.blocks[-1].register_forward_hook(lambda module, inputs, output: 2 * output)
    with pytest.raises(RuntimeError, match="projection='direct'"):
        run(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), "incremental")
    run(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), "direct")
