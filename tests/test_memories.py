"""Key–value memories (docs/method.md §4.11): metrics against explicit loops and hand-made cases, the
value projections of tiny timm models against direct cosines, and every target end to end on
fake extraction tables."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import timm
import torch
from result_tables import flat_tables
from timm.layers import SwiGLU, SwiGLUPacked

from class_embedding import errors
from class_embedding.analyses import memories, memory_statistics, value_projections
from class_embedding.extraction import lens
from class_embedding.figures import memory_figures
from class_embedding.models import building, families
from class_embedding.tables import write_table

KWARGS = {"img_size": 16, "patch_size": 8, "embed_dim": 16, "depth": 2, "num_heads": 2, "num_classes": 7}
# Fields every config entry has, beside the architecture.
ENTRY = {
    "display_name": "Tiny",
    "token_grid": 2,
    "dataset": "micro",
    "weights": {"source": "demo_training"},
    "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
}
CLS_SPEC = {
    **ENTRY,
    "arch": "vit_base_patch16_224",
    "kwargs": KWARGS,
    "num_blocks": 2,
    "num_classes": 7,
    "class_token": True,
}
GAP_SPEC = {
    **ENTRY,
    "arch": "vit_base_patch16_rpn_224",
    "kwargs": KWARGS,
    "num_blocks": 2,
    "num_classes": 7,
    "class_token": False,
}
M = 4 * KWARGS["embed_dim"]  # MLP memories
D = KWARGS["embed_dim"]  # attention memories

# The config defaults of statistics.permutations and statistics.bootstrap.
COUNTS = {"n_permutations": 300, "n_bootstrap": 1000}


def distinct_memories(rng, shape, n_memories):
    """Random top-5 memory ids, distinct within each token as real top-k indices are."""
    return np.argsort(rng.random((*shape, n_memories)), axis=-1)[..., :5]


# ---------------------------------------------------------------------------------------------
# Per-token metrics


def test_agreement_and_compositionality_equal_explicit_loops():
    rng = np.random.default_rng(0)
    n_images, n_tokens, n_classes, n_memories = 6, 5, 12, 30
    activated = distinct_memories(rng, (n_images, n_tokens), n_memories)
    classes = rng.integers(0, n_classes, n_images)
    class_top = distinct_memories(rng, (n_classes,), n_memories)
    memory_top_class = rng.integers(0, n_classes, n_memories)
    top1 = rng.integers(0, n_classes, (n_images, n_tokens))

    agree = memories.key_value_agreement(activated, classes, memories.memory_membership(class_top, n_memories))
    composed = memories.compositionality(activated, memory_top_class, top1)

    for i in range(n_images):
        for t in range(n_tokens):
            tops = set(class_top[classes[i]].tolist())
            assert agree[i, t] == any(m in tops for m in activated[i, t])
            assert composed[i, t] == any(memory_top_class[m] == top1[i, t] for m in activated[i, t])
    assert 0 < agree.mean() < 1 and 0 < composed.mean() < 1  # both outcomes exercised


def test_known_agreement_rate_per_class():
    # Class 0's top memories are 0..4, class 1's are 5..9 (12 memories).
    member = memories.memory_membership(np.array([[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]), 12)
    activated = np.array(
        [
            [[0, 10, 11, 9, 8], [10, 11, 5, 6, 7]],  # class 0: agrees (0), not (5..7 are class 1's)
            [[11, 10, 7, 6, 5], [4, 3, 2, 1, 0]],  # class 0: not, agrees
            [[9, 10, 11, 0, 1], [11, 10, 0, 1, 2]],  # class 1: agrees (9), not
        ]
    )
    labels = np.array([0, 0, 1])
    agree = memories.key_value_agreement(activated, labels, member)
    np.testing.assert_array_equal(agree, [[True, False], [False, True], [True, False]])
    present, rates = memories.rate_per_class(agree, labels)
    np.testing.assert_array_equal(present, [0, 1])
    np.testing.assert_allclose(rates, [50.0, 50.0])  # 2 of 4 tokens, 1 of 2 tokens


def test_top_memories_and_top_classes_are_the_largest_projections():
    projections = np.array([[0.1, 0.9, 0.3, 0.5, 0.2, 0.0, 0.7], [0.8, 0.0, 0.4, 0.6, 0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(memories.top_memories(projections), [[1, 6, 3, 2, 4], [0, 3, 2, 6, 5]])
    classes, values = memories.top_classes(projections, k=2)
    np.testing.assert_array_equal(classes[:, 0], projections.argmax(axis=0))
    np.testing.assert_allclose(values, np.sort(projections, axis=0)[::-1].T)


def test_random_classes_draw_one_class_per_class_folder():
    labels = np.array([3, 3, 5, 5, 5, 1])
    drawn = memories.random_classes(labels, 10, np.random.default_rng(7))
    assert drawn[0] == drawn[1] and drawn[2] == drawn[3] == drawn[4]
    np.testing.assert_array_equal(drawn, memories.random_classes(labels, 10, np.random.default_rng(7)))


# ---------------------------------------------------------------------------------------------
# Value projections of tiny timm models


@pytest.fixture(scope="module")
def cls_pair():
    torch.manual_seed(0)
    return building.build_model(CLS_SPEC, "tiny"), building.random_model(CLS_SPEC, "tiny_value_baseline", 11)


def test_class_value_agreement_equals_direct_cosines(cls_pair):
    model, baseline = cls_pair
    per_class, _ = value_projections.value_projection_tables(model, baseline)
    scores = per_class.to_pandas()
    head = model.head.weight.detach()
    for layer_type, block in [("mlp", 1), ("attn", 0)]:
        linear = model.blocks[block].mlp.fc2 if layer_type == "mlp" else model.blocks[block].attn.proj
        values = linear.weight.detach()
        direct = [
            max(
                torch.nn.functional.cosine_similarity(head[c], values[:, k], dim=0).item()
                for k in range(values.shape[1])
            )
            for c in range(head.shape[0])
        ]
        rows = scores[(scores["layer_type"] == layer_type) & (scores["block"] == block)]
        np.testing.assert_allclose(rows["agreement_score"], direct, rtol=1e-5)
        projections = (head @ values).numpy()
        np.testing.assert_array_equal(np.stack(rows["top_memories"]), np.argsort(-projections, axis=1)[:, :5])


def test_projections_leave_the_weights_untouched(cls_pair):
    model, baseline = cls_pair
    before = {k: v.clone() for k, v in model.state_dict().items()}
    value_projections.value_projection_tables(model, baseline)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_random_baseline_is_reproducible_for_a_seed_and_its_wilcoxon_p_too(tmp_path, cls_pair):
    model, _ = cls_pair
    seed = memories.value_baseline_seed(3, "tiny")
    assert seed == memories.value_baseline_seed(3, "tiny") != memories.value_baseline_seed(4, "tiny")
    p_values = []
    for run in range(2):
        baseline = building.random_model(CLS_SPEC, "tiny_value_baseline", seed)
        directory = tmp_path / str(run)
        value_projections.write_value_projections(
            model, baseline, directory / "class_memories.parquet", directory / "memory_classes.parquet", {}
        )
        data = memory_statistics.class_value_data(
            {
                "name": "tiny",
                "display_name": "Tiny",
                "num_blocks": 2,
                "memories": {
                    "classes": directory / "class_memories.parquet",
                    "memories": directory / "memory_classes.parquet",
                },
            }
        )
        p_values.append(data["p_value"].to_numpy())
    np.testing.assert_array_equal(p_values[0], p_values[1])
    assert np.all((p_values[0] >= 0) & (p_values[0] <= 1))


def test_gap_post_norm_variant_scales_the_values():
    torch.manual_seed(1)
    model = building.build_model(GAP_SPEC, "tiny_gap")
    assert value_projections.value_variants(model) == [False, True]  # the paper's (no post-norm) first
    block = model.blocks[1]
    plain = value_projections.value_matrix(block, "mlp", includes_post_norm=False)
    # Random init sets every post-norm weight to 1e-5: a uniform scale changes no cosine.
    np.testing.assert_allclose(
        memories.class_value_agreement(
            value_projections.as_array(model.head.weight), value_projections.value_matrix(block, "mlp", True)
        ),
        memories.class_value_agreement(value_projections.as_array(model.head.weight), plain),
        rtol=1e-5,
    )
    with torch.no_grad():
        block.norm2.weight.copy_(torch.linspace(0.1, 3.0, D))
    scaled = value_projections.value_matrix(block, "mlp", includes_post_norm=True)
    np.testing.assert_allclose(scaled, np.linspace(0.1, 3.0, D)[:, None] * plain, rtol=1e-6)
    embeddings = value_projections.as_array(model.head.weight)
    assert not np.allclose(
        memories.class_value_agreement(embeddings, scaled), memories.class_value_agreement(embeddings, plain)
    )


# ---------------------------------------------------------------------------------------------
# MLPs with an inner norm: memories are read where fc2 applies its value vectors

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 7}
# family -> (arch, kwargs): the MLP has a norm between its activation (or gate) and fc2.
INNER_NORM = {
    "vit_scale_mlp_norm": ("vit_base_patch16_224", {"scale_mlp_norm": True}),  # Mlp
    "beit3_style": ("vit_base_patch16_224", {"scale_mlp_norm": True, "scale_attn_norm": True}),
    "vit_swiglu_norm": ("vit_base_patch16_224", {"scale_mlp_norm": True, "mlp_layer": SwiGLU}),
    "vit_swiglu_packed_norm": (
        "vit_base_patch16_224",
        {"scale_mlp_norm": True, "mlp_layer": SwiGLUPacked, "mlp_ratio": 5.33334},
    ),
    "eva_mlp_norm": ("eva02_tiny_patch14_224", {"swiglu_mlp": False, "scale_mlp": True}),  # Mlp
    "eva_swiglu_norm": ("eva02_tiny_patch14_224", {"scale_mlp": True}),
    "beit_mlp_norm": ("beit_base_patch16_224", {"scale_mlp": True}),  # Mlp, LayerScale
    "beit_swiglu_norm": ("beit_base_patch16_224", {"scale_mlp": True, "swiglu_mlp": True}),
}


def tiny_vit(arch: str, kwargs: dict, seed: int = 0) -> torch.nn.Module:
    """Random norm weights and biases: at 1 and 0 the inner norm would not reorder the memories."""
    torch.manual_seed(seed)
    model = timm.create_model(arch, pretrained=False, **{**TINY_VIT, **kwargs})
    return families.randomise_identity_like(model, seed).eval()


def activation_before_norm(mlp: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """act(fc1 x), or the gated product, recomputed from the MLP's weights."""
    if isinstance(mlp, SwiGLU):
        return mlp.act(mlp.fc1_g(hidden)) * mlp.fc1_x(hidden)
    if hasattr(mlp, "gate_last"):  # GluMlp, SwiGLUPacked
        first, second = mlp.fc1(hidden).chunk(2, dim=-1)
        return first * mlp.act(second) if mlp.gate_last else mlp.act(first) * second
    return mlp.act(mlp.fc1(hidden))


def lens_run(model: torch.nn.Module):
    """The lens's record of one forward pass, and each MLP's input and output in it."""
    seen = {}
    handles = []
    for b, block in enumerate(model.blocks):
        handles += [
            block.mlp.register_forward_pre_hook(lambda m, inputs, b=b: seen.__setitem__(("in", b), inputs[0])),
            block.mlp.register_forward_hook(lambda m, inputs, output, b=b: seen.__setitem__(("out", b), output)),
            lens.residual_update_modules(block)[1].register_forward_hook(
                lambda m, inputs, output, b=b: seen.__setitem__(("update", b), output)
            ),
        ]
    hooks = lens.ClassEmbeddingLens(model)
    with hooks, torch.inference_mode():
        hooks.set_targets(torch.zeros(3, dtype=torch.long))
        model(torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5)))
    for handle in handles:
        handle.remove()
    return hooks.record, seen


@pytest.mark.parametrize("family", INNER_NORM)
def test_inner_norm_memories_are_the_top5_of_what_fc2_reads(family):
    model = tiny_vit(*INNER_NORM[family])
    record, seen = lens_run(model)
    fc1_differs = norm_differs = 0
    with torch.inference_mode():  # the hooked tensors are inference tensors
        for b, block in enumerate(model.blocks):
            mlp = block.mlp
            assert not families.is_identity(mlp.norm)  # the case this test is about
            before_norm = activation_before_norm(mlp, seen["in", b])
            coefficients = mlp.norm(before_norm)
            stored = record.layers[f"mlp_{b}"].mem_top5.long()
            # Every cell (image, token): the five largest coefficients multiplying fc2's columns.
            assert torch.equal(stored, coefficients.topk(5, dim=-1).indices)
            # Coefficients times value vectors plus fc2's bias are the MLP output, and (times the
            # LayerScale folded into the value vectors) the update the lens projects.
            torch.testing.assert_close(coefficients @ mlp.fc2.weight.T + mlp.fc2.bias, seen["out", b])
            values = torch.from_numpy(value_projections.value_matrix(block, "mlp", includes_post_norm=False))
            gamma = families.layer_scale(block, "mlp")
            bias = mlp.fc2.bias if gamma is None else gamma * mlp.fc2.bias
            torch.testing.assert_close(coefficients @ values.T + bias, seen["update", b], rtol=1e-4, atol=1e-5)
            # The readings this replaces would store other memories: fc1 before the activation
            # (plain Mlp only: a gated fc1 is twice as wide) and the activation before the norm.
            if not families.gated_mlp(mlp):
                fc1_differs += (mlp.fc1(seen["in", b]).topk(5, dim=-1).indices != stored).any(-1).sum().item()
            norm_differs += (before_norm.topk(5, dim=-1).indices != stored).any(-1).sum().item()
    assert norm_differs > 0
    assert fc1_differs > 0 or families.gated_mlp(model.blocks[0].mlp)


@pytest.mark.parametrize("family", ["vit_scale_mlp_norm", "eva_swiglu_norm", "beit_mlp_norm"])
def test_inner_norm_value_vectors_are_what_one_coefficient_adds(family):
    """Brute force: one-hot coefficients at fc2's input through a real forward pass; the update
    one coefficient adds is the value vector (so the norm's weight is not folded into it)."""
    model = tiny_vit(*INNER_NORM[family])
    block = model.blocks[-1]
    fc2 = block.mlp.fc2
    width = fc2.in_features
    n_tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    n_images = -(-(width + 1) // n_tokens)
    one_hot = torch.cat([torch.zeros(1, width), torch.eye(width), torch.zeros(n_images * n_tokens - width - 1, width)])
    seen = {}
    handles = [
        fc2.register_forward_pre_hook(lambda m, inputs: (one_hot.view(n_images, n_tokens, width),)),
        lens.residual_update_modules(block)[1].register_forward_hook(
            lambda m, inputs, output: seen.setdefault("update", output)
        ),
    ]
    with torch.inference_mode():
        model(torch.randn(n_images, 3, 32, 32))
    for handle in handles:
        handle.remove()
    rows = seen["update"].reshape(-1, seen["update"].shape[-1])
    expected = (rows[1 : width + 1] - rows[0]).T.numpy()
    values = value_projections.value_matrix(block, "mlp", includes_post_norm=False)
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)
    assert families.memory_modules(block)[1] == (fc2, True)


def test_plain_mlp_memories_keep_the_papers_pre_gelu_fc1_reading():
    model = tiny_vit("vit_base_patch16_224", {})
    assert families.is_identity(model.blocks[0].mlp.norm)
    assert all(families.memory_modules(block)[1] == (block.mlp.fc1, False) for block in model.blocks)
    record, seen = lens_run(model)
    for b, block in enumerate(model.blocks):
        with torch.inference_mode():
            expected = block.mlp.fc1(seen["in", b]).topk(5, dim=-1).indices
        assert torch.equal(record.layers[f"mlp_{b}"].mem_top5.long(), expected)


# ---------------------------------------------------------------------------------------------
# Targets end to end on fake inputs

N_IMAGES = 12  # classes 0..5, two images each; class 6 has no stimuli
LABELS = np.repeat(np.arange(6), 2)


def layer_rows(rng, n_tokens, n_memories):
    activated = distinct_memories(rng, (N_IMAGES, n_tokens), n_memories)
    top5 = distinct_memories(rng, (N_IMAGES, n_tokens), 7)
    table = pa.table(
        {
            "image": np.repeat(np.arange(N_IMAGES, dtype=np.int32), n_tokens),
            "token": np.tile(np.arange(n_tokens, dtype=np.int16), N_IMAGES),
            "rank": np.zeros(N_IMAGES * n_tokens, dtype=np.int16),
            "logit": np.zeros(N_IMAGES * n_tokens, dtype=np.float32),
            "top5": value_projections.fixed_size_lists(top5.astype(np.int16), pa.int16()),
            "mem_top5": value_projections.fixed_size_lists(activated.astype(np.int16), pa.int16()),
        }
    )
    return table, activated, top5[..., 0]


def fake_model(root, name, spec, display_name, rng):
    """Checkpoint-derived value projections plus random extraction tables and predictions."""
    torch.manual_seed(len(name))
    network = building.build_model(spec, name)
    if not spec["class_token"]:
        # Unequal post-norm weights, so that the two GAP value variants differ.
        with torch.no_grad():
            for block in network.blocks:
                block.norm1.weight.uniform_(0.1, 3.0)
                block.norm2.weight.uniform_(0.1, 3.0)
    baseline = building.random_model(spec, f"{name}_value_baseline", memories.value_baseline_seed(0, name))
    cache = root / "memories" / name
    value_projections.write_value_projections(
        network, baseline, cache / "class_memories.parquet", cache / "memory_classes.parquet", {}
    )
    extract = root / "extract" / name
    n_tokens = 5 if spec["class_token"] else 4
    sublayers = {}
    for layer_type, n_memories in [("attn", D), ("mlp", M)]:
        for block in range(2):
            table, activated, top1 = layer_rows(rng, n_tokens, n_memories)
            write_table(table, extract / f"{layer_type}_{block}.parquet")
            sublayers[layer_type, block] = (activated, top1)
    correct = np.arange(N_IMAGES) % 3 != 0
    write_table(
        pa.table(
            {
                "image": np.arange(N_IMAGES, dtype=np.int32),
                "label": LABELS,
                "pred": LABELS,
                "correct": correct,
                "logit": np.zeros(N_IMAGES, np.float32),
            }
        ),
        extract / "predictions.parquet",
    )
    model = {
        "name": name,
        "display_name": display_name,
        **flat_tables(extract),
        "num_blocks": 2,
        "num_classes": 7,
        "class_token": spec["class_token"],
        "token_grid": spec["token_grid"],
        "block_group": 1,
        "stimuli": str(root / "stimuli.parquet"),
        "memories": {
            "classes": str(cache / "class_memories.parquet"),
            "memories": str(cache / "memory_classes.parquet"),
        },
    }
    return model, network, sublayers


@pytest.fixture(scope="module")
def fake_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("memories")
    rng = np.random.default_rng(5)
    stimuli = pd.DataFrame(
        {"image": np.arange(N_IMAGES), "class_index": LABELS, "category": [f"shape {c}, kind" for c in LABELS]}
    )
    write_table(pa.Table.from_pandas(stimuli, preserve_index=False), root / "stimuli.parquet")
    cls = fake_model(root, "tiny_cls", CLS_SPEC, "Tiny ViT", rng)
    gap = fake_model(root, "tiny_gap", GAP_SPEC, "Tiny ViT-GAP", rng)
    return root, [cls, gap]


def outputs(root, name):
    return SimpleNamespace(
        pdf=root / "figures" / f"{name}.pdf",
        png=root / "figures" / f"{name}.png",
        data=root / "tables" / f"{name}.csv",
        csv=root / "tables" / f"{name}.csv",
    )


@pytest.mark.parametrize(
    "target",
    [
        "fig_class_value_agreement",
        "fig_key_value_agreement_rate",
        "fig_agreement_accuracy_diff",
        "fig_memory_compositionality",
        "fig_memory_compare",
    ],
)
def test_figures_write_pdf_png_and_data(fake_inputs, target):
    root, fakes = fake_inputs
    output = outputs(root, target)
    getattr(memory_figures, target)(models=[m for m, _, _ in fakes], output=output, seed=0, **COUNTS)
    assert output.pdf.stat().st_size > 1000 and output.png.stat().st_size > 1000
    data = pd.read_csv(output.data)
    assert len(data) > 0
    # Both value variants of the GAP model, the paper's (no post-norm) plotted; one of the [CLS] model.
    gap = data[data["model"] == "tiny_gap"]
    assert set(gap["includes_post_norm"]) == {True, False}
    assert set(gap.loc[gap["plotted"], "includes_post_norm"]) == {False}
    assert set(data.loc[data["model"] == "tiny_cls", "includes_post_norm"]) == {False}


def test_gap_plots_the_values_without_post_norm(fake_inputs):
    _, fakes = fake_inputs
    _, (model, network, _) = fakes
    data = memory_statistics.class_value_data(model).set_index(["includes_post_norm", "layer_type", "block"])
    head = network.head.weight.detach().numpy()
    for block_index, block in enumerate(network.blocks):
        plain = block.mlp.fc2.weight.detach().numpy()
        scaled = block.norm2.weight.detach().numpy()[:, None] * plain
        for includes_post_norm, values in [(False, plain), (True, scaled)]:
            cosines = [
                [c @ v / np.linalg.norm(c) / np.linalg.norm(v) for v in values.T] for c in head
            ]  # classes × memories
            row = data.loc[(includes_post_norm, "mlp", block_index + 1)]
            assert row["plotted"] == (not includes_post_norm)
            assert row["med"] == pytest.approx(np.median(np.max(cosines, axis=1)), rel=1e-5)
    plotted = data[data["plotted"]]["med"].to_numpy()
    assert not np.allclose(plotted, data[~data["plotted"]]["med"].to_numpy())


def test_compositionality_target_matches_brute_force(fake_inputs):
    _, fakes = fake_inputs
    (model, network, sublayers), _ = fakes
    data = memory_statistics.compositionality_data(model).set_index(["layer_type", "block"])
    head = network.head.weight.detach().numpy()
    for (layer_type, block), (activated, top1) in sublayers.items():
        linear = network.blocks[block].mlp.fc2 if layer_type == "mlp" else network.blocks[block].attn.proj
        projections = head @ linear.weight.detach().numpy()
        kappa = projections.argmax(axis=0)
        expected = np.mean(
            [[any(kappa[m] == top1[i, t] for m in activated[i, t]) for t in range(5)] for i in range(N_IMAGES)]
        )
        assert data.loc[(layer_type, block + 1), "pct_tokens"] == pytest.approx(100 * expected)


def test_agreement_rate_target_matches_brute_force(fake_inputs):
    _, fakes = fake_inputs
    (model, network, sublayers), _ = fakes
    data = memory_statistics.agreement_rate_data(model, seed=0).set_index(["layer_type", "block", "class_index"])
    head = network.head.weight.detach().numpy()
    activated, _ = sublayers["mlp", 1]
    tops = np.argsort(-(head @ network.blocks[1].mlp.fc2.weight.detach().numpy()), axis=1)[:, :5]
    for c in range(6):
        hits = [any(m in tops[c] for m in activated[i, t]) for i in np.flatnonzero(LABELS == c) for t in range(5)]
        assert data.loc[("mlp", 2, c), "rate"] == pytest.approx(100 * np.mean(hits))


def test_accuracy_difference_is_seeded_and_matches_the_definition(fake_inputs):
    _, fakes = fake_inputs
    (model, network, sublayers), _ = fakes
    first = memory_statistics.accuracy_difference_data(model, seed=0, n_permutations=COUNTS["n_permutations"])
    again = memory_statistics.accuracy_difference_data(model, seed=0, n_permutations=COUNTS["n_permutations"])
    pd.testing.assert_frame_equal(first, again)
    other = memory_statistics.accuracy_difference_data(model, seed=1, n_permutations=COUNTS["n_permutations"])
    np.testing.assert_array_equal(first["diff"], other["diff"])
    assert not np.array_equal(first["p_value_corrected"], other["p_value_corrected"])
    # diff = 100·mean(agree | correct) − 100·mean(agree | incorrect) of the [CLS] token.
    head = network.head.weight.detach().numpy()
    activated, _ = sublayers["attn", 0]
    tops = np.argsort(-(head @ network.blocks[0].attn.proj.weight.detach().numpy()), axis=1)[:, :5]
    cls_agree = np.array([np.isin(activated[i, 0], tops[LABELS[i]]).any() for i in range(N_IMAGES)])
    correct = np.arange(N_IMAGES) % 3 != 0
    row = first[(first["layer_type"] == "attn") & (first["block"] == 1)].iloc[0]
    assert row["diff"] == pytest.approx(100 * (cls_agree[correct].mean() - cls_agree[~correct].mean()))
    assert row["p_value_corrected"] >= 1 / 301
    assert set(first["token_0"]) == {"cls"}


def test_gap_accuracy_difference_uses_token_0_an_image_token(fake_inputs):
    _, fakes = fake_inputs
    _, (model, network, sublayers) = fakes
    data = memory_statistics.accuracy_difference_data(model, seed=0, n_permutations=COUNTS["n_permutations"])
    assert set(data["token_0"]) == {"image"}
    head = network.head.weight.detach().numpy()
    activated, _ = sublayers["mlp", 1]  # 4 image tokens, no [CLS]
    tops = np.argsort(-(head @ network.blocks[1].mlp.fc2.weight.detach().numpy()), axis=1)[:, :5]
    token_0_agree = np.array([np.isin(activated[i, 0], tops[LABELS[i]]).any() for i in range(N_IMAGES)])
    correct = np.arange(N_IMAGES) % 3 != 0
    row = data[(data["layer_type"] == "mlp") & (data["block"] == 2) & data["plotted"]].iloc[0]
    assert not row["includes_post_norm"]
    assert row["diff"] == pytest.approx(100 * (token_0_agree[correct].mean() - token_0_agree[~correct].mean()))


def test_value_vector_table_names_the_top_classes(fake_inputs):
    root, fakes = fake_inputs
    output = outputs(root, "tab_value_vector_classes")
    memory_figures.tab_value_vector_classes([m for m, _, _ in fakes], output)
    table = pd.read_csv(output.csv)
    cls = table[table["model"] == "tiny_cls"]
    assert len(cls) == 25 and set(cls["block_index"]) == {0}  # L-2 of 2 blocks, 5 memories × 5 classes
    (_, network, _), _ = fakes
    projections = network.head.weight.detach().numpy() @ value_projections.value_matrix(network.blocks[0], "mlp", False)
    expected_memories = np.argsort(-projections.max(axis=0), kind="stable")[:5]
    np.testing.assert_array_equal(cls["memory"].unique(), expected_memories)
    first = cls[cls["memory"] == expected_memories[0]]
    np.testing.assert_array_equal(
        first["class_index"], np.argsort(-projections[:, expected_memories[0]], kind="stable")[:5]
    )
    named = first.set_index("class_index")
    for c in first["class_index"]:
        assert named.loc[c, "in_stimuli"] == (c < 6)
        assert (named.loc[c, "category"] == f"shape {c}, kind") if c < 6 else pd.isna(named.loc[c, "category"])
    # Chosen memories per model, and a clear error for one that does not exist.
    memory_figures.tab_value_vector_classes([fakes[0][0]], output, block_index=1, neurons={"tiny_cls": [3]})
    assert pd.read_csv(output.csv)["memory"].unique().tolist() == [3]
    with pytest.raises(errors.InputError, match="do not exist"):
        memory_figures.tab_value_vector_classes([fakes[0][0]], output, neurons=[M])
