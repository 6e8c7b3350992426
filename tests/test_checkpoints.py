"""Checkpoints in each real format, written here, loaded into small timm models of the same family
and audited with the class-embedding lens: timm state dicts (through timm's own loading), the
DeiT refinement release (weights under "model" plus intermediate heads), the CIFAR-100 model
(keys prefixed "model.")."""

import pytest
import torch

from class_embedding.errors import InputError
from class_embedding.extraction import lens, model_audit
from class_embedding.models import building, checkpoints

TINY = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2}


def spec(arch, num_classes=10, **extra):
    return {
        "arch": arch,
        "kwargs": {**TINY, "num_classes": num_classes},
        "num_blocks": 2,
        "token_grid": 4,
        "class_token": arch != "vit_base_patch16_rpn_224",
        "num_classes": num_classes,
        "display_name": "Tiny",
        "dataset": "micro",
        "weights": {"source": "demo_training"},
        "preprocessing": {"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3},
        **extra,
    }


def trained_like(model_spec, seed):
    """A model with non-default weights everywhere (norm affines and biases included)."""
    model = building.random_model(model_spec, "source", seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def assert_same_weights(loaded, source):
    expected = source.state_dict()
    assert set(loaded.state_dict()) == set(expected)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize(
    "arch, tag, final_norm",
    [
        ("vit_base_patch16_224", "vit_base_patch16_224.augreg_in21k_ft_in1k", "norm"),
        ("vit_base_patch16_224_miil", "vit_base_patch16_224_miil.in21k_ft_in1k", "norm"),
        ("vit_base_patch16_rpn_224", "vit_base_patch16_rpn_224.sw_in1k", "fc_norm"),
    ],
)
def test_timm_state_dict_through_timms_loader(tmp_path, arch, tag, final_norm):
    model_spec = spec(arch, num_classes=1000, final_norm=final_norm)
    source = trained_like(model_spec, seed=1)
    path = tmp_path / "pytorch_model.bin"
    torch.save(source.state_dict(), path)
    loaded = building.timm_pretrained(model_spec, "m", tag, cache_dir=tmp_path / "cache", file=path)
    assert_same_weights(loaded, source)
    model_audit.audit(loaded, "m")
    assert building.final_norm(loaded) == final_norm
    # The paper's MIIL model has no qkv bias; the family is right when the keys agree.
    assert ("blocks.0.attn.qkv.bias" in loaded.state_dict()) == (arch == "vit_base_patch16_224")
    # A class count other than the weights' would make timm re-initialise the head: refused.
    other = {**model_spec, "kwargs": {**model_spec["kwargs"], "num_classes": 10}, "num_classes": 10}
    with pytest.raises(InputError, match=f"the weights {tag} have 1000 classes, the config 10"):
        building.timm_pretrained(other, "m", tag, cache_dir=tmp_path / "cache", file=path)


def test_timm_tag_must_be_explicit():
    with pytest.raises(InputError, match="names no pretrained tag"):
        building.timm_pretrained(spec("vit_base_patch16_224"), "m", "vit_base_patch16_224")


def test_deit_release_with_intermediate_heads(tmp_path):
    model_spec = spec("deit_base_patch16_224", num_classes=10, final_norm="norm")
    source = trained_like(model_spec, seed=2)
    state = dict(source.state_dict())
    # The refined DeiT's extra heads on intermediate blocks, and training state beside "model".
    for block in range(2):
        state[f"transformation.{block}.weight"] = torch.randn(10, 32)
        state[f"head_{block}.weight"] = torch.randn(10, 32)
    path = tmp_path / "deit_base_trm.pth"
    torch.save({"model": state, "epoch": 299, "optimizer": {"lr": 0.1}}, path)
    raw = checkpoints.read_state_dict(path, "deit", state_dict_key="model")
    loaded = checkpoints.load_backbone(building.build_model(model_spec, "deit"), raw, "deit", str(path))
    assert_same_weights(loaded, source)
    model_audit.audit(loaded, "deit")

    del state["blocks.1.mlp.fc2.weight"], state["norm.bias"]
    torch.save({"model": state}, path)
    raw = checkpoints.read_state_dict(path, "deit", state_dict_key="model")
    with pytest.raises(
        InputError, match=r"lacks 2 weights of model 'deit' \(blocks\.1\.mlp\.fc2\.weight, norm\.bias\)"
    ):
        checkpoints.load_backbone(building.build_model(model_spec, "deit"), raw, "deit", str(path))
    with pytest.raises(InputError, match="no 'state_dict' entry .*model"):
        checkpoints.read_state_dict(path, "deit", state_dict_key="state_dict")


def test_cifar_checkpoint_with_model_prefix(tmp_path):
    model_spec = spec("vit_base_patch16_224", num_classes=100, final_norm="norm")
    source = trained_like(model_spec, seed=3)
    path = tmp_path / "vit_base_patch16_224-CIFAR100.pt"
    torch.save({f"model.{k}": v for k, v in source.state_dict().items()}, path)
    raw = checkpoints.read_state_dict(path, "cifar", strip_prefix="model.")
    loaded = checkpoints.load_backbone(building.build_model(model_spec, "cifar"), raw, "cifar", str(path))
    assert_same_weights(loaded, source)
    assert loaded.head.weight.shape == (100, 32)
    model_audit.audit(loaded, "cifar")
    # Without stripping the prefix nothing matches: the error names the missing backbone keys.
    unstripped = checkpoints.read_state_dict(path, "cifar")
    with pytest.raises(InputError, match="lacks .* weights of model 'cifar' \\(cls_token, pos_embed"):
        checkpoints.load_backbone(building.build_model(model_spec, "cifar"), unstripped, "cifar", str(path))
    # A checkpoint of another size names the offending shapes.
    wide = {**model_spec, "kwargs": {**model_spec["kwargs"], "num_classes": 10}, "num_classes": 10}
    with pytest.raises(InputError, match=r"head\.weight \(100, 32\) vs \(10, 32\)"):
        checkpoints.load_backbone(building.build_model(wide, "cifar"), raw, "cifar", str(path))


def test_final_norm_is_checked_against_the_model():
    with pytest.raises(InputError, match=r"models\.gap\.final_norm is norm .* has fc_norm"):
        building.build_model(spec("vit_base_patch16_rpn_224", final_norm="norm"), "gap")


def test_audit_catches_a_model_whose_output_is_not_the_lens_projection():
    model = building.build_model(spec("vit_base_patch16_224"), "m")
    model_audit.audit(model, "m")
    original = model.forward_head
    model.forward_head = lambda x, pre_logits=False: original(x, pre_logits) + 1.0
    with pytest.raises(RuntimeError, match="lens audit failed for checkpoint of m"):
        model_audit.audit(model, "m")
    assert lens.has_class_token(model)


def test_cifar_fine_tuning_fallback_is_seeded_and_trains(tmp_path):
    from test_paper_data import write_cifar

    from class_embedding.data import cifar
    from class_embedding.models import building, preprocessing

    write_cifar(tmp_path)
    model_spec = spec("vit_base_patch16_224", num_classes=6)
    settings = {"epochs": 2, "batch_size": 4, "learning_rate": 1e-3, "weight_decay": 0.0}
    prep = preprocessing.Preprocessing({"resize": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3})
    runs = []
    for _ in range(2):
        start = building.random_model(model_spec, "cifar", seed=0)
        runs.append(
            cifar.finetune(start, tmp_path / "cifar-100-python", prep, settings, seed=4, device=torch.device("cpu"))
        )
    untouched = building.random_model(model_spec, "cifar", seed=0)
    assert not torch.equal(runs[0].head.weight, untouched.head.weight)
    assert all(torch.equal(a, b) for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()))
    assert not runs[0].training
    model_audit.audit(runs[0], "cifar")
