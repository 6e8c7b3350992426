"""Model building, checkpoints, preprocessing and image loading: values and error messages."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from class_embedding.errors import InputError
from class_embedding.models import ModelSpec, building, checkpoints, preprocessing

SPEC = {
    "arch": "vit_base_patch16_224",
    "kwargs": {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 5},
    "num_blocks": 2,
    "token_grid": 4,
    "class_token": True,
    "num_classes": 5,
    "display_name": "Tiny",
    "dataset": "micro",
    "weights": {"source": "demo_training"},
    "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
}


def test_build_model_checks_declared_shape():
    model = building.build_model(SPEC, "tiny")
    assert len(model.blocks) == 2 and model.num_classes == 5
    with pytest.raises(InputError, match=r"models\.tiny\.num_blocks is 3"):
        building.build_model({**SPEC, "num_blocks": 3}, "tiny")
    with pytest.raises(InputError, match=r"models\.tiny\.arch: 'vit_nonexistent'"):
        building.build_model({**SPEC, "arch": "vit_nonexistent"}, "tiny")


def test_random_twins_are_seeded():
    first = building.random_model(SPEC, "tiny", seed=7).state_dict()
    again = building.random_model(SPEC, "tiny", seed=7).state_dict()
    other = building.random_model(SPEC, "tiny", seed=8).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["head.weight"], other["head.weight"])


def test_checkpoint_round_trip_and_mismatch(tmp_path):
    model = building.random_model(SPEC, "tiny", seed=1)
    path = tmp_path / "tiny.pt"
    checkpoints.save_checkpoint(model, path)
    loaded = checkpoints.load_checkpoint(building.build_model(SPEC, "tiny"), path, "tiny")
    assert torch.equal(loaded.head.weight, model.head.weight)
    wider = {**SPEC, "kwargs": {**SPEC["kwargs"], "embed_dim": 16}}
    with pytest.raises(InputError, match=r"tiny\.pt does not match the architecture of model 'tiny'"):
        checkpoints.load_checkpoint(building.build_model(wider, "tiny"), path, "tiny")
    (tmp_path / "broken.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="broken.pt cannot be read"):
        checkpoints.load_checkpoint(building.build_model(SPEC, "tiny"), tmp_path / "broken.pt", "tiny")
    with pytest.raises(InputError, match="not found"):
        checkpoints.load_checkpoint(building.build_model(SPEC, "tiny"), tmp_path / "absent.pt", "tiny")
    assert not list(tmp_path.glob("*.partial"))


def test_squash_preprocessing_matches_hand_computed_pixel():
    # A 4×2 (W×H) image squashed to 2×2 with PIL's bilinear filter, as the paper's HF processor
    # does: when halving, a triangle of radius 2 source pixels weights the columns at distance
    # 0.5, 0.5 and 1.5 from the output centre by 0.75, 0.75 and 0.25.
    pixels = np.array([[[0, 0, 0], [100, 50, 0], [200, 0, 0], [250, 0, 50]]] * 2, np.uint8)
    image = Image.fromarray(pixels)
    prep = preprocessing.Preprocessing({"resize": [2, 2], "mean": [0.5] * 3, "std": [0.5] * 3})
    out = prep(image)
    assert out.shape == (3, 2, 2)
    red = np.array([(0.75 * 0 + 0.75 * 100 + 0.25 * 200), (0.25 * 100 + 0.75 * 200 + 0.75 * 250)]) / 1.75
    expected_red = (np.round(red) / 255 - 0.5) / 0.5
    assert out[0, 0].numpy() == pytest.approx(expected_red, abs=1e-6)


def test_shorter_side_resize_and_centre_crop():
    image = Image.fromarray(np.arange(8 * 16 * 3, dtype=np.uint8).reshape(8, 16, 3))
    prep = preprocessing.Preprocessing({"resize": 4, "crop": 4, "mean": [0, 0, 0], "std": [1, 1, 1]})
    out = prep(image)
    assert out.shape == (3, 4, 4)
    resized = np.asarray(image.resize((8, 4), Image.Resampling.BILINEAR), np.float32) / 255
    assert out.numpy() == pytest.approx(resized[:, 2:6].transpose(2, 0, 1))


def test_corrupt_and_missing_images_name_the_file(tmp_path):
    bad = tmp_path / "ILSVRC2012_val_00000001.JPEG"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(InputError, match="ILSVRC2012_val_00000001.JPEG is corrupt"):
        preprocessing.load_image(bad)
    with pytest.raises(InputError, match="absent.JPEG not found"):
        preprocessing.load_image(tmp_path / "absent.JPEG")


def test_model_spec_from_params_reads_a_config_entry_and_names_what_is_wrong():
    spec = ModelSpec.from_params({**SPEC, "random_twin": False}, "tiny")
    assert (spec.name, spec.arch, spec.num_blocks, spec.block_group, spec.twin_of) == ("tiny", SPEC["arch"], 2, 1, None)
    assert ModelSpec.from_params(spec) is spec
    twin = ModelSpec.from_params({**SPEC, "name": "tiny_random", "twin_of": "tiny"}, "ignored")
    assert (twin.name, twin.twin_of) == ("tiny_random", "tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.arch = "other"
    with pytest.raises(InputError, match=r"models\.tiny: unknown keys \['colour'\]"):
        ModelSpec.from_params({**SPEC, "colour": "red"}, "tiny")
    missing = {key: value for key, value in SPEC.items() if key != "weights"}
    with pytest.raises(InputError, match=r"models\.tiny: .*weights"):
        ModelSpec.from_params(missing, "tiny")


def test_model_spec_needs_no_torch():
    code = "import sys; from class_embedding.models import ModelSpec; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1] / "workflow_scripts")


def test_equal_weights_give_byte_identical_checkpoints(tmp_path):
    """Checkpoint hashes end up in every table's metadata: equal weights must hash equally."""
    model = building.random_model(SPEC, "tiny", seed=1)
    checkpoints.save_checkpoint(model, tmp_path / "a.pt")
    checkpoints.save_checkpoint(model, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


@pytest.mark.parametrize(
    "spec",
    [{"resize": [16, 64]}, {"resize": [32, 32], "crop": 24}, {"resize": 40, "crop": 32}, {"resize": 32}],
)
def test_input_size_is_the_size_of_the_preprocessed_images(spec):
    spec = {**spec, "mean": [0.5] * 3, "std": [0.5] * 3}
    prep = preprocessing.Preprocessing(spec)
    sizes = {tuple(prep(Image.new("RGB", (w, h))).shape[1:]) for w, h in [(50, 30), (30, 50), (40, 40)]}
    expected = preprocessing.input_size(spec)
    # One size for every image, the helper's; None where the aspect ratio sets it.
    assert sizes == {expected} if expected is not None else len(sizes) > 1
