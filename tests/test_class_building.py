"""Class building metrics (docs/method.md §4.5–§4.8) and their targets, on hand-made arrays.

Every expected number below is worked out by hand in the comments; the permutation test is also
checked against a plain loop over permutations.
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from result_tables import flat_tables

from class_embedding.analyses import class_building, class_building_statistics, statistics
from class_embedding.analyses.token_labels import read_token_labels
from class_embedding.data import imagenet_s
from class_embedding.errors import InputError
from class_embedding.extraction import reader
from class_embedding.figures import class_building_figures
from class_embedding.models.tokens import TokenLayout
from class_embedding.tables import write_table

# The functions under test read only the prefix from a layout; hand-made arrays need no square grid.
CLS_ONLY = TokenLayout(token_grid=2, class_token=True)
GAP = TokenLayout(token_grid=2, class_token=False)

# ---------------------------------------------------------------------------------------------
# Change rates and residual composition

# 2 images x ([CLS] + 4 image tokens). Block input hs_0 and the sublayer outputs of block 1.
H0 = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=float)
A1 = np.array([[1, -1, 1, -1, 2], [2, 2, 2, 0, 0]], dtype=float)  # Δ = [[1,-1,1,-1,2],[1,1,1,-1,-1]]
M1 = H0 - 1
M1[1, 1] = 5  # Δ_mlp = -1 everywhere but image 1, token 1


def test_sublayer_change_rates_with_class_token():
    rates = class_building.sublayer_change_rates(H0, {"attn": A1, "mlp": M1}, layout=CLS_ONLY)
    assert rates == {
        "attn - [CLS]": 1.0,  # Δ of token 0: 1, 1
        "attn - Image": 0.5,  # -1, 1, -1, 2, 1, 1, -1, -1: four of eight rise
        "mlp - [CLS]": 0.0,
        "mlp - Image": 0.125,  # only image 1, token 1
    }


def test_sublayer_change_rates_gap_uses_all_tokens():
    rates = class_building.sublayer_change_rates(H0, {"attn": A1, "mlp": M1}, layout=GAP)
    # All ten tokens: attn rises at 6 (1, 1, 2 and 1, 1, 1); mlp at 1.
    assert rates == {"attn - Image": 0.6, "mlp - Image": 0.1}


def test_change_rate_is_strict():
    rates = class_building.sublayer_change_rates(H0, {"attn": H0}, layout=CLS_ONLY)
    assert rates == {"attn - [CLS]": 0.0, "attn - Image": 0.0}


# Top-1 classes of 10 tokens (2 images x 5) for the block output and the three references.
OUT = np.zeros((2, 5), int)
PREV = np.array([[0, 0, 0, 1, 1], [1, 1, 1, 1, 1]])  # matches at tokens 0, 1, 2
ATTN = np.array([[0, 1, 1, 0, 1], [1, 1, 1, 1, 0]])  # matches at 0, 3, 9 (flat)
MLP = np.array([[1, 0, 1, 1, 1], [0, 1, 1, 1, 1]])  # matches at 1, 5


def test_residual_composition_bug_and_corrected():
    composition = class_building.residual_composition(OUT, PREV, ATTN, MLP)
    assert composition["prev"] == pytest.approx(30.0)
    assert composition["attn"] == pytest.approx(30.0)
    assert composition["mlp"] == pytest.approx(20.0)
    # Differs from prev (flat 3..9) and from attn (1, 2, 4..8): 4, 5, 6, 7, 8.
    assert composition["comp"] == pytest.approx(50.0)
    # ... and from mlp too: token 5 matches the MLP, so 4, 6, 7, 8.
    assert composition["comp_corrected"] == pytest.approx(40.0)


def test_composition_brute_force():
    rng = np.random.default_rng(7)
    out, prev, attn, mlp = rng.integers(0, 3, size=(4, 6, 9))
    composition = class_building.residual_composition(out, prev, attn, mlp)
    tokens = list(zip(out.ravel(), prev.ravel(), attn.ravel(), mlp.ravel()))
    share = lambda condition: 100 * sum(map(condition, tokens)) / len(tokens)  # noqa: E731
    assert composition["prev"] == pytest.approx(share(lambda t: t[0] == t[1]))
    assert composition["mlp"] == pytest.approx(share(lambda t: t[0] == t[3]))
    assert composition["comp"] == pytest.approx(share(lambda t: t[0] != t[1] and t[0] != t[2]))
    assert composition["comp_corrected"] == pytest.approx(share(lambda t: t[0] not in t[1:]))


# ---------------------------------------------------------------------------------------------
# Token labels


def test_label_grid_puts_image_token_t_at_position_t_plus_one_with_class_token():
    is_class = np.array([[False, True, True], [True, False, False]])
    grid = class_building.label_grid(is_class, TokenLayout(token_grid=(1, 3), class_token=True))
    np.testing.assert_array_equal(grid, [[-1, 0, 1, 1], [-1, 1, 0, 0]])
    assert grid.dtype == np.int8
    values = np.arange(8).reshape(2, 4)
    selected, selected_class = class_building.labelled_values(values, grid)
    np.testing.assert_array_equal(selected, [1, 2, 3, 5, 6, 7])
    np.testing.assert_array_equal(selected_class, [False, True, True, True, False, False])


def test_label_grid_without_class_token():
    grid = class_building.label_grid(np.array([[1, 0], [0, 1]]), TokenLayout(token_grid=(1, 2), class_token=False))
    np.testing.assert_array_equal(grid, [[1, 0], [0, 1]])


# A 2-image 2x3 grid written as the token_labels rule writes it: with a 2x3-pixel mask each token
# is its own pixel. Image 0: class tokens 0, 4, 5; image 1: class tokens 1, 2.
GRID_2X3 = TokenLayout(token_grid=(2, 3), class_token=True)
MASKS_2X3 = [np.array([[1, 0, 0], [0, 1, 1]], bool), np.array([[0, 1, 1], [0, 0, 0]], bool)]
IS_CLASS_2X3 = [[True, False, False, False, True, True], [False, True, True, False, False, False]]


def labels_2x3(path, rows=None, images=(0, 1)):
    """The token-label table of MASKS_2X3 as ``images``, its rows shuffled (or ``rows`` of them)."""
    table = imagenet_s.token_label_rows(np.array(images), MASKS_2X3, GRID_2X3.grid)
    order = np.random.default_rng(0).permutation(table.num_rows)
    write_table(table.take(order if rows is None else rows), path)
    return path


def test_read_token_labels_of_a_2x3_grid_by_hand(tmp_path):
    path = labels_2x3(tmp_path / "token_labels_g2x3.parquet")
    is_class = read_token_labels(path, GRID_2X3)
    assert is_class.dtype == bool
    np.testing.assert_array_equal(is_class, IS_CLASS_2X3)
    # Requested images in the order asked; other images of the table are left out.
    np.testing.assert_array_equal(read_token_labels(path, GRID_2X3, np.array([1, 0])), IS_CLASS_2X3[::-1])
    np.testing.assert_array_equal(read_token_labels(path, GRID_2X3, np.array([1])), IS_CLASS_2X3[1:])
    # Stimulus ids need not start at 0 when images are named.
    path = labels_2x3(tmp_path / "ids_5_7.parquet", images=(5, 7))
    np.testing.assert_array_equal(read_token_labels(path, GRID_2X3, np.array([7, 5])), IS_CLASS_2X3[::-1])


def test_read_token_labels_refuses_an_incomplete_table(tmp_path):
    complete = np.arange(12)
    # Image 1 lacks its token 4 (row 6 + 4).
    path = labels_2x3(tmp_path / "token_labels_g2x3.parquet", np.delete(complete, 10))
    with pytest.raises(
        InputError, match=r"token_labels_g2x3.parquet: 1 image tokens unlabelled, e.g. token 4 of image 1"
    ):
        read_token_labels(path, GRID_2X3)
    # Image 1 missing: asked for, or a gap in the ids 0..n-1 of every image.
    path = labels_2x3(tmp_path / "one_image.parquet", complete[:6])
    with pytest.raises(InputError, match=r"one_image.parquet: it has no token labels of images \[1\]"):
        read_token_labels(path, GRID_2X3, np.array([0, 1]))
    path = labels_2x3(tmp_path / "gap.parquet", images=(0, 2))
    with pytest.raises(
        InputError, match=r"no token labels of images \[1\] \(2 images with ids up to 2, ids must be 0..n-1\)"
    ):
        read_token_labels(path, GRID_2X3)
    # Token 0 of image 0 twice, its token 1 never.
    path = labels_2x3(tmp_path / "twice.parquet", np.r_[0, 0, 2:12])
    with pytest.raises(InputError, match="image 0 has token 0 more than once"):
        read_token_labels(path, GRID_2X3)
    # A complete 2x3 table for a model of a 3x3 grid, and for one of a 2x2 grid.
    path = labels_2x3(tmp_path / "complete.parquet")
    for grid in (3, 2):
        with pytest.raises(InputError, match="the label grid does not match the token grid") as refused:
            read_token_labels(path, TokenLayout(token_grid=grid, class_token=True), model="vit")
        assert f"complete {grid}x{grid} grid of {grid * grid} image tokens" in str(refused.value)
        assert "vit's token grid" in str(refused.value) and "Rerun rule token_labels" in str(refused.value)


def test_read_token_labels_refuses_unknown_labels(tmp_path):
    table = imagenet_s.token_label_rows(np.array([0, 1]), MASKS_2X3, GRID_2X3.grid)
    label = pa.array(["class"] * 11 + ["ignore"]).dictionary_encode()
    write_table(table.set_column(2, "label", label), tmp_path / "labels.parquet")
    with pytest.raises(InputError, match="image 1 has label 'ignore' at token 5"):
        read_token_labels(tmp_path / "labels.parquet", GRID_2X3)


# ---------------------------------------------------------------------------------------------
# Permutation test


def loop_permutation_test(values, is_class, n_permutations, rng):
    """The paper's test written plainly: relabel, recompute the difference, count."""
    values, is_class = np.asarray(values, float), np.asarray(is_class, bool)
    observed = values[is_class].mean() - values[~is_class].mean()
    permuted = []
    for _ in range(n_permutations):
        labels = np.zeros(values.size, bool)
        labels[rng.choice(values.size, is_class.sum(), replace=False, shuffle=False)] = True
        permuted.append(values[labels].mean() - values[~labels].mean())
    permuted = np.array(permuted)
    return observed, np.mean(observed < permuted), (1 + np.sum(permuted >= observed)) / (n_permutations + 1)


def test_permutation_test_equals_a_plain_loop(monkeypatch):
    rng = np.random.default_rng(3)
    is_class = rng.random(40) < 0.4
    values = rng.normal(size=40) + 0.3 * is_class
    # Force several chunks of relabellings.
    monkeypatch.setattr(statistics, "MASK_CHUNK_ELEMENTS", 3 * 40)
    result = statistics.permutation_test(values, is_class, 50, np.random.default_rng(11))
    observed, p_value, p_corrected = loop_permutation_test(values, is_class, 50, np.random.default_rng(11))
    assert result["diff"] == pytest.approx(observed)
    assert result["p_value"] == p_value
    assert result["p_value_corrected"] == p_corrected
    assert 0 < p_value < 1  # the case is not trivial


def test_permutation_test_rows_are_tested_like_separate_calls():
    rng = np.random.default_rng(5)
    values = rng.normal(size=(3, 30))
    is_class = np.arange(30) < 12
    stacked = statistics.permutation_test(values, is_class, 40, np.random.default_rng(2))
    for row in range(3):
        single = statistics.permutation_test(values[row], is_class, 40, np.random.default_rng(2))
        assert stacked["p_value"][row] == single["p_value"]
        np.testing.assert_allclose(stacked["permuted"][row], single["permuted"])


def test_permutation_test_is_reproducible_for_a_seed():
    values = np.random.default_rng(0).normal(size=25)
    is_class = np.arange(25) % 3 == 0
    first = statistics.permutation_test(values, is_class, 30, statistics.permutation_rng(4, "m", "ci"))
    second = statistics.permutation_test(values, is_class, 30, statistics.permutation_rng(4, "m", "ci"))
    np.testing.assert_array_equal(first["permuted"], second["permuted"])
    other = statistics.permutation_test(values, is_class, 30, statistics.permutation_rng(5, "m", "ci"))
    assert not np.array_equal(first["permuted"], other["permuted"])


def test_permutation_test_obvious_difference_and_degenerate_cases():
    is_class = np.arange(20) < 8
    obvious = np.where(is_class, 10.0, 0.0) + np.linspace(0, 1, 20)
    result = statistics.permutation_test(obvious, is_class, 100, np.random.default_rng(0))
    assert result["p_value"] == 0.0
    assert result["p_value_corrected"] == pytest.approx(1 / 101)
    reversed_ = statistics.permutation_test(-obvious, is_class, 100, np.random.default_rng(0))
    assert reversed_["p_value"] == 1.0
    # No class-labelled token: no test.
    empty = statistics.permutation_test(obvious, np.zeros(20, bool), 10, np.random.default_rng(0))
    assert np.isnan(empty["diff"]) and np.isnan(empty["p_value"])


# ---------------------------------------------------------------------------------------------
# The three targets end to end on fake extraction tables

C = 4


def write_layer(directory, name, logits, ranks=None, top1=None, shuffle=False):
    """One extraction table: rank, logit and a top5 whose first entry is ``top1``."""
    n_images, n_tokens = logits.shape
    ranks = np.zeros(logits.shape, int) if ranks is None else np.asarray(ranks)
    top1 = np.zeros(logits.shape, int) if top1 is None else np.asarray(top1)
    order = np.random.default_rng(1).permutation(logits.size) if shuffle else np.arange(logits.size)
    top5 = (top1.reshape(-1, 1) + np.arange(5)) % C  # distinct classes, top1 first
    table = pa.table(
        {
            "image": pa.array(np.repeat(np.arange(n_images), n_tokens)[order], pa.int32()),
            "token": pa.array(np.tile(np.arange(n_tokens), n_images)[order], pa.int16()),
            "rank": pa.array(np.ravel(ranks)[order], pa.int16()),
            "logit": pa.array(np.ravel(logits)[order], pa.float32()),
            "top5": pa.FixedSizeListArray.from_arrays(pa.array(top5[order].ravel(), pa.int16()), 5),
        }
    )
    write_table(table, directory / f"{name}.parquet")


def write_model(directory, hs, attn, mlp):
    """Layers given as {block: (logits, ranks, top1)}; missing entries are zeros."""
    directory.mkdir()
    for kind, layers in (("hs", hs), ("attn", attn), ("mlp", mlp)):
        for block, (logits, ranks, top1) in layers.items():
            write_layer(directory, f"{kind}_{block}", logits, ranks, top1, shuffle=block == 1)


# Labels of 2 images x 4 image tokens (2 x 2 grid): image 0 class, context, class, context;
# image 1 class, class, context, context.
LABELS = np.array([["class", "context", "class", "context"], ["class", "class", "context", "context"]])

# CLS model, 3 blocks. hs ranks: block 0 separates perfectly (class rank 0 -> CI 1, context
# rank 3 -> CI 0.25; [CLS] rank 3, so a missing +1 offset would change the answer), block 1 is
# flat, block 2 is reversed.
CLS_RANKS = [
    [[3, 0, 3, 0, 3], [3, 0, 0, 3, 3]],
    np.full((2, 5), 2),
    [[0, 3, 0, 3, 0], [0, 3, 3, 0, 0]],
]
Z = np.zeros((2, 5))
ALL_ZERO = np.zeros((2, 5), int)
CLS_LAYERS = {
    # block: (logits, ranks, top1)
    "hs": {0: (H0, CLS_RANKS[0], PREV), 1: (H0 + 1, CLS_RANKS[1], OUT), 2: (H0 + 1, CLS_RANKS[2], OUT)},
    "attn": {0: (Z, None, None), 1: (A1, None, ATTN), 2: (H0 + 1, None, OUT)},
    "mlp": {0: (Z, None, None), 1: (M1, None, MLP), 2: (H0 + 2, None, OUT)},
}
# GAP model, 2 blocks, 4 tokens, all image tokens.
GAP_LAYERS = {
    "hs": {0: (np.zeros((2, 4)), [[0, 3, 0, 3], [0, 0, 3, 3]], None), 1: (np.zeros((2, 4)), np.ones((2, 4)), None)},
    "attn": {0: (np.zeros((2, 4)), None, None), 1: ([[1, 1, -1, 0], [1, 0, 0, -2]], None, None)},
    "mlp": {0: (np.zeros((2, 4)), None, None), 1: ([[1, 1, 1, 1], [1, 1, 1, -1]], None, None)},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("class_building")
    labels = pa.table(
        {
            "image": pa.array(np.repeat([1, 0], 4), pa.int32()),  # image 1 first: joins by id
            "token": pa.array(np.tile(np.arange(4), 2), pa.int16()),
            "label": pa.array(np.concatenate([LABELS[1], LABELS[0]])).dictionary_encode(),
            "class_fraction": pa.array(np.zeros(8), pa.float32()),
        }
    )
    write_table(labels, root / "token_labels_g2.parquet")
    common = {"num_classes": C, "token_grid": 2, "token_labels": str(root / "token_labels_g2.parquet")}
    result = []
    for name, layers, class_token in (("cls_model", CLS_LAYERS, True), ("gap_model", GAP_LAYERS, False)):
        layers = {
            kind: {b: tuple(None if v is None else np.asarray(v) for v in entry) for b, entry in blocks.items()}
            for kind, blocks in layers.items()
        }
        write_model(root / name, layers["hs"], layers["attn"], layers["mlp"])
        result.append(
            {
                **common,
                "name": name,
                "display_name": name.upper(),
                "class_token": class_token,
                "token_grid": 2,  # the layout's prefix is what the figures read
                "num_blocks": len(layers["hs"]),
                **flat_tables(root / name),
            }
        )
    return result


def run_figure(function, model, tmp_path, **kwargs):
    output = SimpleNamespace(pdf=tmp_path / "f.pdf", png=tmp_path / "f.png", data=tmp_path / "f.csv")
    function(model=model, output=output, seed=0, **kwargs)
    assert output.pdf.stat().st_size > 0 and output.png.stat().st_size > 0
    assert not list(tmp_path.glob(".*partial"))
    return pd.read_csv(output.data)


def test_load_top1_reorders_rows(models):
    np.testing.assert_array_equal(reader.load_top1(models[0]["layers"], 1, "attn"), ATTN)


def test_fig_class_building_cls(models, tmp_path):
    data = run_figure(class_building_figures.fig_class_building, models[0], tmp_path)
    values = data.set_index(["block", "series"])["value"]
    # Block 2 (0-based 1): the hand-made rates and composition above.
    assert values[2, "attn - [CLS]"] == 1.0 and values[2, "attn - Image"] == 0.5
    assert values[2, "mlp - [CLS]"] == 0.0 and values[2, "mlp - Image"] == 0.125
    assert values[2, "comp"] == pytest.approx(50.0) and values[2, "comp_corrected"] == pytest.approx(40.0)
    assert values[2, "prev"] == pytest.approx(30.0) and values[2, "mlp"] == pytest.approx(20.0)
    # Block 3: attn equals its input (no rise), mlp = input + 1; every top-1 is class 0.
    assert values[3, "attn - Image"] == 0.0 and values[3, "mlp - [CLS]"] == 1.0
    assert values[3, "prev"] == 100.0 and values[3, "comp"] == 0.0
    assert set(data["block"]) == {2, 3}


def test_fig_class_building_gap(models, tmp_path):
    data = run_figure(class_building_figures.fig_class_building, models[1], tmp_path)
    rates = data[data["panel"] == "change_rate"].set_index("series")["value"]
    # All 8 tokens: attn rises at 3 (1, 1 and 1), mlp at 7.
    assert rates.to_dict() == {"attn - Image": 3 / 8, "mlp - Image": 7 / 8}


def test_fig_context_identifiability(models, tmp_path):
    data = run_figure(class_building_figures.fig_context_identifiability, models[0], tmp_path, n_permutations=50)
    per_block = data.drop_duplicates("block").set_index("block")
    is_class = LABELS.ravel() == "class"
    # The same relabellings as a direct call with the target's generator; rows: blocks 1 to 3.
    values = np.array([np.where(is_class, 1.0, 0.25), np.full(8, 0.5), np.where(is_class, 0.25, 1.0)])
    direct = statistics.permutation_test(
        values, is_class, 50, statistics.permutation_rng(0, "cls_model", "context_identifiability")
    )
    # Block 1: class CI 1, context CI 0.25 -> diff 0.75, never beaten by a relabelling; the
    # relabellings that redraw the observed split (1 in 70) tie, which only the corrected p counts.
    assert per_block.loc[1, "diff"] == pytest.approx(0.75)
    assert per_block.loc[1, "p_value"] == 0.0 and per_block.loc[1, "significant"]
    assert per_block.loc[1, "p_value_corrected"] == pytest.approx(direct["p_value_corrected"][0])
    assert per_block.loc[1, "p_value_corrected"] >= 1 / 51
    # Block 2 flat: every difference is 0, so the paper's strict count gives p = 0 while the
    # corrected p is 1.
    assert per_block.loc[2, "diff"] == 0.0
    assert per_block.loc[2, "p_value"] == 0.0 and per_block.loc[2, "p_value_corrected"] == 1.0
    # Block 3 reversed.
    assert per_block.loc[3, "diff"] == pytest.approx(-0.75)
    assert per_block.loc[3, "p_value"] == pytest.approx(direct["p_value"][2])
    assert per_block.loc[3, "p_value"] > 0.9
    boxes = data.set_index(["block", "label"])
    assert boxes.loc[(1, "class"), "med"] == 1.0 and boxes.loc[(1, "context"), "med"] == 0.25
    assert boxes.loc[(1, "class"), "n_values"] == 4


def test_fig_context_identifiability_gap(models, tmp_path):
    data = run_figure(class_building_figures.fig_context_identifiability, models[1], tmp_path, n_permutations=20)
    per_block = data.drop_duplicates("block").set_index("block")
    assert per_block.loc[1, "diff"] == pytest.approx(0.75) and per_block.loc[2, "diff"] == 0.0


def test_tab_context_change_rate_diff(models, tmp_path):
    output = SimpleNamespace(csv=tmp_path / "tab.csv")
    class_building_statistics.tab_context_change_rate_diff(models=models, output=output, seed=0, n_permutations=30)
    table = pd.read_csv(output.csv).set_index(["model", "block"])
    # CLS block 2: Δ_attn of image tokens [-1, 1, -1, 2], [1, 1, -1, -1]; class mean
    # (-1 - 1 + 1 + 1)/4 = 0, context (1 + 2 - 1 - 1)/4 = 0.25.
    assert table.loc[("cls_model", 2), "diff"] == pytest.approx(-0.25)
    assert table.loc[("cls_model", 2), "paper_index"] == 0
    assert table.loc[("cls_model", 3), "diff"] == 0.0  # attn equals its input
    # GAP block 2: Δ = [1, 1, -1, 0], [1, 0, 0, -2]; class (1 - 1 + 1 + 0)/4 = 0.25, context
    # (1 + 0 + 0 - 2)/4 = -0.25.
    assert table.loc[("gap_model", 2), "diff"] == pytest.approx(0.5)
    assert list(table.index) == [("cls_model", 2), ("cls_model", 3), ("gap_model", 2)]
    assert (table["n_class_tokens"] == 4).all() and (table["n_permutations"] == 30).all()


def test_mismatched_token_labels_name_the_file(models, tmp_path):
    model = {**models[0], "token_grid": 3}
    write_layer(tmp_path, "hs_0", np.zeros((2, 10)))  # 9 image tokens but a 2 x 2 label grid
    with pytest.raises(InputError, match="token_labels_g2.parquet"):
        class_building_figures.fig_context_identifiability(
            {**model, **flat_tables(tmp_path), "num_blocks": 1}, SimpleNamespace(), seed=0, n_permutations=5
        )
