"""Removing tokens before the first block so that every kept token keeps its own position.

Absolute position embeddings are added before the blocks, so gathering the embedded sequence
keeps them. Relative position biases (BEiT, VisionTransformerRelPos) and rotary embeddings (EVA,
EVA-02, timm's RoPE ViTs) are applied inside every attention, built for the full grid; here they
are gathered to each image's kept positions. The shorter sequence then attends exactly as the
full sequence would with the removed keys masked out.

Where the model hands the position tensor to a module (BEiT's shared bias, every block's
``rope`` argument) a hook replaces it. Per-block relative biases are built by a method that the
attention calls itself (``_get_rel_pos_bias``, ``get_bias``); no hook reaches its result, so the
method is shadowed on the instance by one that gathers the original's output, and unshadowed
afterwards. No model code is copied.

Positions are a (B, K) tensor of sequence positions: the prefix tokens first (never removed),
then image tokens at positions ``n_prefix + t``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import InputError

Positions = Callable[[], torch.Tensor]


def gather_tokens(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens at (B, K) positions -> (B, K, D)."""
    index = positions.to(tokens.device).unsqueeze(-1).expand(-1, -1, tokens.shape[-1])
    return tokens.gather(1, index)


def gather_pair_bias(bias: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """An attention bias over the full sequence, (1, H, N, N) or (H, N, N), at each image's kept
    query and key positions: (B, H, K, K)."""
    if bias.ndim == 4:
        if bias.shape[0] != 1:
            raise ValueError(f"expected one bias for every image, got shape {tuple(bias.shape)}")
        bias = bias[0]
    positions = positions.to(bias.device)
    # (H, B, K, K): row = kept query, column = kept key.
    return bias[:, positions[:, :, None], positions[:, None, :]].transpose(0, 1).contiguous()


def gather_rope(rope: torch.Tensor, image_positions: torch.Tensor) -> torch.Tensor:
    """Rotary sin/cos of the full grid, (N_img, D) or per head (H, N_img, D) (RoPE-Mixed), at each
    image's kept image tokens: (B, 1, K_img, D) or (B, H, K_img, D), the shapes timm's Eva itself
    passes to its blocks after patch dropout."""
    sliced = rope[..., image_positions.to(rope.device), :]
    if rope.ndim == 2:
        return sliced.unsqueeze(1)
    if rope.ndim == 3:
        return sliced.movedim(-3, 0)
    raise InputError(
        f"unexpected rotary embedding of shape {tuple(rope.shape)}: token removal knows (N, D) and (H, N, D)."
    )


class _Undo:
    """What was installed, removed in reverse order."""

    def __init__(self):
        self._steps: list[Callable[[], None]] = []

    def handle(self, handle) -> None:
        self._steps.append(handle.remove)

    def shadow(self, obj, name: str, replacement: Callable) -> None:
        if name in vars(obj):
            raise RuntimeError(f"{type(obj).__name__}.{name} is already shadowed: token removal is already active")
        setattr(obj, name, replacement)
        self._steps.append(lambda: delattr(obj, name))

    def __call__(self) -> None:
        while self._steps:
            self._steps.pop()()


def _gathered(method: Callable[[], torch.Tensor], positions: Positions) -> Callable[[], torch.Tensor]:
    return lambda: gather_pair_bias(method(), positions())


def _beit(model, positions: Positions, undo: _Undo) -> None:
    # Per-block tables: Attention._get_rel_pos_bias() -> (1, H, N, N), in the fused and unfused path.
    for block in model.blocks:
        if block.attn.relative_position_bias_table is not None:
            undo.shadow(block.attn, "_get_rel_pos_bias", _gathered(block.attn._get_rel_pos_bias, positions))
    # Shared table: a module the model calls once per forward, (H, N, N) to every block.
    if model.rel_pos_bias is not None:
        undo.handle(model.rel_pos_bias.register_forward_hook(lambda m, i, bias: gather_pair_bias(bias, positions())))


def _relpos(model, positions: Positions, undo: _Undo) -> None:
    # RelPosBias / RelPosMlp.get_bias() -> (1, H, N, N), prefix rows included (zero for RelPosMlp).
    for block in model.blocks:
        if block.attn.rel_pos is not None:
            undo.shadow(block.attn.rel_pos, "get_bias", _gathered(block.attn.rel_pos.get_bias, positions))
    if model.shared_rel_pos is not None:
        undo.shadow(model.shared_rel_pos, "get_bias", _gathered(model.shared_rel_pos.get_bias, positions))


def _eva(model, positions: Positions, undo: _Undo) -> None:
    if model.rope is None:
        return
    n_prefix = model.num_prefix_tokens

    # The blocks rotate the tokens after the prefix with the `rope` they are given.
    def hook(block, args, kwargs):
        if kwargs.get("rope") is None:
            return None
        return args, {**kwargs, "rope": gather_rope(kwargs["rope"], positions()[:, n_prefix:] - n_prefix)}

    for block in model.blocks:
        undo.handle(block.register_forward_pre_hook(hook, with_kwargs=True))


def _adapters() -> dict[type, Callable | None]:
    from timm.models import beit, eva, vision_transformer, vision_transformer_relpos

    return {
        vision_transformer.VisionTransformer: None,  # absolute embeddings only (and its subclasses)
        beit.Beit: _beit,
        vision_transformer_relpos.VisionTransformerRelPos: _relpos,
        eva.Eva: _eva,
    }


def install(model, positions: Positions) -> Callable[[], None]:
    """Make the model forward only ``positions()`` of its embedded sequence, each with its own
    position information; returns the function that restores the model."""
    adapters = _adapters()
    kind = next((cls for cls in adapters if isinstance(model, cls)), None)
    if kind is None:
        known = ", ".join(sorted(cls.__name__ for cls in adapters))
        raise InputError(
            f"token removal does not know where {type(model).__name__} applies positions; it knows {known}."
        )
    undo = _Undo()

    def select(block, args, kwargs):
        selected = positions()
        if selected is None or selected.shape[0] != args[0].shape[0]:
            raise RuntimeError("token removal: set the positions, one row per image, before the forward")
        return (gather_tokens(args[0], selected), *args[1:]), kwargs

    try:
        # The first block's input: after patch embedding, prefix tokens, absolute position
        # embedding and any pre-norm, in every family.
        undo.handle(model.blocks[0].register_forward_pre_hook(select, with_kwargs=True))
        if adapters[kind] is not None:
            adapters[kind](model, positions, undo)
    except BaseException:
        undo()
        raise
    return undo
