"""Linear probes: streaming ridge vs scikit-learn, ranks vs brute force, the probe split."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from sklearn.linear_model import Ridge

from class_embedding.analyses import probes
from class_embedding.errors import InputError


def sklearn_ridge(x, labels, num_classes, alpha):
    targets = -np.ones((len(labels), num_classes))
    targets[np.arange(len(labels)), labels] = 1
    return Ridge(alpha=alpha, fit_intercept=True).fit(x, targets)


@pytest.mark.parametrize("batches", [1, 4])
def test_streaming_ridge_equals_sklearn(batches):
    rng = np.random.default_rng(0)
    n_probes, n, dim, num_classes, alpha = 3, 60, 12, 5, 1.0
    # Off-centre features with unequal scales: the intercept and the centring matter.
    x = rng.normal(size=(n_probes, n, dim)) * rng.uniform(0.2, 3, size=dim) + rng.normal(4, 2, size=dim)
    labels = rng.integers(0, num_classes - 1, size=n)  # the last class never occurs
    accumulator = probes.RidgeAccumulator(n_probes, dim, num_classes)
    for part in np.array_split(np.arange(n), batches):
        accumulator.update(torch.from_numpy(x[:, part]), torch.from_numpy(labels[part]))
    weights, intercepts = accumulator.solve(alpha)
    x_test = rng.normal(size=(n_probes, 20, dim)) * 2 + 3
    for p in range(n_probes):
        reference = sklearn_ridge(x[p], labels, num_classes, alpha)
        np.testing.assert_allclose(weights[p].numpy(), reference.coef_.T, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(intercepts[p].numpy(), reference.intercept_, atol=1e-4, rtol=1e-4)
        predicted = x_test[p] @ weights[p].numpy() + intercepts[p].numpy()
        np.testing.assert_allclose(predicted, reference.predict(x_test[p]), atol=1e-4, rtol=1e-4)


def brute_force_rank(scores, target):
    order = np.argsort(-scores, kind="stable")
    return int(np.nonzero(order == target)[0][0])


def test_probe_ranks_equal_argsort():
    rng = np.random.default_rng(1)
    features = torch.from_numpy(rng.normal(size=(2, 9, 4)))
    weights = torch.from_numpy(rng.normal(size=(2, 4, 6)))
    intercepts = torch.from_numpy(rng.normal(size=(2, 6)))
    weights[1, :, 3] = weights[1, :, 1]  # exact ties between classes 1 and 3
    intercepts[1, 3] = intercepts[1, 1]
    targets = torch.from_numpy(rng.integers(0, 6, size=9))
    targets[:3] = torch.tensor([1, 3, 3])
    ranks = probes.probe_ranks(features, weights, intercepts, targets)
    assert ranks.shape == (9, 2) and ranks.dtype == torch.int16
    for p in range(2):
        scores = (features[p] @ weights[p] + intercepts[p]).numpy()
        for i in range(9):
            assert ranks[i, p] == brute_force_rank(scores[i], int(targets[i]))


def tiny_vit(class_token: bool):
    torch.manual_seed(0)
    arch = "vit_base_patch16_224" if class_token else "vit_base_patch16_rpn_224"
    kwargs = dict(img_size=16, patch_size=8, embed_dim=8, depth=3, num_heads=2, num_classes=4)
    if class_token:
        kwargs["init_values"] = 0.5  # a LayerScale that is not the identity
    return timm.create_model(arch, pretrained=False, **kwargs).eval()


def all_states(model, images):
    """Every layer's states (T, B, D) from a plain forward with hooks, kept whole."""
    kept = {}
    blocks = list(range(len(model.blocks)))
    states = probes.LayerStates(model, blocks, lambda name, s: kept.__setitem__(name, s.clone()))
    with states, torch.no_grad():
        states.run(images)
    return kept


@pytest.mark.parametrize("class_token", [True, False])
@pytest.mark.parametrize("memory_bytes", [1e12, 1.0])  # all blocks at once; one block per chunk
def test_fit_and_score_equals_per_probe_sklearn(class_token, memory_bytes):
    model = tiny_vit(class_token)
    generator = torch.Generator().manual_seed(2)
    probe_images = torch.randn(24, 3, 16, 16, generator=generator)
    probe_labels = torch.arange(24) % 4
    stimuli = torch.randn(10, 3, 16, 16, generator=generator)
    stimulus_labels = torch.randint(0, 4, (10,), generator=generator)

    def batches(x, y):
        return [(x[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)]

    result = probes.fit_and_score(
        model,
        batches(probe_images, probe_labels),
        batches(stimuli, stimulus_labels),
        alpha=0.5,
        memory_bytes=memory_bytes,
    )
    assert result.n_chunks == (3 if memory_bytes == 1.0 else 1)
    assert result.n_probe_images == 24
    n_tokens = 4 + (1 if class_token else 0)
    assert list(result.ranks) == [f"{k}_{b}" for k in ("hs", "attn", "mlp") for b in range(3)]
    train, test = all_states(model, probe_images), all_states(model, stimuli)
    # The sublayer states are what the block adds to the residual stream.
    block0 = model.blocks[0]
    with torch.no_grad():
        x = model._pos_embed(model.patch_embed(stimuli))
        x = model.norm_pre(model.patch_drop(x))
        after_attn = x + test["attn_0"].transpose(0, 1)
        np.testing.assert_allclose((after_attn + test["mlp_0"].transpose(0, 1)).numpy(), block0(x).numpy(), atol=1e-5)
    for name, ranks in result.ranks.items():
        assert ranks.shape == (10, n_tokens)
        for token in range(n_tokens):
            reference = sklearn_ridge(train[name][token].double().numpy(), probe_labels.numpy(), 4, 0.5)
            scores = reference.predict(test[name][token].double().numpy())
            expected = [brute_force_rank(scores[i], int(stimulus_labels[i])) for i in range(10)]
            assert ranks[:, token].tolist() == expected, (name, token)


def test_block_chunks_respect_the_budget():
    per_layer = probes.RidgeAccumulator.nbytes(50, 768, 1000)
    assert probes.block_chunks(12, 50, 768, 1000, 1e15) == [list(range(12))]
    chunks = probes.block_chunks(12, 50, 768, 1000, 8e9)
    assert [b for c in chunks for b in c] == list(range(12))
    assert max(len(c) for c in chunks) * 3 * per_layer + per_layer <= 8e9
    assert probes.block_chunks(2, 50, 768, 1000, 0) == [[0], [1]]


def test_tables():
    ranks = {
        "hs_0": np.array([[0, 1], [0, 0], [2, 0]], np.int16),
        "attn_0": np.array([[1, 0], [0, 3], [0, 0]], np.int16),
    }
    table = probes.ranks_table(np.array([5, 6, 7]), ranks).to_pandas()
    assert len(table) == 12
    row = table[(table.layer == "hs_0") & (table.image == 7) & (table.token == 0)]
    assert row["rank"].tolist() == [2]
    accuracy = probes.accuracy_table(ranks).to_pandas().set_index(["layer", "token"])
    assert accuracy.loc[("hs_0", 0), "accuracy"] == pytest.approx(2 / 3)
    assert accuracy.loc[("attn_0", 1), "accuracy"] == pytest.approx(2 / 3)
    assert accuracy.loc[("attn_0", 1), "kind"] == "attn" and accuracy.loc[("attn_0", 1), "block"] == 0


# ---------------------------------------------------------------------------------------------
# Probe split


def write_split(root, counts):
    """An ImageNet-S-like test split with ``counts[wnid]`` images per class, plus the mapping."""
    split = root / "ImageNetS919" / "test"
    wnids = sorted(counts)
    for wnid in wnids:
        (split / wnid).mkdir(parents=True)
        for k in range(counts[wnid]):
            Image.new("RGB", (4, 4)).save(split / wnid / f"ILSVRC2012_val_{(k * 7919) % 1000:08d}.JPEG")
    mapping = root / "ImageNetS919" / "LOC_synset_mapping.txt"
    mapping.write_text("".join(f"{w} category {i}\n" for i, w in enumerate(["n00000009", *wnids])))
    return split, mapping


def test_probe_split_is_deterministic_with_n_per_class(tmp_path):
    split, mapping = write_split(tmp_path, {"n00000002": 5, "n00000001": 4, "n00000003": 6})
    first = probes.select_probe_stimuli(split, mapping, 3)
    again = probes.select_probe_stimuli(split, mapping, 3)
    assert first.equals(again)
    frame = first.to_pandas()
    assert frame.columns.tolist() == ["image", "wnid", "class_index", "category", "file", "img_index"]
    assert frame.groupby("wnid").size().to_dict() == {"n00000001": 3, "n00000002": 3, "n00000003": 3}
    assert frame["wnid"].tolist() == sorted(frame["wnid"])  # class-major
    assert frame["image"].tolist() == list(range(9))
    files = frame[frame.wnid == "n00000002"]["file"].tolist()
    assert files == sorted(files) and all(f.startswith("test/n00000002/") for f in files)
    assert frame[frame.wnid == "n00000001"]["class_index"].tolist() == [1, 1, 1]
    excluded = probes.select_probe_stimuli(split, mapping, 3, exclude_wnids=["n00000003"]).to_pandas()
    assert set(excluded["wnid"]) == {"n00000001", "n00000002"}


def test_short_class_is_named(tmp_path):
    split, mapping = write_split(tmp_path, {"n00000001": 4, "n00000002": 2, "n00000003": 4})
    with pytest.raises(InputError, match=r"n00000002 \(2 images\).*probing.images_per_class"):
        probes.select_probe_stimuli(split, mapping, 3, short_classes="error")
    # The paper's rule skips it; an excluded short class is no error.
    skipped = probes.select_probe_stimuli(split, mapping, 3).to_pandas()
    assert set(skipped["wnid"]) == {"n00000001", "n00000003"}
    probes.select_probe_stimuli(split, mapping, 3, exclude_wnids=["n00000002"], short_classes="error")
    # When no class is long enough, skipping cannot help: always an error naming them.
    with pytest.raises(InputError, match="n00000001 \\(4 images\\)"):
        probes.select_probe_stimuli(split, mapping, 5)


# ---------------------------------------------------------------------------------------------
# Figures' numbers


def test_paper_auc_and_perturbation_curves(tmp_path):
    import pyarrow as pa

    from class_embedding import tables
    from class_embedding.analyses import explain_auc
    from class_embedding.figures import probe_figures

    # docs/method.md §4.13: Σ curve / (max · N); N = 4 image tokens, kept 3..1; the unperturbed n = 4 is left out.
    kept = np.array([4, 3, 2, 1])
    assert explain_auc.paper_auc(kept, np.array([0.9, 0.8, 0.4, 0.2]), 4) == pytest.approx(1.4 / (0.8 * 4))
    # Only some n evaluated: their mean stands for every n.
    assert explain_auc.paper_auc(np.array([3, 1]), np.array([0.8, 0.2]), 4) == pytest.approx(0.5 * 3 / (0.8 * 4))
    rows = []
    for method, repeats in (("grads", 1), ("grads_chefer", 1), ("linear_probe", 1), ("random", 2)):
        for repeat in range(repeats):
            for direction in ("negative", "positive"):
                for kept in (1, 2, 3, 4):
                    value = kept / 4 + (0.1 if direction == "negative" else 0) + 0.2 * repeat
                    rows.append((method, repeat, direction, kept, value))
    method, repeat, direction, kept, accuracy = zip(*rows)
    path = tmp_path / "perturbation_curves.parquet"
    tables.write_table(
        pa.table(
            {
                "method": list(method),
                "repeat": pa.array(repeat, pa.int16()),
                "direction": list(direction),
                "kept": pa.array(kept, pa.int16()),
                "accuracy": pa.array(accuracy, pa.float64()),
            }
        ),
        path,
    )
    data = probe_figures.perturbation_data({"name": "m", "token_grid": 2}, path)
    neg = data[data["curve"] == "NEG cls-based removal"]
    assert neg["kept"].tolist() == [4, 3, 2, 1]
    assert neg["removed_percent"].tolist() == [0.0, 25.0, 50.0, 75.0]
    assert neg["accuracy"].tolist() == pytest.approx([1.1, 0.85, 0.6, 0.35])
    assert neg["auc_paper"].iloc[0] == pytest.approx(1.8 / (0.85 * 4))
    random = data[data["curve"] == "random removal"]  # mean over repeats and directions
    assert random["accuracy"].tolist() == pytest.approx([1.15, 0.75 + 0.15, 0.5 + 0.15, 0.25 + 0.15])
