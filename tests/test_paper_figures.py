"""The identifiability figures and tables with the paper's seven models (shapes of config/paper.yaml:
ViT-L's 24 blocks, GAP without [CLS], CIFAR's 100 classes, MIIL against the random ViT-B/16) on
synthetic extraction tables of a few images."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from result_tables import flat_tables

from class_embedding import tables
from class_embedding.extraction import reader
from class_embedding.figures import identifiability_figures

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
N_IMAGES = 4


def write_model(extract_dir: Path, spec: dict, rng: np.random.Generator, trained: bool) -> None:
    n_tokens = spec["token_grid"] ** 2 + spec["class_token"]
    for block in range(spec["num_blocks"]):
        # Trained models: ranks fall with depth (identifiable at the last block); random: uniform.
        scale = (1 - block / (spec["num_blocks"] - 1)) if trained else 1.0
        ranks = (rng.random((N_IMAGES, n_tokens)) * scale * (spec["num_classes"] - 1)).astype(np.int16)
        table = pa.table(
            {
                "image": pa.array(np.repeat(np.arange(N_IMAGES, dtype=np.int32), n_tokens)),
                "token": pa.array(np.tile(np.arange(n_tokens, dtype=np.int16), N_IMAGES)),
                "rank": pa.array(ranks.reshape(-1)),
                "logit": pa.array(rng.normal(size=N_IMAGES * n_tokens).astype(np.float32) + block),
            }
        )
        tables.write_table(table, extract_dir / f"hs_{block}.parquet", {})
    predictions = pa.table(
        {"image": pa.array(np.arange(N_IMAGES, dtype=np.int32)), "correct": pa.array([True, True, False, trained])}
    )
    tables.write_table(predictions, extract_dir / "predictions.parquet", {})


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    rng = np.random.default_rng(0)
    described = []
    for name, spec in PAPER["models"].items():
        twin = name if spec["random_twin"] else spec["random_baseline"]
        write_model(root / name, spec, rng, trained=True)
        if not (root / f"{twin}_random").exists():
            write_model(root / f"{twin}_random", PAPER["models"][twin], rng, trained=False)
        described.append(
            {
                "name": name,
                "display_name": spec["display_name"],
                **flat_tables(root / name),
                "num_blocks": spec["num_blocks"],
                "num_classes": spec["num_classes"],
                "class_token": spec["class_token"],
                "token_grid": spec["token_grid"],
                "block_group": spec.get("block_group", 1),
                "random_twin": {"name": f"{twin}_random", **flat_tables(root / f"{twin}_random")},
            }
        )
    return root, described


def outputs(root: Path, name: str) -> SimpleNamespace:
    return SimpleNamespace(
        pdf=root / f"{name}.pdf", png=root / f"{name}.png", data=root / f"{name}.csv", csv=root / f"{name}.csv"
    )


def test_rates_tables_cover_the_seven_models_and_their_baselines(paper_models):
    root, models = paper_models
    identifiability_figures.tab_identifiability_rates(models, outputs(root, "rates"))
    rates = pd.read_csv(root / "rates.csv")
    assert rates["model"].tolist() == list(PAPER["models"])
    assert rates.set_index("model")["block"].to_dict()["vit_large_16"] == 24
    identifiability_figures.tab_identifiability_random(models, outputs(root, "random"))
    random = pd.read_csv(root / "random.csv")
    assert random["trained_model"].tolist() == list(PAPER["models"])
    assert random.set_index("trained_model").loc["vit_miil_16", "model"] == "vit_b_16_random"


def test_mean_evolution_averages_vit_l_in_pairs(paper_models):
    root, models = paper_models
    identifiability_figures.fig_identifiability_mean_evolution(models, outputs(root, "mean"))
    data = pd.read_csv(root / "mean.csv")
    assert data["display_name"].drop_duplicates().tolist() == [m["display_name"] for m in models]
    blocks = data.groupby("display_name")["normalized_block"].nunique()
    assert (blocks == 12).all(), blocks.to_dict()  # ViT-L's 24 blocks → 12 normalised blocks
    assert set(data[data["display_name"] == "ViT-B/16-GAP"]["token_type"]) == {"image"}
    # Hand check: ViT-L's first normalised [CLS] point = mean of blocks 1 and 2 of token 0.
    large = models[2]
    ci = [1 - reader.load_block(large["layers"], b)[:, 0] / 1000 for b in (0, 1)]
    rows = data[(data["display_name"] == "ViT-L/16") & (data["token_type"] == "[CLS]")].sort_values("normalized_block")
    assert (rows.iloc[0]["first_block"], rows.iloc[0]["last_block"]) == (1, 2)
    assert rows.iloc[-1]["last_block"] == 24
    assert rows.iloc[0]["mean_ci"] == pytest.approx(np.mean(ci))


def test_evolution_figure_has_one_row_per_model(paper_models):
    root, models = paper_models
    identifiability_figures.fig_identifiability_evolution(models, outputs(root, "evolution"))
    data = pd.read_csv(root / "evolution.csv")
    assert data["display_name"].drop_duplicates().tolist() == [m["display_name"] for m in models]
    assert data[data["display_name"] == "ViT-L/16"]["block"].max() == 24
    assert (root / "evolution.pdf").stat().st_size > 1000
