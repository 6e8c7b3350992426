"""Token maps (fig_token_maps_<model>) and the explorer pages, on the real extraction of tiny
scrambled ViTs over a tiny generated dataset: a [CLS] model with two register tokens and a GAP
model. The page is driven in a real headless Chromium (skipped without one, except on CI)."""

import os
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from chromium import Browser, find_browser
from result_tables import flat_tables
from workflow_runs import snakemake, write_config

from class_embedding import tables
from class_embedding.analyses import token_states
from class_embedding.data import demo_dataset, imagenet_s
from class_embedding.errors import InputError
from class_embedding.explorer import pages
from class_embedding.extraction import shards
from class_embedding.figures import token_map_figures
from class_embedding.models.preprocessing import Preprocessing
from class_embedding.models.tokens import TokenLayout

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
GRID = 4
NUM_CLASSES = 5
PREPROCESSING = {"resize": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
SETTINGS = {"images_per_class": 5, "max_page_mb": 20, "image_px": 224}
MODELS = {
    "registers": {
        "arch": "vit_base_patch16_224",
        "class_token": True,
        "register_tokens": 2,
        "kwargs": {"reg_tokens": 2},
    },
    "gap": {"arch": "vit_base_patch16_rpn_224", "class_token": False, "register_tokens": 0, "kwargs": {}},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory, scrambled_vit):
    """A generated dataset (4 classes, 3 stimuli each, masks), its token labels, and the real
    extraction of both models."""
    root = tmp_path_factory.mktemp("explorer")
    images = root / imagenet_s.IMAGES_DIR
    categories = root / imagenet_s.CATEGORIES_FILE
    spec = {
        "num_classes": 4,
        "num_unannotated_classes": 0,
        "images_per_class": {"train": 1, "validation": 3, "test": 1},
        "short_validation_classes": 0,
        "image_size": [32, 48],
    }
    demo_dataset.write_from_spec(images, categories, spec, seed=5)
    stimuli = imagenet_s.select_stimuli(images / "validation", images / "LOC_synset_mapping.txt", 3)
    tables.write_table(stimuli, root / "stimuli.parquet")
    labels = imagenet_s.token_label_table(stimuli, root, categories, GRID)
    tables.write_table(labels, root / "token_labels.parquet", {"token_grid": GRID})
    models = {}
    for name, arch in MODELS.items():
        network = scrambled_vit(
            arch["arch"],
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=3,
            num_heads=2,
            num_classes=NUM_CLASSES,
            seed=len(name),
            **arch["kwargs"],
        )
        model = {
            "name": name,
            "display_name": f"Tiny {name}",
            **flat_tables(root / "extract" / name),
            "num_blocks": 3,
            "num_classes": NUM_CLASSES,
            "class_token": arch["class_token"],
            "distillation_token": False,
            "register_tokens": arch["register_tokens"],
            "token_grid": GRID,
        }
        layout = TokenLayout.of(model)
        assert layout == TokenLayout.of_timm(network)
        shards.extract_shard(
            network,
            stimuli,
            images,
            Preprocessing(PREPROCESSING),
            root / "extract" / name,
            batch_size=8,
            device=torch.device("cpu"),
            metadata=layout.metadata(),
        )
        models[name] = model
    return SimpleNamespace(
        root=root,
        images=images,
        categories=categories,
        stimuli=stimuli.to_pandas(),
        labels=root / "token_labels.parquet",
        models=models,
    )


def parquet_rows(model: dict, layer: str, image: int) -> pd.DataFrame:
    """One image's rows of an extraction table, read without the library's reader."""
    frame = pq.read_table(model["layers"][layer]).to_pandas()
    return frame[frame["image"] == image].sort_values("token").reset_index(drop=True)


def expected_labels(run, model: dict, image: int) -> list[str]:
    layout = TokenLayout.of(model)
    frame = pq.read_table(run.labels).to_pandas()
    grid = frame[frame["image"] == image].sort_values("token")["label"].astype(str).tolist()
    return [*layout.prefix, *grid]


def outputs(tmp_path: Path, stem: str) -> SimpleNamespace:
    return SimpleNamespace(pdf=tmp_path / f"{stem}.pdf", png=tmp_path / f"{stem}.png", data=tmp_path / f"{stem}.csv")


# Choices of images and blocks ------------------------------------------------------------------


def test_blocks_spread_over_the_depth():
    assert token_states.spread_blocks(12) == [0, 3, 6, 8, 11]
    assert token_states.spread_blocks(6) == [0, 1, 2, 4, 5]
    assert token_states.spread_blocks(2) == [0, 1]


def test_default_images_are_the_first_of_four_spread_classes(run):
    wnids = run.stimuli["wnid"].drop_duplicates().tolist()
    ids = token_states.default_images(run.stimuli)
    first = run.stimuli.groupby("wnid", sort=False)["image"].first()
    assert ids == [int(first[w]) for w in wnids]  # four classes: all of them
    assert token_states.default_images(run.stimuli, count=2) == [int(first[wnids[0]]), int(first[wnids[-1]])]


def test_configured_image_that_is_not_a_stimulus_names_the_key(run):
    wnid = run.stimuli["wnid"].iloc[0]
    with pytest.raises(InputError, match=r"token_maps.images\[1\]: the stimuli have no image 3 of class"):
        token_map_figures.chosen_images(run.stimuli, [{"wnid": wnid, "image": 2}, {"wnid": wnid, "image": 3}])


def test_round_robin_order_keeps_classes_balanced(run):
    order = pages.image_order(run.stimuli, 2)
    by_class = run.stimuli.groupby("wnid", sort=False)["image"].apply(list).tolist()
    assert order == [ids[0] for ids in by_class] + [ids[1] for ids in by_class]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"token_maps": {"blocks": [0, 2]}}, r"token_maps.blocks: \[2\] are outside micro_cls's blocks 0..1"),
        ({"explorer": {"models": ["micro_vit"]}}, "explorer.models: 'micro_vit' is not a trained model"),
    ],
)
@pytest.mark.workflow
def test_dry_run_refuses_blocks_and_models_the_config_lacks(tmp_path, section, message):
    config = {**yaml.safe_load((REPO / "tests" / "configs" / "micro.yaml").read_text()), **section}
    result = snakemake(
        "-n", configfiles=[write_config(config, tmp_path / "config.yaml")], workdir=tmp_path, timeout=300
    )
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr), result.stderr[-2000:]


# The figure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MODELS))
def test_token_map_numbers_are_the_extraction(run, tmp_path, name):
    model = run.models[name]
    settings = {"images": None, "blocks": [0, 2]}
    output = outputs(tmp_path, f"fig_token_maps_{name}")
    token_map_figures.fig_token_maps(
        model, PREPROCESSING, run.root / "stimuli.parquet", run.images, run.categories, run.labels, settings, output
    )
    assert output.pdf.stat().st_size > 0 and output.png.stat().st_size > 0
    data = pd.read_csv(output.data)
    predictions = pq.read_table(model["predictions"]).to_pandas().set_index("image")
    assert sorted(data["image"].unique()) == token_states.default_images(run.stimuli)
    assert sorted(data["block"].unique()) == [0, 2]
    for (image, block), panel in data.groupby(["image", "block"]):
        rows = parquet_rows(model, f"hs_{block}", image)
        assert panel["rank"].tolist() == rows["rank"].tolist()
        np.testing.assert_allclose(panel["identifiability"], 1 - rows["rank"] / NUM_CLASSES)
        assert panel["top1_class"].tolist() == [top[0] for top in rows["top5"]]
        assert panel["token_label"].tolist() == expected_labels(run, model, image)
        assert (panel["true_class"] == predictions.loc[image, "label"]).all()
        assert (panel["predicted_class"] == predictions.loc[image, "pred"]).all()


def test_without_masks_image_tokens_are_unlabelled(run, tmp_path):
    """Datasets without segmentations (CIFAR-100): no token labels, no categories, no mask outline."""
    output = outputs(tmp_path, "no_masks")
    settings = {"images": None, "blocks": [1]}
    token_map_figures.fig_token_maps(
        run.models["registers"], PREPROCESSING, run.root / "stimuli.parquet", run.images, None, None, settings, output
    )
    labels = pd.read_csv(output.data).groupby("image")["token_label"].apply(list)
    assert all(value == ["[CLS]", "register", "register", *["image"] * GRID**2] for value in labels)


def test_a_layout_that_disagrees_with_the_extraction_is_refused(run, tmp_path):
    model = {**run.models["gap"], "class_token": True}
    with pytest.raises(InputError, match="has 16 tokens per image, but the model's config declares 17"):
        token_map_figures.fig_token_maps(
            model,
            PREPROCESSING,
            run.root / "stimuli.parquet",
            run.images,
            run.categories,
            run.labels,
            {"images": None, "blocks": None},
            outputs(tmp_path, "bad"),
        )


# The page --------------------------------------------------------------------------------------


def build_page(run, name: str, path: Path, **settings) -> Path:
    pages.explorer_page(
        run.models[name],
        PREPROCESSING,
        run.root / "stimuli.parquet",
        run.images,
        run.labels,
        {**SETTINGS, **settings},
        path,
    )
    return path


def test_page_keeps_the_images_that_fit_the_budget(run, tmp_path):
    full = build_page(run, "registers", tmp_path / "full.html")
    data = pages.page_data(
        run.models["registers"],
        PREPROCESSING,
        run.root / "stimuli.parquet",
        run.images,
        run.labels,
        {**SETTINGS, "max_page_mb": full.stat().st_size * 0.7 / 1e6},
    )
    kept = [entry["id"] for entry in data["images"]]
    order = pages.image_order(run.stimuli, None)
    assert data["selected_images"] == len(order) == 12
    assert 0 < len(kept) < 12 and kept == sorted(order[: len(kept)])


def test_page_is_self_contained(run, tmp_path):
    text = build_page(run, "registers", tmp_path / "registers.html").read_text()
    assert "http://" not in text and "https://" not in text and "<script src" not in text
    assert text.count("data:image/jpeg;base64,") == 12


def check_tokens(browser: Browser, run, model: dict, image: int, layer: str) -> None:
    """Every token element's shown state against the extraction table."""
    shown = browser.evaluate(
        "[...document.querySelectorAll('.token')].sort((a, b) => a.dataset.token - b.dataset.token)"
        ".map((el) => [Number(el.dataset.rank), el.dataset.top5, el.dataset.label, el.classList.contains('top1')])"
    )
    rows = parquet_rows(model, layer, image)
    assert [s[0] for s in shown] == rows["rank"].tolist()
    assert [s[1] for s in shown] == [",".join(map(str, top)) for top in rows["top5"]]
    assert [s[2] for s in shown] == expected_labels(run, model, image)
    assert [s[3] for s in shown] == (rows["rank"] == 0).tolist()


def test_page_in_chromium(run, tmp_path):
    executable = find_browser()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs chromium (.ci/run), but no Chromium is on PATH")
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    model = run.models["registers"]
    page = build_page(run, "registers", tmp_path / "registers.html")
    browser = Browser(executable, tmp_path / "profile")
    try:
        start = time.perf_counter()
        browser.open(page.as_uri())
        wall = time.perf_counter() - start
        load_ms = browser.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
        print(f"{page.name}: {page.stat().st_size / 1e6:.3f} MB, load event after {load_ms:.0f} ms ({wall:.2f} s wall)")
        assert load_ms < 1000
        assert browser.errors() == []
        assert browser.evaluate("document.getElementById('photo').naturalWidth") == 32

        # The page's own controls, changed as a user would: the events a select, a range and a
        # radio button fire.
        option, image = (
            5,
            int(browser.evaluate("JSON.parse(document.getElementById('explorer-data').textContent).images[5].id")),
        )
        browser.evaluate(
            f"const s = document.getElementById('image-select'); s.value = '{option}';"
            "s.dispatchEvent(new Event('change', {bubbles: true}))"
        )
        check_tokens(browser, run, model, image, "hs_0")
        last = model["num_blocks"] - 1
        browser.evaluate(
            f"const r = document.getElementById('block-slider'); r.value = '{last}';"
            "r.dispatchEvent(new Event('input', {bubbles: true}))"
        )
        check_tokens(browser, run, model, image, f"hs_{last}")
        for layer in ("attn", "mlp"):
            browser.evaluate(f"document.querySelector('input[name=layer][value={layer}]').click()")
            check_tokens(browser, run, model, image, f"{layer}_{last}")
            assert browser.evaluate("document.body.dataset.shown") == f"{image}:{layer}_{last}:identifiability"

        # Hovering a register token and an image token.
        mapping = (run.images / "LOC_synset_mapping.txt").read_text().splitlines()
        names = [line.split(" ", 1)[1].split(",")[0].strip().lower() for line in mapping] + ["class 4"]
        rows = parquet_rows(model, f"mlp_{last}", image)
        for token, label in ((2, "register"), (3 + 5, expected_labels(run, model, image)[8])):
            info = browser.evaluate(
                f"document.querySelector('.token[data-token=\"{token}\"]')"
                ".dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
                "document.getElementById('token-info').textContent"
            )
            assert f"token {token} " in info and f"label: {label}" in info
            assert f": {rows['rank'][token]} of {NUM_CLASSES} (0 = top-1)" in info
            assert "top-5: " + ", ".join(names[c] for c in rows["top5"][token]) in info

        # Top-1 colouring: the legend lists the top-1 classes on screen with their counts.
        browser.evaluate("document.querySelector('input[name=colour][value=top1]').click()")
        legend = browser.evaluate("[...document.querySelectorAll('#legend li')].map((li) => Number(li.dataset.class))")
        assert sorted(legend) == sorted({top[0] for top in rows["top5"]})
        browser.evaluate("document.querySelector('input[name=colour][value=identifiability]').click()")
        ARTIFACTS.mkdir(exist_ok=True)
        browser.screenshot(ARTIFACTS / "explorer_last_block.png")
        print(f"screenshot: {ARTIFACTS / 'explorer_last_block.png'}")
        assert browser.errors() == []
    finally:
        browser.close()


INJECTED = "<!--<script>document.title = 'injected'</script>"


def test_page_with_markup_in_names_runs_no_injected_script(run, tmp_path):
    """A class name opening an HTML comment and a script, and a display name closing the data's
    script element, stay text: no injected script runs and the page still works."""
    executable = find_browser()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI installs chromium (.ci/run), but no Chromium is on PATH")
        pytest.skip("no Chromium on PATH (apt-get install chromium)")
    images = tmp_path / "images"
    shutil.copytree(run.images, images)
    mapping = images / "LOC_synset_mapping.txt"
    lines = mapping.read_text().splitlines()
    wnid = lines[0].split(" ", 1)[0]
    lines[0] = f"{wnid} {INJECTED} tench"
    mapping.write_text("\n".join(lines) + "\n")
    model = {**run.models["registers"], "display_name": "</script><script>document.title = 'injected'</script>"}
    page = tmp_path / "page.html"
    pages.explorer_page(model, PREPROCESSING, run.root / "stimuli.parquet", images, run.labels, SETTINGS, page)
    browser = Browser(executable, tmp_path / "profile")
    try:
        browser.open(page.as_uri())
        assert browser.errors() == []
        assert browser.evaluate("document.title") != "injected"
        assert model["display_name"] in browser.evaluate("document.title")
        assert browser.evaluate("document.querySelectorAll('#image-select option').length") == 12
        # The first class's name is shown as the text it is, in the token details.
        first = int(run.stimuli.index[run.stimuli["wnid"] == wnid][0])
        option = [
            entry["id"]
            for entry in pages.page_data(
                model, PREPROCESSING, run.root / "stimuli.parquet", images, run.labels, SETTINGS
            )["images"]
        ].index(first)
        browser.evaluate(
            f"const s = document.getElementById('image-select'); s.value = '{option}';"
            "s.dispatchEvent(new Event('change', {bubbles: true}))"
        )
        info = browser.evaluate(
            "document.querySelector('.token[data-token=\"0\"]')"
            ".dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));"
            "document.getElementById('token-info').textContent"
        )
        assert f"{INJECTED} tench" in info
    finally:
        browser.close()
