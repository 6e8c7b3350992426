"""The weight check against values computed by brute force (the forward written out, ranks from
a stable sort): the right weights pass; another seed or another model's preprocessing stop with
a message that names the expected and the found values. Also the tutorial's cls-logits figure."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from class_embedding.errors import InputError
from class_embedding.extraction import weight_check
from class_embedding.figures import tutorial_figures
from class_embedding.models import preprocessing

NUM_CLASSES = 10
TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": NUM_CLASSES}
SQUASH = {"resize": [32, 32], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}
# Another model's preprocessing: the DeiT processor's (square resize, centre crop, ImageNet statistics).
DEIT_LIKE = {
    "resize": [36, 36],
    "crop": 32,
    "interpolation": "bicubic",
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
}
CLASS = 3
TOLERANCES = {"logit_tolerance": 5e-4, "rank_tolerance": 0}  # the schema's defaults


def spec(preprocessing=SQUASH):
    return {"display_name": "tiny", "dataset": "micro", "arch": "vit_base_patch16_224", "kwargs": TINY,
            "num_blocks": 2, "token_grid": 4, "class_token": True, "num_classes": NUM_CLASSES,
            "weights": {"source": "timm", "tag": "tiny.seed0"}, "preprocessing": preprocessing}  # fmt: skip


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A small JPEG written here (the tutorial's images cannot be downloaded on this machine)."""
    path = tmp_path_factory.mktemp("sample") / "sample.JPEG"
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(40, 52, 3), dtype=np.uint8)
    pixels[10:30, 12:40] = [220, 40, 30]  # an object, so the image is not pure noise
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)
    return weight_check.SampleImage("sample", path, CLASS)


def brute_force_states(model, image):
    """Every layer's states (1, N, D), the forward written out without hooks."""
    x = model._pos_embed(model.patch_embed(image[None]))
    states = {}
    for b, block in enumerate(model.blocks):
        states[f"attn_{b}"] = block.attn(block.norm1(x))
        x = x + states[f"attn_{b}"]
        states[f"mlp_{b}"] = block.mlp(block.norm2(x))
        x = x + states[f"mlp_{b}"]
        states[f"hs_{b}"] = x
    return states


def brute_force_values(model, image, class_index, tokens=5):
    """Expected values as a config would give them: logit, rank (position in a stable descending
    sort) and top-5 of the class for the first ``tokens`` tokens of every layer."""
    expected = {"image": "sample", **TOLERANCES, "logits": {}, "ranks": {}, "top_classes": {}}
    with torch.no_grad():
        for layer, state in brute_force_states(model, image).items():
            logits = model.head(model.norm(state))[0, :tokens].double().numpy()
            order = np.argsort(-logits, axis=-1, kind="stable")
            expected["logits"][layer] = [round(float(v), 4) for v in logits[:, class_index]]
            expected["ranks"][layer] = [int(np.flatnonzero(row == class_index)[0]) for row in order]
            expected["top_classes"][layer] = [[int(c) for c in row[:5]] for row in order]
    return expected


@pytest.fixture(scope="module")
def model(scrambled_vit):
    return scrambled_vit(seed=0, **TINY)


@pytest.fixture(scope="module")
def expected(model, sample):
    image = preprocessing.Preprocessing(SQUASH)(preprocessing.load_image(sample.path))
    return brute_force_values(model, image, CLASS)


def test_matching_model_passes_and_reports_every_value(model, sample, expected):
    report = weight_check.check_weights(model, "tiny", spec(), expected, sample)
    assert report["model"] == "tiny" and report["class_index"] == CLASS
    assert len(report["compared"]) == 3 * 6 * 5  # three kinds × six layers × five tokens
    assert all(entry["ok"] for entry in report["compared"])
    ranks = [e["found"] for e in report["compared"] if e["kind"] == "ranks" and e["layer"] == "hs_1"]
    assert ranks == expected["ranks"]["hs_1"]
    assert len({tuple(e["found"]) for e in report["compared"] if e["kind"] == "top_classes"}) > 1


def test_another_seed_fails_naming_expected_and_found(scrambled_vit, sample, expected):
    other = scrambled_vit(seed=1, **TINY)
    with pytest.raises(InputError) as error:
        weight_check.check_weights(other, "tiny", spec(), expected, sample)
    message = str(error.value)
    image = preprocessing.Preprocessing(SQUASH)(preprocessing.load_image(sample.path))
    found = brute_force_values(other, image, CLASS)
    # The first value in forward order: the attention update of block 0.
    expected_logit, found_logit = expected["logits"]["attn_0"][0], found["logits"]["attn_0"][0]
    assert (
        f"logit of class {CLASS} at attn_0 token 0: expected {expected_logit} (± 0.0005), found {found_logit:.4f}"
        in message
    )
    assert "weight check of model 'tiny' failed on sample image 'sample'" in message
    assert "models.tiny.weights: source timm, tag tiny.seed0" in message and "models.tiny.preprocessing" in message
    assert "Every difference is small" not in message  # other weights move values far


def test_rank_tolerance_and_the_hint_for_small_differences(model, sample, expected):
    right = expected["ranks"]["hs_1"][0]
    off_by_one = {"image": "sample", **TOLERANCES, "ranks": {"hs_1": [right + 1 if right == 0 else right - 1]}}
    with pytest.raises(InputError, match="Every difference is small") as error:
        weight_check.check_weights(model, "tiny", spec(), off_by_one, sample)
    assert "expected_values.tiny.logit_tolerance / rank_tolerance" in str(error.value)
    report = weight_check.check_weights(model, "tiny", spec(), {**off_by_one, "rank_tolerance": 1}, sample)
    assert report["compared"][0]["ok"] and report["compared"][0]["found"] == right


def test_another_models_preprocessing_fails(model, sample, expected):
    ranks_only = {"image": "sample", **TOLERANCES, "ranks": expected["ranks"]}
    with pytest.raises(InputError) as error:
        weight_check.check_weights(model, "tiny", spec(DEIT_LIKE), ranks_only, sample)
    message = str(error.value)
    assert "expected" in message and "found" in message and "'crop': 32" in message
    image = preprocessing.Preprocessing(DEIT_LIKE)(preprocessing.load_image(sample.path))
    found = brute_force_values(model, image, CLASS)
    differing = [
        (layer, token) for layer, ranks in expected["ranks"].items() for token, rank in enumerate(ranks)
        if found["ranks"][layer][token] != rank
    ]  # fmt: skip
    assert differing
    for layer, token in differing[:3]:
        wanted, got = expected["ranks"][layer][token], found["ranks"][layer][token]
        assert f"rank of class {CLASS} at {layer} token {token}: expected {wanted}, found {got}" in message


def test_logit_tolerance_is_absolute(model, sample, expected):
    within = {**expected, "logits": {"hs_1": [expected["logits"]["hs_1"][0] + 4e-4]}}
    weight_check.check_weights(model, "tiny", spec(), within, sample)
    beyond = {**expected, "logits": {"hs_1": [expected["logits"]["hs_1"][0] + 1e-3]}}
    with pytest.raises(InputError, match=r"1 of \d+ values differ"):
        weight_check.check_weights(model, "tiny", spec(), beyond, sample)


def test_a_prefix_of_the_leading_classes_is_compared(model, sample, expected):
    top1 = {"image": "sample", **TOLERANCES, "top_classes": {"hs_0": [[expected["top_classes"]["hs_0"][0][0]]]}}
    report = weight_check.check_weights(model, "tiny", spec(), top1, sample)
    assert len(report["compared"]) == 1 and report["compared"][0]["ok"]
    wrong = (expected["top_classes"]["hs_0"][0][0] + 1) % NUM_CLASSES
    with pytest.raises(InputError, match=rf"leading classes at hs_0 token 0: expected \[{wrong}\], found"):
        weight_check.check_weights(model, "tiny", spec(), {**top1, "top_classes": {"hs_0": [[wrong]]}}, sample)


def test_layers_and_tokens_beyond_the_model_name_the_key(model, sample):
    with pytest.raises(InputError, match=r"expected_values\.tiny\.ranks\.hs_5: model 'tiny' has no layer hs_5"):
        weight_check.check_weights(
            model, "tiny", spec(), {"image": "sample", **TOLERANCES, "ranks": {"hs_5": [0]}}, sample
        )
    with pytest.raises(
        InputError, match=r"expected_values\.tiny\.ranks\.hs_0: 18 values but model 'tiny' has 17 tokens"
    ):
        weight_check.check_weights(
            model, "tiny", spec(), {"image": "sample", **TOLERANCES, "ranks": {"hs_0": [0] * 18}}, sample
        )


def test_stimulus_sample_takes_the_stimulus_file_and_class(tmp_path):
    table = pd.DataFrame({"image": [0, 1, 2], "wnid": ["n00000001", "n00000002", "n00000002"],
                          "class_index": [4, 7, 7], "file": ["validation/a.JPEG", "validation/b.JPEG", "validation/c.JPEG"],
                          "img_index": [0, 0, 1]})  # fmt: skip
    stimuli = tmp_path / "stimuli.parquet"
    table.to_parquet(stimuli)
    entry = {"stimulus": {"dataset": "demo", "wnid": "n00000002", "image": 1}}
    sample = weight_check.resolve_sample("s", entry, stimuli=stimuli, images=tmp_path / "images")
    assert sample.path == tmp_path / "images" / "validation/c.JPEG" and sample.class_index == 7
    with pytest.raises(InputError, match=r"sample_images\.s\.class_index is 3 but the stimulus's class is 7"):
        weight_check.resolve_sample("s", {**entry, "class_index": 3}, stimuli=stimuli, images=tmp_path)
    with pytest.raises(InputError, match=r"no stimulus is image 5 of class folder n00000002"):
        weight_check.resolve_sample(
            "s", {"stimulus": {**entry["stimulus"], "image": 5}}, stimuli=stimuli, images=tmp_path
        )


def test_tutorial_cls_logits_are_the_blocks_class_token_projection(model, sample, tmp_path):
    output = SimpleNamespace(pdf=tmp_path / "f.pdf", png=tmp_path / "f.png", data=tmp_path / "f.csv")
    tutorial_figures.fig_tutorial_cls_logits(model, "tiny", spec(), sample, 0, "Class index", output)
    data = pd.read_csv(output.data)
    image = preprocessing.Preprocessing(SQUASH)(preprocessing.load_image(sample.path))
    with torch.no_grad():
        state = brute_force_states(model, image)["hs_0"]
        logits = model.head(model.norm(state))[0, 0].double().numpy()
    assert data["class_index"].tolist() == list(range(NUM_CLASSES))
    np.testing.assert_allclose(data["logit"], logits, rtol=1e-5, atol=1e-5)
    assert data["rank"].tolist() == list(np.argsort(np.argsort(-logits, kind="stable"), kind="stable"))
    assert output.pdf.stat().st_size > 1000 and output.png.stat().st_size > 1000
