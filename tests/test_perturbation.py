"""Attention and token perturbations (docs/method.md §4.9, §4.10) against direct re-implementations, and
the perturbation tables against hand-computed values."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from masked_attention import FAMILIES, build, last_block, reference
from result_tables import flat_tables
from timm.models.vision_transformer import VisionTransformer

from class_embedding import tables
from class_embedding.analyses import model_runs, perturbation, perturbation_tables, token_removal
from class_embedding.analyses.perturbation_masks import kept_token_mask
from class_embedding.errors import InputError
from class_embedding.extraction import lens, projection, selection

NUM_CLASSES = 5
GRID = 4  # 16 image tokens + [CLS]


@pytest.fixture(scope="module")
def model(scrambled_vit):
    """A tiny [CLS] ViT whose parameters are all far from timm's near-zero initialisation, so
    that attention is not uniform and logits are well separated."""
    return scrambled_vit(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def images():
    return torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def manual_forward(model, images, edit_weights):
    """The ViT forward written out, with ``edit_weights`` applied to every block's attention
    weights (B, H, N, N); returns the last block output."""
    x = model._pos_embed(model.patch_embed(images))
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(x)
        batch, n_tokens, width = h.shape
        q, k, v = attn.qkv(h).reshape(batch, n_tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        weights = edit_weights((q @ k.transpose(-2, -1) * attn.head_dim**-0.5).softmax(-1))
        x = x + attn.proj((weights @ v).transpose(1, 2).reshape(batch, n_tokens, width))
        x = x + block.mlp(block.norm2(x))
    return x


def assert_same_forward(actual, expected):
    """Two-block float32 forwards computed in a different order (the model vs the written-out
    forward) agree to ~1e-6 of the tensor's scale (values reach ~30 here), not to a fixed absolute
    1e-5 at near-zero entries."""
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def last_state(model, images):
    captured = {}
    handle = model.blocks[-1].register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return captured["x"]


def zero_cls_column(weights):
    edited = weights.clone()
    edited[:, :, 1:, 0] = 0
    return edited


def attend_to_self(weights):
    n_tokens = weights.shape[-1]
    edited = weights.clone()
    for t in range(1, n_tokens):
        edited[:, :, t, :] = 0
        edited[:, :, t, t] = 1
    return edited


# ---------------------------------------------------------------------------------------------
# Attention perturbation


def test_perturb_attention_on_a_hand_matrix():
    weights = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.4, 0.4, 0.2]]).view(1, 1, 3, 3)
    self_only = perturbation.perturb_attention(weights, "self_only")
    no_cls = perturbation.perturb_attention(weights, "no_cls")
    assert torch.equal(self_only[0, 0], torch.tensor([[0.5, 0.3, 0.2], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    assert torch.equal(no_cls[0, 0], torch.tensor([[0.5, 0.3, 0.2], [0.0, 0.6, 0.3], [0.0, 0.4, 0.2]]))
    assert torch.equal(weights[0, 0, 1], torch.tensor([0.1, 0.6, 0.3])), "the input is not modified"
    with pytest.raises(ValueError):
        perturbation.perturb_attention(weights, "uniform")


def test_sanity_manual_forward_reproduces_the_model(model, images):
    with torch.no_grad():
        assert_same_forward(manual_forward(model, images, lambda w: w), last_state(model, images))


@pytest.mark.parametrize("kind, edit", [("no_cls", zero_cls_column), ("self_only", attend_to_self)])
def test_every_block_is_perturbed_as_a_direct_implementation(model, images, kind, edit):
    with perturbation.perturbed_attention(model, kind):
        perturbed = last_state(model, images)
    with torch.no_grad():
        expected = manual_forward(model, images, edit)
    assert_same_forward(perturbed, expected)
    assert not torch.allclose(perturbed, last_state(model, images), atol=1e-3), "the perturbation changes the output"


def test_self_only_image_tokens_see_only_themselves(model, images):
    """Attending only to itself, an image token's attention output is its own value vector
    projected, and its block output equals the block applied to that token alone."""
    block = model.blocks[0]
    x = model._pos_embed(model.patch_embed(images)).detach()
    batch, n_tokens, width = x.shape
    with torch.no_grad():
        with perturbation.perturbed_attention(model, "self_only"):
            attention_output = block.attn(block.norm1(x))
            block_output = block(x)
        values = block.attn.qkv(block.norm1(x))[..., 2 * width :]  # heads concatenated, as proj expects
        alone = block(x[:, 1:].reshape(batch * (n_tokens - 1), 1, width)).reshape(batch, n_tokens - 1, width)
        unperturbed = block(x)
    assert torch.allclose(attention_output[:, 1:], block.attn.proj(values[:, 1:]), atol=1e-5)
    assert torch.allclose(block_output[:, 1:], alone, atol=1e-5)
    assert torch.allclose(block_output[:, 0], unperturbed[:, 0], atol=1e-6), "the [CLS] row is untouched"


def test_perturbed_attention_keeps_gradients_usable(model, images):
    """With gradients on, the weights are perturbed on a copy: softmax's backward needs them."""
    with perturbation.perturbed_attention(model, "self_only"):
        model(images).sum().backward()
    assert all(p.grad is not None for p in model.blocks[0].attn.qkv.parameters())
    model.zero_grad(set_to_none=True)


def all_hooks(model):
    return [
        hook
        for module in model.modules()
        for hook in (*module._forward_hooks.values(), *module._forward_pre_hooks.values())
    ]


def test_the_model_is_unchanged_afterwards(model, images):
    before = last_state(model, images)
    for block in model.blocks:
        block.attn.fused_attn = True  # timm's default where SDPA is available
    hooks = all_hooks(model)
    with pytest.raises(RuntimeError, match="inside"):
        with perturbation.perturbed_attention(model, "self_only"):
            assert not any(block.attn.fused_attn for block in model.blocks)
            raise RuntimeError("inside")
    with model_runs.TokenSelection(model) as selection:
        selection.set_positions(torch.zeros(len(images), 1, dtype=torch.long))
        last_state(model, images)
    assert all(block.attn.fused_attn for block in model.blocks)
    assert all_hooks(model) == hooks
    assert torch.equal(last_state(model, images), before)


def run_attention(model, images, kind, batch_size):
    targets = np.arange(len(images)) % NUM_CLASSES
    return perturbation.attention_perturbation(
        model, list(images), np.arange(len(images)), targets, kind, batch_size=batch_size, device=torch.device("cpu")
    )


def test_attention_perturbation_batched_equals_one_image_at_a_time(model, images, monkeypatch):
    # Batches of 4 forwarded in chunks of 2 images, as on a CPU with a bigger model.
    monkeypatch.setattr(perturbation, "CPU_ATTENTION_ELEMENTS", 2 * model.blocks[0].attn.num_heads * 17**2)
    assert perturbation.forward_chunk(model, torch.device("cpu")) == 2
    batched = run_attention(model, images, "no_cls", batch_size=4)
    single = run_attention(model, images, "no_cls", batch_size=1)
    assert batched.tokens.column_names == ["image", "token", "rank", "logit"]
    assert batched.tokens.num_rows == len(images) * (GRID * GRID + 1)
    assert batched.tokens.column("rank").equals(single.tokens.column("rank"))
    assert np.allclose(batched.tokens.column("logit").to_numpy(), single.tokens.column("logit").to_numpy(), atol=1e-5)
    assert batched.predictions.column("pred").equals(single.predictions.column("pred"))
    # Ranks agree with a direct computation of the perturbed last block.
    with torch.no_grad():
        logits = projection.project(model, manual_forward(model, images, zero_cls_column))
    targets = torch.arange(len(images)) % NUM_CLASSES
    expected = selection.rank_of(logits, targets.view(-1, 1).expand(logits.shape[:2]))
    assert np.array_equal(batched.tokens.column("rank").to_numpy(), expected.numpy().reshape(-1))


def test_gap_models_are_refused():
    gap = VisionTransformer(
        img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, class_token=False, global_pool="avg"
    )
    with pytest.raises(InputError, match="CLS"):
        with perturbation.perturbed_attention(gap, "no_cls"):
            pass


# ---------------------------------------------------------------------------------------------
# Token perturbation


def test_length_groups_batch_equal_lengths_in_stimulus_order():
    keep = np.zeros((6, 4), bool)
    keep[:, 0] = True
    for image, extra in enumerate([0, 2, 0, 1, 2, 2]):
        keep[image, 1 : 1 + extra] = True
    groups = perturbation.length_groups(keep, batch_size=2)
    assert [g.tolist() for g in groups] == [[0, 2], [3], [1, 4], [5]]


def test_kept_token_mask_keeps_cls_and_one_label():
    class_mask = np.array([[True, False, True], [False, False, False]])
    assert kept_token_mask(class_mask, "context").tolist() == [[True, True, False, True], [True, False, False, False]]
    assert kept_token_mask(class_mask, "class_label").tolist() == [[True, False, True, False], [True, True, True, True]]


@pytest.fixture(scope="module")
def class_mask():
    """Random labels, plus an image without class tokens and one without context tokens."""
    mask = np.random.default_rng(2).random((7, GRID * GRID)) < 0.4
    mask[1] = False
    mask[4] = True
    return mask


def run_tokens(model, images, keep, batch_size):
    targets = np.arange(len(images)) % NUM_CLASSES
    return perturbation.token_perturbation(
        model, list(images), np.arange(len(images)), targets, keep, batch_size=batch_size, device=torch.device("cpu")
    )


@pytest.mark.parametrize("mask", ["context", "class_label"])
def test_token_perturbation_batched_equals_each_image_alone(model, images, class_mask, mask):
    keep = kept_token_mask(class_mask, mask)
    batched = run_tokens(model, images, keep, batch_size=3)
    tokens = batched.tokens.to_pandas()
    assert tokens.columns.tolist() == ["image", "position", "rank", "logit"]
    assert np.array_equal(tokens["image"], np.nonzero(keep)[0]) and np.array_equal(
        tokens["position"], np.nonzero(keep)[1]
    )
    predictions = batched.predictions.to_pandas()
    assert predictions["n_kept_image_tokens"].tolist() == (keep.sum(1) - 1).tolist()
    for image in range(len(images)):
        # Each image alone, written out: gather the embedded tokens, run the blocks, project.
        positions = torch.from_numpy(np.flatnonzero(keep[image]))
        with torch.no_grad():
            x = model._pos_embed(model.patch_embed(images[image : image + 1]))[:, positions]
            logits = projection.project(model, model.blocks(x))[0]
        expected = selection.rank_of(logits, torch.full((len(positions),), image % NUM_CLASSES))
        assert tokens.loc[tokens["image"] == image, "rank"].tolist() == expected.tolist()
        assert predictions.loc[image, "pred"] == logits[0].argmax().item()
    only_cls = 1 if mask == "context" else 4
    assert tokens.loc[tokens["image"] == only_cls, "position"].tolist() == [0]
    single = run_tokens(model, images, keep, batch_size=1)
    assert batched.tokens.column("rank").equals(single.tokens.column("rank"))


def test_keeping_every_token_reproduces_the_unperturbed_lens(model, images):
    keep = np.ones((len(images), GRID * GRID + 1), bool)
    result = run_tokens(model, images, keep, batch_size=4)
    targets = torch.arange(len(images)) % NUM_CLASSES
    with lens.ClassEmbeddingLens(model) as hooks, torch.no_grad():
        hooks.set_targets(targets)
        model(images)
    expected = hooks.record.layers[f"hs_{len(model.blocks) - 1}"].rank
    assert np.array_equal(result.tokens.column("rank").to_numpy(), expected.numpy().reshape(-1))


# ---------------------------------------------------------------------------------------------
# Token removal in every family: relative position biases and rotary embeddings are applied inside
# the attention, for the full grid; the brute force masks the removed keys of the full sequence.


def random_kept(n_images: int, n_prefix: int, n_kept: int, seed: int = 3) -> torch.Tensor:
    """(n_images, n_prefix + n_kept) ascending positions: the prefix tokens and n_kept random image
    tokens, different for every image."""
    generator = torch.Generator().manual_seed(seed)
    chosen = [torch.randperm(GRID * GRID, generator=generator)[:n_kept].sort().values for _ in range(n_images)]
    return torch.cat([torch.arange(n_prefix).expand(n_images, -1), torch.stack(chosen) + n_prefix], dim=1)


def kept_states(states: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.shape[-1]))


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("family", FAMILIES)
def test_kept_tokens_attend_as_the_full_sequence_with_removed_keys_masked(scrambled_vit, images, family, fused):
    model = build(scrambled_vit, family, NUM_CLASSES)
    for block in model.blocks:
        block.attn.fused_attn = fused  # the bias or rotation reaches SDPA or the written-out softmax
    positions = random_kept(len(images), model.num_prefix_tokens, n_kept=6)
    with model_runs.TokenSelection(model) as tokens:
        tokens.set_positions(positions)
        state, logits = last_block(model, images)
    expected, expected_logits = reference(model, images, positions)
    assert_same_forward(state, expected)
    assert_same_forward(logits, expected_logits)
    full, _ = last_block(model, images)
    assert not torch.allclose(kept_states(full, positions), expected, atol=1e-2), "removed tokens mattered"


@pytest.mark.parametrize("family", FAMILIES)
def test_token_perturbation_in_every_family_equals_the_masked_full_forward(scrambled_vit, images, class_mask, family):
    model = build(scrambled_vit, family, NUM_CLASSES)
    n_prefix = model.num_prefix_tokens
    for mask in ("context", "class_label"):
        keep = kept_token_mask(class_mask, mask, n_prefix)
        result = run_tokens(model, images, keep, batch_size=3)
        tokens = result.tokens.to_pandas()
        predictions = result.predictions.to_pandas()
        for image in range(len(images)):
            positions = torch.from_numpy(np.flatnonzero(keep[image])).unsqueeze(0)
            state, logits = reference(model, images[image : image + 1], positions)
            target = torch.full((positions.shape[1],), image % NUM_CLASSES)
            expected = selection.rank_of(projection.project(model, state)[0], target)
            assert tokens.loc[tokens["image"] == image, "rank"].tolist() == expected.tolist(), (mask, image)
            if logits.isfinite().all():
                assert predictions.loc[image, "pred"] == logits[0].argmax().item(), (mask, image)
            else:  # the model averages its image tokens and none is left
                assert predictions.loc[image, ["pred", "correct"]].tolist() == [-1, False], (mask, image)


@pytest.mark.parametrize("family", ["beit", "beit_shared", "relpos_table", "relpos_shared", "rope_mixed", "dinov3"])
def test_token_removal_leaves_the_model_as_it_was(scrambled_vit, images, family):
    model = build(scrambled_vit, family, NUM_CLASSES)
    before, _ = last_block(model, images)
    hooks = all_hooks(model)
    with pytest.raises(RuntimeError, match="inside"):
        with model_runs.TokenSelection(model) as tokens:
            tokens.set_positions(random_kept(len(images), model.num_prefix_tokens, n_kept=3))
            last_block(model, images)
            raise RuntimeError("inside")
    assert all_hooks(model) == hooks
    shadowed = [
        name for module in model.modules() for name in ("_get_rel_pos_bias", "get_bias") if name in vars(module)
    ]
    assert shadowed == []
    assert torch.equal(last_block(model, images)[0], before)


def test_the_prefix_tokens_are_never_removed(scrambled_vit, images):
    model = build(scrambled_vit, "dinov3", NUM_CLASSES)  # [CLS] and registers, rotary embeddings
    n_prefix = model.num_prefix_tokens
    assert n_prefix > 1
    with model_runs.TokenSelection(model) as tokens:
        with pytest.raises(ValueError, match="prefix"):
            tokens.set_positions(torch.tensor([[0, *range(2, n_prefix + 3)]]))
    with pytest.raises(InputError, match="token removal"):
        token_removal.install(torch.nn.Linear(2, 2), lambda: None)


# ---------------------------------------------------------------------------------------------
# Tables on hand-made inputs: 2 images, [CLS] + 2 image tokens, 2 blocks


def write(path, **columns):
    tables.write_table(pa.table(columns), path)


def rank_table(path, image, position, rank, position_name="token"):
    write(
        path,
        image=pa.array(np.asarray(image, np.int32)),
        **{position_name: pa.array(np.asarray(position, np.int16))},
        rank=pa.array(np.asarray(rank, np.int16)),
        logit=pa.array(np.zeros(len(rank), np.float32)),
    )


def grid_ranks(path, ranks):
    """A complete (image, token) rank table from an (n_images, n_tokens) array."""
    image, token = np.nonzero(np.ones_like(ranks, bool))
    rank_table(path, image, token, ranks.reshape(-1))


def predictions(path, correct):
    write(path, image=pa.array(np.arange(len(correct), dtype=np.int32)), correct=pa.array(correct))


@pytest.fixture
def hand_model(tmp_path):
    extract, perturbed = tmp_path / "extract", tmp_path / "perturbation"
    grid_ranks(extract / "hs_1.parquet", np.array([[0, 0, 3], [1, 0, 0]]))
    predictions(extract / "predictions.parquet", [True, False])
    grid_ranks(perturbed / "attn_self_only.parquet", np.array([[0, 2, 0], [0, 1, 1]]))
    predictions(perturbed / "attn_self_only_predictions.parquet", [True, True])
    grid_ranks(perturbed / "attn_no_cls.parquet", np.array([[1, 1, 1], [0, 0, 0]]))
    predictions(perturbed / "attn_no_cls_predictions.parquet", [False, True])
    # Image 0: token 1 class, token 2 context; image 1: both context.
    write(
        tmp_path / "labels.parquet",
        image=pa.array(np.array([0, 0, 1, 1], np.int32)),
        token=pa.array(np.array([0, 1, 0, 1], np.int16)),
        label=pa.array(["class", "context", "context", "context"]).dictionary_encode(),
        class_fraction=pa.array(np.array([0.9, 0.0, 0.1, 0.0], np.float32)),
    )
    # No context: image 0 keeps positions 0, 1; image 1 only [CLS].
    rank_table(perturbed / "tokens_no_context.parquet", [0, 0, 1], [0, 1, 0], [0, 2, 0], "position")
    predictions(perturbed / "tokens_no_context_predictions.parquet", [False, False])
    # No class-labelled tokens: image 0 keeps 0, 2; image 1 keeps 0, 1, 2.
    rank_table(
        perturbed / "tokens_no_class_label.parquet", [0, 0, 1, 1, 1], [0, 2, 0, 1, 2], [3, 0, 0, 0, 5], "position"
    )
    predictions(perturbed / "tokens_no_class_label_predictions.parquet", [True, True])
    return {
        "name": "hand",
        "display_name": "Hand",
        "num_blocks": 2,
        # [CLS] and a 1x2 grid: the hand-made rows have 2 image tokens, which the token labels are checked against.
        "class_token": True,
        "token_grid": [1, 2],
        **flat_tables(extract),
        "perturbations": {
            "attn_perturbation": {
                kind: {
                    "ranks": str(perturbed / f"attn_{kind}.parquet"),
                    "predictions": str(perturbed / f"attn_{kind}_predictions.parquet"),
                }
                for kind in ("self_only", "no_cls")
            },
            "token_perturbation": {
                mask: {
                    "ranks": str(perturbed / f"tokens_no_{mask}.parquet"),
                    "predictions": str(perturbed / f"tokens_no_{mask}_predictions.parquet"),
                }
                for mask in ("context", "class_label")
            },
        },
        "token_labels": str(tmp_path / "labels.parquet"),
    }


def test_tab_attn_perturbation_by_hand(hand_model, tmp_path):
    output = SimpleNamespace(csv=tmp_path / "attn.csv")
    perturbation_tables.tab_attn_perturbation([hand_model], output)
    table = pd.read_csv(output.csv).set_index("perturbation")
    assert table.loc["self_only", "n_identifiable_tokens"] == 3
    assert table.loc["self_only", "pct_tokens_paper"] == pytest.approx(50.0)
    assert table.loc["self_only", "pct_image_tokens"] == pytest.approx(25.0)
    assert table.loc["no_cls", "pct_tokens_paper"] == pytest.approx(50.0)
    assert table.loc["no_cls", "pct_image_tokens"] == pytest.approx(50.0)
    assert table["pct_image_tokens_unperturbed"].tolist() == pytest.approx([75.0, 75.0])
    assert table["accuracy"].tolist() == pytest.approx([100.0, 50.0])
    assert table["accuracy_unperturbed"].tolist() == pytest.approx([50.0, 50.0])
    assert table["block"].tolist() == [2, 2]


def test_tab_context_perturbation_by_hand(hand_model, tmp_path):
    output = SimpleNamespace(csv=tmp_path / "context.csv")
    perturbation_tables.tab_context_perturbation([hand_model], output)
    table = pd.read_csv(output.csv).set_index("mask")
    no_context, no_class = table.loc["context"], table.loc["class_label"]
    assert no_context["kept_label"] == "class" and no_class["kept_label"] == "context"
    # Per image (CLS included): image 0 1/2, image 1 (only CLS) 1/1.
    assert no_context["pct_kept_tokens_paper"] == pytest.approx(75.0)
    assert no_context["pct_kept_label_unperturbed"] == pytest.approx(100.0)
    assert no_context["pct_kept_image_tokens"] == pytest.approx(0.0)
    assert (no_context["n_images_only_cls"], no_context["n_kept_image_tokens"]) == (1, 1)
    # Image 0 1/2, image 1 2/3; unperturbed context ranks 3, 0, 0; perturbed 0, 0, 5.
    assert no_class["pct_kept_tokens_paper"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)
    assert no_class["pct_kept_label_unperturbed"] == pytest.approx(200 / 3)
    assert no_class["pct_kept_image_tokens"] == pytest.approx(200 / 3)
    assert (no_class["n_images_only_cls"], no_class["n_kept_image_tokens"]) == (0, 3)
    assert table["accuracy"].tolist() == pytest.approx([0.0, 100.0])


def test_a_token_table_that_does_not_match_the_labels_is_refused(hand_model, tmp_path):
    perturbed = tmp_path / "perturbation"
    rank_table(perturbed / "tokens_no_context.parquet", [0, 0, 1], [0, 2, 0], [0, 2, 0], "position")
    with pytest.raises(InputError, match="kept tokens"):
        perturbation_tables.tab_context_perturbation([hand_model], SimpleNamespace(csv=tmp_path / "c.csv"))
