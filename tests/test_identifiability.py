"""Identifiability metrics (docs/method.md §4.1–4.4) and the Notebook 1 targets, on hand-made arrays.

Every expected number below is worked out by hand in the comments.
"""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import scipy.stats
from result_tables import flat_tables

from class_embedding.analyses import identifiability
from class_embedding.errors import InputError
from class_embedding.extraction import reader
from class_embedding.figures import identifiability_figures
from class_embedding.models.tokens import TokenLayout
from class_embedding.tables import write_table

# The functions under test read only the prefix from a layout; hand-made arrays need no square grid.
CLS_ONLY = TokenLayout(token_grid=2, class_token=True)
GAP = TokenLayout(token_grid=2, class_token=False)

C = 4  # classes in every hand-made example

# Ranks of 3 images x 4 tokens; token 0 is [CLS] for a class-token model.
RANKS = np.array(
    [
        [0, 0, 1, 0],
        [2, 3, 1, 2],
        [0, 1, 0, 0],
    ]
)


def test_class_identifiability_is_one_minus_rank_over_classes():
    expected = [[1, 1, 0.75, 1], [0.5, 0.25, 0.75, 0.5], [1, 0.75, 1, 1]]
    np.testing.assert_allclose(identifiability.class_identifiability(RANKS, C), expected)


def test_image_tokens_drop_token_zero_only_with_class_token_or_paper_convention():
    assert identifiability.image_tokens(CLS_ONLY) == slice(1, None)
    assert identifiability.image_tokens(GAP) == slice(0, None)
    assert identifiability.image_tokens(GAP, paper_convention=True) == slice(1, None)


def test_rates_with_class_token():
    # Image tokens 1..3: identifiable counts 2, 0, 2 of 3 -> mean 4/9; 2 of 3 images have one.
    rates = identifiability.identifiability_rates(RANKS, identifiability.image_tokens(CLS_ONLY))
    assert rates["pct_tokens"] == pytest.approx(100 * 4 / 9)
    assert rates["pct_images"] == pytest.approx(100 * 2 / 3)
    assert rates["n_identifiable_images"] == 2
    assert rates["n_images"] == 3
    assert rates["n_image_tokens"] == 3


def test_rates_gap_corrected_and_paper_convention():
    # All 4 tokens: counts 3, 0, 3 of 4 -> 50 %.
    corrected = identifiability.identifiability_rates(RANKS, identifiability.image_tokens(GAP))
    assert corrected["pct_tokens"] == pytest.approx(50.0)
    assert corrected["n_image_tokens"] == 4
    # Paper drops token 0 although it is an image token: the class-token numbers.
    paper = identifiability.identifiability_rates(RANKS, identifiability.image_tokens(GAP, paper_convention=True))
    assert paper["pct_tokens"] == pytest.approx(100 * 4 / 9)


def test_percent_images_counts_images_with_any_identifiable_token():
    ranks = np.array([[5, 5, 0], [5, 5, 5], [0, 5, 5], [5, 5, 5]])
    # Image tokens 1..2: only image 0 has a rank-0 image token (image 2's is the [CLS]).
    rates = identifiability.identifiability_rates(ranks, slice(1, None))
    assert rates["pct_images"] == pytest.approx(25.0)
    assert rates["n_identifiable_images"] == 1
    counts = identifiability.identifiable_token_counts(ranks, slice(1, None))
    np.testing.assert_array_equal(counts, [1, 0, 0, 0])


def test_accuracy_in_percent():
    assert identifiability.accuracy(np.array([True, False, True, True])) == pytest.approx(75.0)


def test_token_types_split_cls_and_image_tokens():
    ci = identifiability.class_identifiability(RANKS, C)
    split = identifiability.token_types(ci, CLS_ONLY)
    np.testing.assert_allclose(split[identifiability.CLS], [1, 0.5, 1])
    assert split[identifiability.IMAGE].mean() == pytest.approx(7 / 9)
    gap = identifiability.token_types(ci, GAP)
    assert list(gap) == [identifiability.IMAGE]
    assert gap[identifiability.IMAGE].shape == (3, 4)


def test_group_blocks_averages_consecutive_pairs():
    np.testing.assert_allclose(identifiability.group_blocks([0.5, 0.7, 0.8, 1.0], 2), [0.6, 0.9])
    np.testing.assert_allclose(identifiability.group_blocks([0.5, 0.7, 0.8], 1), [0.5, 0.7, 0.8])
    with pytest.raises(ValueError, match="groups of 2"):
        identifiability.group_blocks([0.5, 0.7, 0.8], 2)


def test_change_rate_counts_strict_increases():
    before = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    after = np.array([[2.0, 2.0, 1.0], [1.0, -1.0, 5.0]])
    # All tokens: increases at (0,0), (1,0), (1,2) -> 3/6; an equal logit is no increase.
    assert identifiability.change_rate(before, after, slice(None)) == pytest.approx(0.5)
    # Tokens 1..2: only (1,2) -> 1/4.
    assert identifiability.change_rate(before, after, slice(1, None)) == pytest.approx(0.25)


def test_wilcoxon_greater_exact_case():
    # Five distinct positive differences: the exact one-sided p is 1/2**5.
    random = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    trained = random + np.array([0.01, 0.02, 0.03, 0.04, 0.05])
    assert identifiability.wilcoxon_greater(trained, random) == pytest.approx(1 / 32)
    assert identifiability.wilcoxon_greater(random, trained) == pytest.approx(1.0)


def test_wilcoxon_greater_agrees_with_scipy_and_handles_ties():
    rng = np.random.default_rng(0)
    random = rng.integers(0, 100, size=(30, 5)) / 100
    trained = np.minimum(random + rng.integers(0, 3, size=random.shape) / 100, 1)
    expected = scipy.stats.wilcoxon(trained.ravel(), random.ravel(), alternative="greater").pvalue
    assert identifiability.wilcoxon_greater(trained, random) == pytest.approx(expected)
    assert identifiability.wilcoxon_greater(trained, random) < 0.05
    assert identifiability.wilcoxon_greater(random, random) == 1.0  # every pair tied: no evidence
    with pytest.raises(ValueError, match="pair"):
        identifiability.wilcoxon_greater(random, random[:, :4])


# ---------------------------------------------------------------------------------------------
# Loading and the six targets end to end


def write_extract(directory, ranks_per_block, logits_per_block, correct, shuffle=False):
    """Parquet files in the extraction stage's layout, one hs_<b> per block."""
    for block, (ranks, logits) in enumerate(zip(ranks_per_block, logits_per_block)):
        n_images, n_tokens = ranks.shape
        order = np.arange(ranks.size)
        if shuffle:
            order = np.random.default_rng(block).permutation(order)
        top5 = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(5 * ranks.size, np.int16)), 5)
        table = pa.table(
            {
                "image": pa.array(np.repeat(np.arange(n_images), n_tokens)[order], pa.int32()),
                "token": pa.array(np.tile(np.arange(n_tokens), n_images)[order], pa.int16()),
                "rank": pa.array(np.ravel(ranks)[order], pa.int16()),
                "logit": pa.array(np.ravel(logits)[order], pa.float32()),
                "top5": top5,
            }
        )
        write_table(table, directory / f"hs_{block}.parquet", {"num_classes": C})
    correct = np.asarray(correct)
    predictions = pa.table(
        {
            "image": pa.array(np.arange(correct.size), pa.int32()),
            "label": pa.array(np.zeros(correct.size), pa.int16()),
            "pred": pa.array(np.where(correct, 0, 1), pa.int16()),
            "correct": pa.array(correct),
            "logit": pa.array(np.zeros(correct.size), pa.float32()),
        }
    )
    write_table(predictions, directory / "predictions.parquet")


def test_load_block_reorders_rows_and_rejects_incomplete_grids(tmp_path):
    ranks = np.arange(12).reshape(3, 4)
    write_extract(tmp_path, [ranks], [ranks * 0.5], [True] * 3, shuffle=True)
    np.testing.assert_array_equal(reader.load_block(flat_tables(tmp_path)["layers"], 0, "rank"), ranks)
    np.testing.assert_allclose(reader.load_block(flat_tables(tmp_path)["layers"], 0, "logit"), ranks * 0.5)

    # Image 1 lacks token 1.
    table = pa.table(
        {
            "image": pa.array([0, 0, 1], pa.int32()),
            "token": pa.array([0, 1, 0], pa.int16()),
            "rank": pa.array([0, 0, 0], pa.int16()),
        }
    )
    write_table(table, tmp_path / "hs_1.parquet")
    with pytest.raises(InputError, match="complete image x token grid"):
        reader.load_block(flat_tables(tmp_path)["layers"], 1, "rank")


# cls_model: [CLS] + 3 image tokens, 2 blocks, random twin. gap_model: 4 image tokens, no twin,
# its 2 blocks averaged into one normalized block.
CLS_RANKS = [np.array([[2, 3, 1, 2], [1, 2, 3, 0], [2, 2, 2, 2]]), RANKS]
CLS_LOGITS = [
    np.array([[0, 0, 0, 0], [1, 1, 1, 1], [2, 2, 2, 2]]),
    np.array([[1, -1, 1, 1], [0, 2, 2, 0], [2, 3, 3, 3]]),
]
RANDOM_RANKS = [CLS_RANKS[0], np.full((3, 4), 3)]
GAP_RANKS = [
    np.array([[0, 3, 3, 3], [3, 3, 3, 3], [0, 0, 0, 0]]),
    np.array([[0, 1, 2, 3], [1, 0, 1, 0], [3, 3, 3, 3]]),
]
GAP_LOGITS = [np.zeros((3, 4)), np.array([[1, 0, 0, 0], [-1, 1, 1, 1], [0, 0, 0, 1]])]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    for name, ranks, logits, correct in [
        ("cls_model", CLS_RANKS, CLS_LOGITS, [True, False, True]),
        ("cls_model_random", RANDOM_RANKS, CLS_LOGITS, [False, False, False]),
        ("gap_model", GAP_RANKS, GAP_LOGITS, [True, True, False]),
    ]:
        (root / name).mkdir()
        write_extract(root / name, ranks, logits, correct)
    # token_grid names the layout only: the figures take the prefix from it, not the grid.
    common = {"num_blocks": 2, "num_classes": C, "token_grid": 2}
    twin = {"name": "cls_model_random", **flat_tables(root / "cls_model_random")}
    cls_model = dict(name="cls_model", display_name="CLS ViT", class_token=True, block_group=1)
    gap_model = dict(name="gap_model", display_name="GAP ViT", class_token=False, block_group=2)
    return [
        {**cls_model, **common, **flat_tables(root / "cls_model"), "random_twin": twin},
        {**gap_model, **common, **flat_tables(root / "gap_model"), "random_twin": None},
    ]


def figure_output(tmp_path, name):
    return SimpleNamespace(pdf=tmp_path / f"{name}.pdf", png=tmp_path / f"{name}.png", data=tmp_path / f"{name}.csv")


def run_figure(function, models, tmp_path):
    output = figure_output(tmp_path, function.__name__)
    function(models=models, output=output, seed=0)
    for path in (output.pdf, output.png):
        assert path.stat().st_size > 0
    assert not list(tmp_path.glob(".*partial"))  # atomic writes leave no temporaries
    return pd.read_csv(output.data)


def test_tab_identifiability_rates(models, tmp_path):
    output = SimpleNamespace(csv=tmp_path / "rates.csv")
    identifiability_figures.tab_identifiability_rates(models=models, output=output, seed=0)
    table = pd.read_csv(output.csv).set_index("model")
    assert list(table.index) == ["cls_model", "gap_model"]
    cls, gap = table.loc["cls_model"], table.loc["gap_model"]
    assert (cls["block"], cls["n_images"], cls["n_image_tokens"]) == (2, 3, 3)
    assert cls["pct_tokens"] == pytest.approx(100 * 4 / 9)
    assert cls["pct_tokens_paper"] == pytest.approx(cls["pct_tokens"])
    assert cls["pct_images"] == pytest.approx(100 * 2 / 3)
    assert cls["n_identifiable_images"] == 2
    assert cls["accuracy"] == pytest.approx(100 * 2 / 3)
    # GAP last block, all 4 tokens: 1/4, 2/4, 0 identifiable -> 25 %; 2 images.
    assert gap["n_image_tokens"] == 4
    assert gap["pct_tokens"] == pytest.approx(25.0)
    assert gap["n_identifiable_images"] == 2
    # Paper convention, tokens 1..3: 0, 2/3, 0 -> 2/9; only image 1.
    assert gap["pct_tokens_paper"] == pytest.approx(100 * 2 / 9)
    assert gap["pct_images_paper"] == pytest.approx(100 / 3)
    assert gap["n_identifiable_images_paper"] == 1


def test_tab_identifiability_random(models, tmp_path):
    output = SimpleNamespace(csv=tmp_path / "random.csv")
    identifiability_figures.tab_identifiability_random(models=models, output=output, seed=0)
    table = pd.read_csv(output.csv)
    assert list(table["model"]) == ["cls_model_random"]  # gap_model has no twin
    row = table.iloc[0]
    assert row["trained_model"] == "cls_model"
    assert (row["pct_tokens"], row["pct_images"], row["accuracy"]) == (0, 0, 0)

    identifiability_figures.tab_identifiability_random(models=models[1:], output=output, seed=0)
    assert pd.read_csv(output.csv).empty


def test_fig_identifiability_hist(models, tmp_path):
    data = run_figure(identifiability_figures.fig_identifiability_hist, models, tmp_path)
    cls = data[data["model"] == "cls_model"]
    # Counts per image 2, 0, 2 over bins for 0..3 tokens.
    np.testing.assert_array_equal(cls["bin_left"], [-0.5, 0.5, 1.5, 2.5])
    np.testing.assert_array_equal(cls["n_images"], [1, 0, 2, 0])
    gap = data[data["model"] == "gap_model"]
    np.testing.assert_array_equal(gap["n_images"], [2, 0, 1, 0, 0])  # paper: 0, 2, 0
    np.testing.assert_array_equal(gap["n_images_corrected"], [1, 1, 1, 0, 0])  # 1, 2, 0


def test_count_bins_cap_at_fifty():
    assert len(identifiability_figures.count_bins(196)) == 51
    assert identifiability_figures.count_bins(196)[-1] == 196


def test_fig_identifiability_evolution(models, tmp_path):
    data = run_figure(identifiability_figures.fig_identifiability_evolution, models, tmp_path)
    cls = data[data["model"] == "cls_model"].set_index(["block", "token_type"])
    # Block 1 [CLS]: CI 0.5, 0.75, 0.5.
    first = cls.loc[(1, "[CLS]")]
    assert (first["med"], first["q1"], first["q3"]) == pytest.approx((0.5, 0.5, 0.625))
    assert (first["whislo"], first["whishi"], first["mean"]) == pytest.approx((0.5, 0.75, 7 / 12))
    # Block 2 image tokens: CI .25 .5 .75 .75 .75 1 1 1 1; low whisker stops at .5 (> .75-1.5*.25).
    last = cls.loc[(2, "image")]
    assert (last["med"], last["q1"], last["q3"]) == pytest.approx((0.75, 0.75, 1.0))
    assert (last["whislo"], last["whishi"], last["n_values"]) == pytest.approx((0.5, 1.0, 9))
    # Block 1 is identical to the random twin; block 2 lies above it everywhere.
    assert cls.loc[(1, "image"), "p_value"] == 1.0
    trained = identifiability.class_identifiability(CLS_RANKS[1], C).ravel()
    random = identifiability.class_identifiability(RANDOM_RANKS[1], C).ravel()
    expected = scipy.stats.wilcoxon(trained, random, alternative="greater").pvalue
    assert cls.loc[(2, "[CLS]"), "p_value"] == pytest.approx(expected)
    assert list(cls.xs("image", level="token_type")["significant"]) == [False, True]

    gap = data[data["model"] == "gap_model"]
    assert set(gap["token_type"]) == {"image"}
    assert gap["p_value"].isna().all() and not gap["significant"].any()
    assert list(gap["n_values"]) == [12, 12]


def test_fig_identifiability_mean_evolution(models, tmp_path):
    data = run_figure(identifiability_figures.fig_identifiability_mean_evolution, models, tmp_path)
    cls = data[data["model"] == "cls_model"].set_index(["token_type", "normalized_block"])
    assert cls.loc[("[CLS]", 1), "mean_ci"] == pytest.approx(7 / 12)  # CI .5 .75 .5
    assert cls.loc[("[CLS]", 2), "mean_ci"] == pytest.approx(5 / 6)  # CI 1 .5 1
    assert cls.loc[("image", 1), "mean_ci"] == pytest.approx(1 - 17 / 36)  # rank sum 17 over 9
    assert cls.loc[("image", 2), "mean_ci"] == pytest.approx(7 / 9)
    gap = data[data["model"] == "gap_model"]
    # Blocks 1+2 averaged: mean ranks 21/12 and 20/12 -> CI 0.5625 and 7/12.
    assert len(gap) == 1 and gap.iloc[0]["token_type"] == "image"
    assert gap.iloc[0]["mean_ci"] == pytest.approx((0.5625 + 7 / 12) / 2)
    assert (gap.iloc[0]["first_block"], gap.iloc[0]["last_block"]) == (1, 2)


def test_fig_change_rate(models, tmp_path):
    data = run_figure(identifiability_figures.fig_change_rate, models, tmp_path).set_index("model")
    # cls_model tokens 1..3: increases 2 + 2 + 3 of 9, plotted at block 2.
    assert data.loc["cls_model", "block"] == 2
    assert data.loc["cls_model", "rate_paper"] == pytest.approx(7 / 9)
    assert data.loc["cls_model", "rate_corrected"] == pytest.approx(7 / 9)
    # gap_model: all tokens 1 + 3 + 1 of 12; paper drops token 0: 0 + 3 + 1 of 9.
    assert data.loc["gap_model", "rate_corrected"] == pytest.approx(5 / 12)
    assert data.loc["gap_model", "rate_paper"] == pytest.approx(4 / 9)
