"""Class-embedding gradient maps, Chefer relevance and the perturbation test (docs/method.md §4.12, §4.13)
against direct re-implementations and hand-computed values."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from masked_attention import build, reference

from class_embedding import tables
from class_embedding.analyses import explain_auc, explain_perturbation, gradients
from class_embedding.analyses.model_runs import TokenSelection
from class_embedding.errors import InputError
from class_embedding.extraction import projection
from class_embedding.figures import explain_figures

NUM_CLASSES = 5
GRID = 3  # 9 image tokens + [CLS]


@pytest.fixture(scope="module")
def model(scrambled_vit):
    """A tiny [CLS] ViT with parameters far from timm's near-zero initialisation (non-uniform
    attention, separated logits); fused attention as timm sets it by default."""
    return scrambled_vit(img_size=12, patch_size=4, embed_dim=16, depth=3, num_heads=2, num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def images():
    return torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))


TARGETS = torch.tensor([0, 3, 1, 4])


def manual_forward(model, images):
    """The ViT forward written out without hooks; returns the logits, every block's attention
    weights (B, H, N, N, in the graph) and attention residual update (B, N, D)."""
    x = model._pos_embed(model.patch_embed(images))
    weights, updates = [], []
    for block in model.blocks:
        attn = block.attn
        h = block.norm1(x)
        batch, n_tokens, width = h.shape
        q, k, v = attn.qkv(h).reshape(batch, n_tokens, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        a = (q @ k.transpose(-2, -1) * attn.head_dim**-0.5).softmax(-1)
        update = attn.proj((a @ v).transpose(1, 2).reshape(batch, n_tokens, width))
        weights.append(a)
        updates.append(update)
        x = x + update
        x = x + block.mlp(block.norm2(x))
    return model.head(model.norm(x)[:, 0]), weights, updates


@pytest.mark.parametrize("loss", gradients.LOSSES)
def test_one_pass_block_gradients_equal_per_block_autograd(model, images, loss):
    expected = []
    for b in range(len(model.blocks)):  # one backward per block, on the undetached path
        with torch.enable_grad():
            _, weights, updates = manual_forward(model, images)
            logits = projection.project(model, updates[b][:, 0])
            probabilities = logits.softmax(-1) if loss == "double_softmax" else logits
            block_loss = torch.nn.functional.cross_entropy(probabilities, TARGETS, reduction="sum")
            (grad,) = torch.autograd.grad(block_loss, weights[b])
        assert grad[:, :, 1:].abs().max() == 0  # only the [CLS] query row depends on [CLS]
        expected.append(grad[:, :, 0, :])
    expected = torch.stack(expected, dim=1)
    fused_before = [block.attn.fused_attn for block in model.blocks]
    actual = gradients.block_gradients(model, images, TARGETS, loss)
    assert actual.shape == (4, 3, 2, GRID * GRID + 1)
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-5 * float(expected.abs().max()))
    # The later blocks' losses must not leak into an earlier block's gradient.
    with torch.enable_grad():
        _, weights, updates = manual_forward(model, images)
        total = sum(
            torch.nn.functional.cross_entropy(projection.project(model, u[:, 0]).softmax(-1), TARGETS, reduction="sum")
            for u in updates
        )
        (leaky,) = torch.autograd.grad(total, weights[0])
    if loss == "double_softmax":
        assert not torch.allclose(leaky[:, :, 0], actual[:, 0], rtol=1e-3, atol=1e-6)
    assert [block.attn.fused_attn for block in model.blocks] == fused_before


def test_importance_maps_are_negated_gradients(model, images):
    grads = gradients.block_gradients(model, images, TARGETS)
    torch.testing.assert_close(gradients.head_maps(grads)[2, 1, 0], -grads[2, 1, 0, 1:])
    torch.testing.assert_close(gradients.summed_map(grads)[1], -grads[1, :, :, 1:].sum(dim=(0, 1)))


def test_chefer_relevance_equals_a_direct_loop(model, images):
    actual = gradients.chefer_relevance(model, images, TARGETS)
    for i in range(len(images)):
        with torch.enable_grad():
            logits, weights, _ = manual_forward(model, images[i : i + 1])
            grads = torch.autograd.grad(logits[0, TARGETS[i]], weights)
        weights = [a.detach() for a in weights]
        n_tokens = weights[0].shape[-1]
        relevance = torch.eye(n_tokens)
        for a, g in zip(weights, grads):
            n_heads = a.shape[1]
            cam = torch.zeros(n_tokens, n_tokens)
            for h in range(n_heads):
                for q in range(n_tokens):
                    for k in range(n_tokens):
                        cam[q, k] += max(float(g[0, h, q, k] * a[0, h, q, k]), 0.0) / n_heads
            relevance = relevance + cam @ relevance
        torch.testing.assert_close(actual[i], relevance[0], rtol=1e-4, atol=1e-6)


def test_maps_table_round_trip(tmp_path, model, images):
    loader = torch.utils.data.DataLoader(images, batch_size=3)
    maps = gradients.explanation_maps(model, loader, TARGETS.numpy(), loss="double_softmax", device=torch.device("cpu"))
    assert maps["grads"].shape == maps["grads_chefer"].shape == (4, GRID * GRID)
    np.testing.assert_allclose(
        maps["grads"],
        gradients.summed_map(gradients.block_gradients(model, images, TARGETS)).numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
    path = tmp_path / "maps.parquet"
    tables.write_table(gradients.maps_table(np.arange(4), maps), path)
    frame = tables.read_table(path).to_pandas()
    assert frame["token"].min() == 1 and frame["token"].max() == GRID * GRID
    back = gradients.read_maps(path, n_images=4)
    for method in gradients.METHODS:
        np.testing.assert_array_equal(back[method], maps[method])
    with pytest.raises(InputError, match="stimuli are 5"):
        gradients.read_maps(path, n_images=5)


# ---------------------------------------------------------------------------------------------
# Perturbation test


def test_orderings():
    importance = np.array([[0.1, 0.5, 0.5, -1.0], [3.0, 2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(explain_perturbation.importance_ordering(importance), [[1, 2, 0, 3], [0, 1, 2, 3]])
    ordering = np.array([[2, 0, 3, 1]])
    np.testing.assert_array_equal(explain_perturbation.kept_positions(ordering, 2, "negative"), [[0, 1, 3]])
    np.testing.assert_array_equal(explain_perturbation.kept_positions(ordering, 1, "positive"), [[0, 2]])
    np.testing.assert_array_equal(explain_perturbation.kept_counts(10, 4), [1, 5, 9, 10])
    np.testing.assert_array_equal(explain_perturbation.kept_counts(4), [1, 2, 3, 4])
    random = explain_perturbation.random_orderings(9, 3, first_seed=5)
    assert random.shape == (3, 9) and all(sorted(row) == list(range(9)) for row in random)
    np.testing.assert_array_equal(random, explain_perturbation.random_orderings(9, 3, first_seed=5))
    # Repeat p uses seed first_seed + p.
    np.testing.assert_array_equal(random[1:], explain_perturbation.random_orderings(9, 3, first_seed=6)[:2])


# torch.randperm(49, generator=torch.manual_seed(0)), written down once: the paper's first random
# ordering of ViT-B/32's 49 image tokens.
PAPER_FIRST_RANDOM_ORDERING = [
    11, 16, 43, 13, 47, 8, 41, 38, 20, 12, 48, 31, 35, 1, 37, 39, 2, 29, 3, 22, 40, 44, 30, 45, 10,
    42, 33, 24, 18, 17, 4, 0, 9, 26, 21, 46, 15, 27, 36, 19, 25, 34, 5, 6, 23, 32, 7, 14, 28,
]  # fmt: skip


def fisher_yates_mt19937(n, seed):
    """torch's CPU randperm: a forward Fisher–Yates shuffle drawing 32-bit Mersenne Twister
    outputs (the same algorithm in torch 1.13, the original's version, and today)."""
    bits = np.random.MT19937()
    bits._legacy_seeding(seed)
    values = list(range(n))
    for i in range(n - 1):
        j = i + int(bits.random_raw()) % (n - i)
        values[i], values[j] = values[j], values[i]
    return values


def test_random_orderings_are_the_papers_torch_permutations():
    random = explain_perturbation.random_orderings(49, 10)
    np.testing.assert_array_equal(random[0], PAPER_FIRST_RANDOM_ORDERING)
    for p in range(10):
        np.testing.assert_array_equal(random[p], fisher_yates_mt19937(49, p))
    # Generalised to N image tokens (e.g. 196 for ViT-B/16), still one torch seed per repeat.
    np.testing.assert_array_equal(explain_perturbation.random_orderings(196, 2)[1], fisher_yates_mt19937(196, 1))
    assert explain_perturbation.random_orderings(49, 0).shape == (0, 49)


def test_linear_probe_ordering(tmp_path):
    # 2 images, 3 image tokens, 2 blocks; summed hs ranks image 0: [5, 1, 1], image 1: [0, 4, 2]
    ranks = {("hs_0", 0): [3, 0, 1], ("hs_1", 0): [2, 1, 0], ("hs_0", 1): [0, 2, 2], ("hs_1", 1): [0, 2, 0]}
    rows = []
    for (layer, image), values in ranks.items():
        rows.append({"image": image, "layer": layer, "token": 0, "rank": 9})  # [CLS], ignored
        rows += [{"image": image, "layer": layer, "token": t + 1, "rank": r} for t, r in enumerate(values)]
        rows += [{"image": image, "layer": layer.replace("hs", "attn"), "token": t + 1, "rank": 0} for t in range(3)]
    path = tmp_path / "ranks.parquet"
    frame = pd.DataFrame(rows).astype({"image": "int32", "token": "int16", "rank": "int16"})
    frame.to_parquet(path)
    np.testing.assert_array_equal(explain_perturbation.linear_probe_ordering(path, 2, 3), [[1, 2, 0], [0, 2, 1]])
    with pytest.raises(InputError, match="rebuild the probes"):
        explain_perturbation.linear_probe_ordering(path, 3, 3)


def test_batched_evaluation_equals_one_image_at_a_time(model, images):
    n_tokens = GRID * GRID
    rng = np.random.default_rng(0)
    orderings = {"grads": np.argsort(rng.random((4, n_tokens)), axis=1)}
    curves = explain_perturbation.build_curves(orderings, explain_perturbation.random_orderings(n_tokens, 2, 0), 4)
    kept = explain_perturbation.kept_counts(n_tokens, 1)
    targets = TARGETS.numpy()
    batched = explain_perturbation.evaluate_curves(
        model, images, targets, curves, kept, tokens_per_batch=7, device=torch.device("cpu")
    )
    alone = explain_perturbation.one_at_a_time(model, images, targets, curves, kept, torch.device("cpu"))
    np.testing.assert_array_equal(batched, alone)
    # Not trivially constant: some curves and counts differ, and all kept = the plain model.
    assert batched.any() and not batched.all()
    with torch.no_grad():
        plain = model(images).argmax(-1).numpy() == targets
    np.testing.assert_array_equal(batched[:, -1], np.broadcast_to(plain, batched[:, -1].shape))


def test_evaluation_logits_equal_a_shorter_sequence(model, images):
    """Keeping tokens is the forward of the shorter sequence with their own position embeddings."""
    positions = torch.tensor([[0, 2, 5, 9]])
    with TokenSelection(model) as selection, torch.no_grad():
        selection.set_positions(positions)
        kept_logits = model(images[:1])
    with torch.no_grad():
        x = model._pos_embed(model.patch_embed(images[:1]))[:, positions[0]]
        for block in model.blocks:
            x = block(x)
        direct = model.head(model.norm(x)[:, 0])
    torch.testing.assert_close(kept_logits, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["beit", "relpos_shared", "eva02", "rope_mixed", "dinov3"])
def test_evaluation_in_every_family_equals_the_masked_full_forward(scrambled_vit, family):
    """Relative position biases and rotary embeddings follow the kept tokens: every (curve, n,
    image) is predicted as the full sequence with the removed keys masked out."""
    model = build(scrambled_vit, family, NUM_CLASSES, img_size=12)
    n_tokens, n_prefix = GRID * GRID, model.num_prefix_tokens
    images = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        targets = model(images).argmax(-1).numpy()  # all correct when nothing is removed
    rng = np.random.default_rng(1)
    orderings = {"grads": np.argsort(rng.random((4, n_tokens)), axis=1)}
    curves = explain_perturbation.build_curves(orderings, explain_perturbation.random_orderings(n_tokens, 1, 0), 4)
    kept = explain_perturbation.kept_counts(n_tokens, 2)
    correct = explain_perturbation.evaluate_curves(
        model, images, targets, curves, kept, tokens_per_batch=20, device=torch.device("cpu")
    )
    expected = np.zeros_like(correct)
    for c, curve in enumerate(curves):
        for k, n in enumerate(kept):
            positions = explain_perturbation.kept_positions(curve.ordering, int(n), curve.direction, n_prefix)
            _, logits = reference(model, images, torch.from_numpy(positions))
            expected[c, k] = logits.argmax(-1).numpy() == targets
    np.testing.assert_array_equal(correct, expected)
    assert correct[:, -1].all() and not correct.all(), "removing tokens changes some predictions"


CURVE_KEPT = np.array([1, 2, 3, 4])
CURVE_ACC = np.array([0.2, 0.5, 0.4, 0.8])  # kept 1..3 perturbed, 4 = all (N = 4)


def test_aucs_equal_hand_computed_values():
    # Paper: (0.2 + 0.5 + 0.4) / (0.5 · 4) = 0.55
    assert explain_auc.paper_auc(CURVE_KEPT, CURVE_ACC, 4) == pytest.approx(0.55)
    # Trapezoid over removed fractions 0, .25, .5, .75 with accuracies .8, .4, .5, .2:
    # .25·(.8+.4)/2 + .25·(.4+.5)/2 + .25·(.5+.2)/2 = .15 + .1125 + .0875 = .35
    assert explain_auc.trapezoid_auc(CURVE_KEPT, CURVE_ACC, 4) == pytest.approx(0.35)
    # Batched over leading axes.
    both = np.stack([CURVE_ACC, CURVE_ACC / 2])
    np.testing.assert_allclose(explain_auc.paper_auc(CURVE_KEPT, both, 4), [0.55, 0.55])
    np.testing.assert_allclose(explain_auc.trapezoid_auc(CURVE_KEPT, both, 4), [0.35, 0.175])
    # A subset of kept counts: the mean over the evaluated ones times N − 1 (here 9 tokens).
    assert explain_auc.paper_auc(np.array([1, 5, 8, 9]), np.array([0.1, 0.3, 0.5, 0.9]), 9) == pytest.approx(
        (0.9 / 3) * 8 / (0.5 * 9)
    )


def test_auc_table_with_bootstrap():
    # 2 images; negative: image 0 always right, image 1 right only with all tokens kept.
    negative = np.array([[[1, 0], [1, 0], [1, 0], [1, 1]]], dtype=bool)
    positive = np.array([[[0, 0], [1, 0], [0, 0], [1, 1]]], dtype=bool)
    random = np.stack([negative[0], positive[0]])  # two repeats: their mean
    correct = {
        ("grads", "negative"): negative, ("grads", "positive"): positive,
        ("random", "negative"): random, ("random", "positive"): random,
    }  # fmt: skip
    table = explain_auc.auc_table(correct, CURVE_KEPT, 4, samples=200, seed=0)
    rows = {(r["method"], r["direction"]): r for r in table}
    neg = rows[("grads", "negative")]
    # accuracies .5 .5 .5 1 → paper (1.5)/(.5·4) = .75; trapezoid .25·(.75 + .5 + .5) = .4375
    assert neg["auc_paper"] == pytest.approx(0.75) and neg["auc_trapezoid"] == pytest.approx(0.4375)
    pos = rows[("grads", "positive")]
    # accuracies 0 .5 0 1 → paper .5/(.5·4) = .25; trapezoid .25·(.5 + .25 + .25) = .25
    assert pos["auc_paper"] == pytest.approx(0.25) and pos["auc_trapezoid"] == pytest.approx(0.25)
    diff = rows[("grads", "positive_minus_negative")]
    assert diff["auc_trapezoid"] == pytest.approx(0.25 - 0.4375)
    # random: mean accuracies .25 .5 .25 1 → paper 1/(.5·4) = .5
    assert rows[("random", "negative")]["auc_paper"] == pytest.approx(0.5)
    for row in rows.values():
        for kind in ("paper", "trapezoid"):
            assert row[f"auc_{kind}_low"] <= row[f"auc_{kind}"] + 1e-12 <= row[f"auc_{kind}_high"] + 2e-12
    again = explain_auc.auc_table(correct, CURVE_KEPT, 4, samples=200, seed=0)
    assert again == list(rows.values())


def test_curve_tables_round_trip(tmp_path):
    curves = explain_perturbation.build_curves({"grads": np.tile(np.arange(4), (2, 1))}, np.array([[3, 2, 1, 0]]), 2)
    correct = np.random.default_rng(0).random((len(curves), 4, 2)) > 0.5
    table = explain_perturbation.curves_table(curves, CURVE_KEPT, correct)
    frame = table.to_pandas()
    # grads in two directions, random once but listed under both
    assert len(frame) == 4 * 4
    assert set(frame.loc[frame["method"] == "random", "direction"]) == {"negative", "positive"}
    path = tmp_path / "correct.parquet"
    tables.write_table(explain_perturbation.correct_table(curves, CURVE_KEPT, correct, np.arange(2)), path)
    back, kept = explain_auc.read_correct(path)
    np.testing.assert_array_equal(kept, CURVE_KEPT)
    np.testing.assert_array_equal(back[("grads", "negative")][0], correct[0])
    np.testing.assert_array_equal(back[("grads", "positive")][0], correct[1])
    np.testing.assert_array_equal(back[("random", "positive")][0], correct[2])


# ---------------------------------------------------------------------------------------------
# Heat maps


def test_overlay_reproduces_the_paper_rendering():
    image = torch.zeros(3, 8, 8)
    image[0] = 1.0  # a red photo (after min–max over the whole image: red 1, others 0)
    importance = np.array([0.0, 1.0, 2.0, 3.0])  # 2×2 grid, highest bottom-right
    swapped = explain_figures.overlay(image, importance, (2, 2), swap_red_blue=True)
    plain = explain_figures.overlay(image, importance, (2, 2), swap_red_blue=False)
    assert swapped.shape == (8, 8, 3) and swapped.dtype == np.uint8
    # Bottom-right is hot (JET red) in both; the photo's red shows as blue only when swapped.
    assert plain[0, 0, 0] > plain[0, 0, 2] and swapped[0, 0, 2] > swapped[0, 0, 0]
    assert swapped[-1, -1, 0] == 255 or swapped[-1, -1, 0] > swapped[-1, -1, 1]
    assert swapped.max() == 255
    assert explain_figures.short_name("Granny Smith, apple") == "granny smith"
    np.testing.assert_array_equal(explain_figures.normalise(np.ones(4)), np.zeros(4))


def explained_fixture(model, images):
    stimuli = pd.DataFrame(
        {
            "image": np.arange(4), "wnid": ["n00000001", "n00000001", "n00000002", "n00000003"],
            "class_index": [0, 0, 3, 1], "img_index": [0, 1, 0, 0], "category": ["a", "a", "d", "b"],
        }
    )  # fmt: skip
    names = ["Alpha, first", "B", "C", "Delta", "E"]
    return explain_figures.Explained("tiny", model, list(images), stimuli, names, "double_softmax")


def test_heat_map_figures(tmp_path, model, images):
    explained = explained_fixture(model, images)
    config = {
        "head_panels": [{"wnid": "n00000001", "image": 1, "block": 2, "head": 1, "targets": [0, 4]}],
        "sum_panels": None,  # automatic: first image of each class, true class and the model's other top class
        "swap_red_blue": True,
    }
    output = SimpleNamespace(**{k: tmp_path / f"fig.{k}" for k in ("pdf", "png")}, data=tmp_path / "fig.csv")
    explain_figures.fig_explain_combined(explained, config, output)
    data = pd.read_csv(output.data)
    head = data[(data["map"] == "head") & (data["target"] == 4)]
    expected = gradients.head_maps(gradients.block_gradients(model, images[[1, 1]], torch.tensor([0, 4])))[1, 2, 1]
    np.testing.assert_allclose(head["importance"], expected.numpy(), rtol=1e-4, atol=1e-7)
    assert set(data["title"]) == {"alpha - bl. 2, h. 1", "e - bl. 2, h. 1", "alpha", "e"}
    explain_figures.fig_explain_sum(explained, config, output)
    summed = pd.read_csv(output.data)
    assert summed["image"].unique().tolist() == [0, 2, 3]  # one per class
    assert summed.groupby("image")["target"].first().tolist() == [0, 3, 1]  # the true class first
    for bad, key in [({"block": 3}, "head_panels[0].block"), ({"wnid": "n00000009"}, "head_panels[0].wnid")]:
        panels = [{**config["head_panels"][0], **bad}]
        with pytest.raises(InputError, match=key.replace("[", r"\[").replace("]", r"\]")):
            explain_figures.fig_explain_head(explained, {**config, "head_panels": panels}, output)
