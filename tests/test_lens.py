"""The class-embedding lens against brute force: audit, ranks, logits, top-5, memories."""

import pytest
import timm
import torch

from class_embedding.extraction import lens, selection

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=4, num_classes=11)


def run_lens(model, images, targets):
    hooks = lens.ClassEmbeddingLens(model)
    hooks.set_targets(targets)
    with hooks, torch.no_grad():
        logits = model(images)
    return hooks.record, logits


ARCHS = ["vit_base_patch16_224", "vit_base_patch16_rpn_224"]


@pytest.mark.parametrize("arch", ARCHS)
def test_lens_audit_reproduces_model_logits(arch, scrambled_vit):
    model = scrambled_vit(arch, scale=0.2, **TINY_VIT)
    images = torch.randn(3, 3, 32, 32)
    record, logits = run_lens(model, images, torch.tensor([0, 5, 10]))
    assert torch.allclose(lens.pooled_logits(model, record.last_state), logits, atol=1e-5)
    lens.audit(model, record.last_state, logits, arch)
    with pytest.raises(RuntimeError, match="lens audit failed"):
        lens.audit(model, record.last_state, logits + 1.0, arch)


def manual_states(model, images):
    """Every block's stream and sublayer updates, recomputed by hand from the weights."""
    x = model._pos_embed(model.patch_embed(images))
    states, memories = {}, {}
    for b, block in enumerate(model.blocks):
        post_norm = isinstance(block, timm.models.vision_transformer.ResPostBlock)
        attn = block.attn
        attn_in = x if post_norm else block.norm1(x)
        B, N, D = attn_in.shape
        qkv = attn.qkv(attn_in).reshape(B, N, 3, attn.num_heads, D // attn.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        weights = ((q @ k.transpose(-2, -1)) * (D // attn.num_heads) ** -0.5).softmax(-1)
        z = (weights @ v).transpose(1, 2).reshape(B, N, D)
        attn_update = block.norm1(attn.proj(z)) if post_norm else attn.proj(z)
        x = x + attn_update
        mlp_in = x if post_norm else block.norm2(x)
        keys = block.mlp.fc1(mlp_in)
        mlp_out = block.mlp.fc2(torch.nn.functional.gelu(keys))
        mlp_update = block.norm2(mlp_out) if post_norm else mlp_out
        x = x + mlp_update
        states.update({f"attn_{b}": attn_update, f"mlp_{b}": mlp_update, f"hs_{b}": x})
        memories.update({f"attn_{b}": z, f"mlp_{b}": keys})
    return states, memories


@pytest.mark.parametrize("arch", ARCHS)
def test_reductions_equal_full_sort(arch, scrambled_vit):
    model = scrambled_vit(arch, scale=0.2, seed=1, **TINY_VIT)
    images = torch.randn(4, 3, 32, 32)
    targets = torch.tensor([3, 0, 10, 7])
    record, _ = run_lens(model, images, targets)
    with torch.no_grad():
        states, memories = manual_states(model, images)
        norm = model.norm if model.cls_token is not None else model.fc_norm
    for name, state in states.items():
        logits = (norm(state) @ model.head.weight.T + model.head.bias).detach()
        order = logits.argsort(dim=-1, descending=True, stable=True)
        expected_rank = (order == targets[:, None, None]).float().argmax(-1)
        got = record.layers[name]
        assert torch.equal(got.rank.long(), expected_rank), name
        assert torch.allclose(
            got.logit, logits.gather(-1, targets[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(-1), atol=1e-4
        )
        assert torch.equal(got.top5.long(), order[..., :5]), name
        if name.startswith(("attn", "mlp")):
            expected_memories = memories[name].argsort(dim=-1, descending=True, stable=True)[..., :5]
            assert torch.equal(got.mem_top5.long(), expected_memories), name
        else:
            assert got.mem_top5 is None


def test_rank_of_breaks_ties_like_stable_sort():
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0]])
    targets = torch.tensor([2, 3])
    # Row 0: class 1 ties ahead of class 2 (smaller index); row 1: classes 0..2 come first.
    assert selection.rank_of(logits, targets).tolist() == [1, 3]


def test_rank_of_matches_sort_on_random_logits(rng):
    logits = torch.randn(500, 97, generator=rng).round(decimals=1)  # rounding forces ties
    targets = torch.randint(0, 97, (500,), generator=rng)
    order = logits.argsort(dim=-1, descending=True, stable=True)
    expected = (order == targets[:, None]).float().argmax(-1)
    assert torch.equal(selection.rank_of(logits, targets), expected)
    # (images, tokens, classes) as the lens calls it, ties in some rows only.
    logits3, targets3 = logits.view(5, 100, 97), targets.view(5, 100)
    assert torch.equal(selection.rank_of(logits3, targets3), expected.view(5, 100))


def test_layer_names_order():
    assert lens.layer_names(2) == ["hs_0", "hs_1", "attn_0", "attn_1", "mlp_0", "mlp_1"]
