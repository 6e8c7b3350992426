"""The brute-force reference for token removal: the model's own forward on the full sequence, with
every attention's weights on removed keys set to zero and each row renormalised (the softmax over
the kept keys alone). Kept tokens then never see removed ones, whatever position information the
model applies; their last block outputs are what a forward of the kept tokens alone must give.

Small timm models of every family the token removal handles, built far from their initialisation.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

SMALL = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)

#: name -> (timm architecture, keyword arguments beyond SMALL): absolute embeddings (plain ViT,
#: with registers), BEiT relative position tables (per block, shared), VisionTransformerRelPos
#: (MLP, table, shared), and the rotary embeddings of EVA-02, timm's RoPE ViTs (axial, mixed)
#: and DINOv3 (with registers).
FAMILIES = {
    "plain": ("vit_base_patch16_224", {}),
    "registers": ("vit_base_patch16_224", {"reg_tokens": 2}),
    "beit": ("beit_base_patch16_224", {}),
    "beit_shared": ("beit_base_patch16_224", {"use_rel_pos_bias": False, "use_shared_rel_pos_bias": True}),
    "beitv2": ("beitv2_base_patch16_224", {"global_pool": "token"}),
    "relpos_mlp": ("vit_relpos_small_patch16_224", {"class_token": True, "global_pool": "token"}),
    "relpos_table": ("vit_relpos_small_patch16_224", {"class_token": True, "rel_pos_type": "bias"}),
    "relpos_shared": ("vit_srelpos_small_patch16_224", {"class_token": True}),
    "eva02": ("eva02_tiny_patch14_224", {}),
    "rope": ("vit_small_patch16_rope_224", {}),
    "rope_mixed": ("vit_small_patch16_rope_mixed_224", {}),
    "dinov3": ("vit_small_patch16_dinov3", {}),
}


def build(scrambled_vit, family: str, num_classes: int, **overrides) -> torch.nn.Module:
    arch, kwargs = FAMILIES[family]
    return scrambled_vit(arch, **{**SMALL, **kwargs, "num_classes": num_classes, **overrides})


@contextmanager
def masked_keys(model, keep: torch.Tensor):
    """Within the block, attention ignores the keys where ``keep`` (B, N) is False."""
    attentions = [block.attn for block in model.blocks]
    fused = [attn.fused_attn for attn in attentions]

    def hook(module, inputs, weights):
        weights = weights * keep.to(weights.dtype)[:, None, None, :]
        return weights / weights.sum(-1, keepdim=True)

    handles = []
    try:
        for attn in attentions:
            attn.fused_attn = False  # materialise the post-softmax weights (attn_drop's input)
            handles.append(attn.attn_drop.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attn, was_fused in zip(attentions, fused):
            attn.fused_attn = was_fused


def last_block(model, images: torch.Tensor, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """The last block's output and the model's logits."""
    captured = {}
    handle = model.blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    try:
        with torch.no_grad():
            logits = model(images, **kwargs)
    finally:
        handle.remove()
    return captured["x"], logits


def reference(model, images: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Brute force for (B, K) kept sequence positions: the kept tokens' last block outputs
    (B, K, D) from the masked full forward, and the logits the model's own head gives them."""
    keep = torch.zeros(len(images), model.patch_embed.num_patches + model.num_prefix_tokens, dtype=torch.bool)
    keep.scatter_(1, positions, True)
    with masked_keys(model, keep):
        state, _ = last_block(model, images)
    kept = state.gather(1, positions.unsqueeze(-1).expand(-1, -1, state.shape[-1]))
    with torch.no_grad():
        logits = model.forward_head(model.norm(kept))
    return kept, logits
