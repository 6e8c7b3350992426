"""config/paper.yaml: the seven models as timm declares them, the complete paper DAG from a dry
run with dummy data paths, config errors naming the path, and the reproduction table."""

import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from workflow_runs import snakemake, write_config

from class_embedding.analyses import reproduction
from class_embedding.models import building

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
ORDER = ["vit_b_32", "vit_b_16", "vit_large_16", "vit_miil_16", "vit_cifar_16", "deit_ensemble_16", "vit_gap_16"]
TWINS = [f"{m}_random" for m in ORDER if m != "vit_miil_16"]


def test_seven_models_in_the_paper_order_with_explicit_tags():
    assert list(PAPER["models"]) == ORDER
    names = [spec["display_name"] for spec in PAPER["models"].values()]
    assert names == [
        "ViT-B/32",
        "ViT-B/16",
        "ViT-L/16",
        "ViT-B/16-MIIL",
        "ViT-B/16-CIFAR",
        "ViT-B/16-Refinement",
        "ViT-B/16-GAP",
    ]
    tags = {name: spec["weights"].get("tag") for name, spec in PAPER["models"].items()}
    assert tags["vit_b_16"] == "vit_base_patch16_224.augreg_in21k_ft_in1k"  # not timm's augreg2 default
    for name, tag in tags.items():
        if tag is not None:
            assert tag.split(".")[0] == PAPER["models"][name]["arch"] and "." in tag
    assert [m for m, spec in PAPER["models"].items() if spec["random_twin"]] == [m for m in ORDER if m != "vit_miil_16"]
    assert PAPER["models"]["vit_miil_16"]["random_baseline"] == "vit_b_16"
    assert PAPER["models"]["vit_large_16"]["block_group"] == 2
    assert set(PAPER["paper_reference"]) == {*ORDER, "vit_b_32_random", "vit_b_16_random"}


def test_value_vector_table_lists_the_papers_neurons():
    # Notebook 2's printout: hand-picked MLP neurons of block index 10 (docs/method.md §5).
    assert PAPER["memories"]["value_vectors"] == {
        "block_index": 10,
        "layer_type": "mlp",
        "neurons": {"vit_b_32": [4, 8, 10, 32, 33, 35, 40], "vit_b_16": [2, 7, 14, 18, 21, 24, 26]},
    }


def test_every_weight_tag_is_in_timms_registry_with_the_declared_classes():
    from timm.models import get_pretrained_cfg

    for name, spec in PAPER["models"].items():
        weights = spec["weights"]
        tag = weights.get("tag") or weights.get("finetune", {}).get("init_tag")
        if tag is None:
            continue
        cfg = get_pretrained_cfg(tag)
        assert cfg is not None and cfg.hf_hub_id == f"timm/{tag}", tag
        if "tag" in weights:
            assert cfg.num_classes == spec["num_classes"], name


@pytest.mark.parametrize("name", ORDER)
def test_declared_shapes_match_timm(name):
    spec = PAPER["models"][name]
    with torch.device("meta"):  # full-size architectures without allocating their weights
        model = building.build_model(spec, name)
    expected_tokens = spec["token_grid"] ** 2 + spec["class_token"]
    assert model.patch_embed.num_patches + (model.cls_token is not None) == expected_tokens
    assert building.final_norm(model) == spec["final_norm"]
    if name == "vit_miil_16" or name == "vit_gap_16":
        assert model.blocks[0].attn.qkv.bias is None  # qkv_bias=False in both (docs/method.md §1)


def paper_copy(tmp_path: Path, **edits) -> Path:
    """config/paper.yaml with its user paths pointed at dummy files written here."""
    text = (REPO / "config" / "paper.yaml").read_text()
    archive = tmp_path / "ILSVRC2012_img_val.tar"
    archive.write_bytes(b"")
    text = text.replace("/path/to/ILSVRC2012_img_val.tar", str(archive))
    config = yaml.safe_load(text)
    for key, value in edits.items():
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    return write_config(config, tmp_path / "paper.yaml")


def dry_run(tmp_path: Path, config: Path, *targets: str, quiet: bool = True) -> subprocess.CompletedProcess:
    quiet_flags = ["--quiet", "rules"] if quiet else []
    return snakemake("-n", *targets, *quiet_flags, configfiles=[config], workdir=tmp_path / "work", timeout=120)


def job_counts(output: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", output, flags=re.M)}


@pytest.mark.workflow
def test_dry_run_lists_the_complete_paper_dag(tmp_path):
    result = dry_run(tmp_path, paper_copy(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_counts(result.stdout + result.stderr)
    for model in ORDER + TWINS:
        assert jobs.get(f"merge_extraction_{model}") == 1, model
    assert "merge_extraction_vit_miil_16_random" not in jobs
    assert jobs["extract_shard"] == 13
    assert jobs["random_twin_checkpoint"] == 6
    assert jobs["fetch_timm_weights"] == 5  # B/32, B/16, L/16, MIIL, GAP
    assert jobs["download_checkpoint"] == 1 and jobs["convert_checkpoint"] == 1  # the DeiT release
    assert jobs["fetch_finetune_init"] == 1 and jobs["finetune_cifar"] == 1  # no CIFAR checkpoint given
    assert jobs["download"] == 6 and jobs["prepare_imagenet_s"] == 1 and jobs["prepare_cifar100"] == 1
    assert jobs["stimuli"] == 2
    assert jobs["fig_class_building"] == 7
    assert jobs["fig_context_identifiability"] == 6, "CIFAR has no segmentations"
    assert jobs["token_labels"] == 2  # grids 7 and 14 of ImageNet-S only
    # Tokens over their images for every trained model, CIFAR (no masks) included.
    assert jobs["fig_token_maps"] == 7 and jobs["explorer_page"] == 7 and jobs["explorer_index"] == 1
    # The tutorial's values checked on ViT-B/16 before its extraction; the tutorial's figures.
    assert jobs["weight_check"] == 1 and jobs["download_sample_image"] == 2
    assert jobs["fig_tutorial_cls_logits"] == 1 and jobs["fig_tutorial_heatmap"] == 1
    for target in (
        "fig_identifiability_evolution",
        "fig_identifiability_mean_evolution",
        "fig_change_rate",
        "fig_identifiability_hist",
        "tab_identifiability_rates",
        "tab_identifiability_random",
        "tab_reproduction_vs_paper",
        "fig_memory_compare",
        "tab_context_change_rate_diff",
    ):
        assert jobs.get(target) == 1, target


@pytest.mark.workflow
def test_value_vector_table_needs_only_the_models_with_chosen_neurons(tmp_path):
    result = dry_run(tmp_path, paper_copy(tmp_path), "tab_value_vector_classes")
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_counts(result.stdout + result.stderr)
    assert jobs["value_projections"] == 2 and jobs["tab_value_vector_classes"] == 1  # ViT-B/32 and B/16


@pytest.mark.workflow
def test_a_given_cifar_checkpoint_replaces_fine_tuning(tmp_path):
    checkpoint = tmp_path / "vit_base_patch16_224-CIFAR100.pt"
    checkpoint.write_bytes(b"")
    config = paper_copy(tmp_path, **{"models.vit_cifar_16.weights.path": str(checkpoint)})
    result = dry_run(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = job_counts(result.stdout + result.stderr)
    assert jobs["convert_checkpoint"] == 2 and "finetune_cifar" not in jobs


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "datasets.imagenet_s.imagenet_s.imagenet_val",
            "/nonexistent/val.tar",
            r"datasets\.imagenet_s\.imagenet_s\.imagenet_val: '/nonexistent/val\.tar' does not exist",
        ),
        (
            "models.vit_cifar_16.weights.path",
            "/nonexistent/cifar.pt",
            r"models\.vit_cifar_16\.weights\.path: checkpoint '/nonexistent/cifar\.pt' does not exist",
        ),
        (
            "models.vit_b_16.weights.tag",
            "vit_base_patch32_224.augreg_in21k_ft_in1k",
            r"not a tag of arch 'vit_base_patch16_224'",
        ),
        (
            "memories.value_vectors.neurons",
            {"vit_b_64": [1]},
            r"memories\.value_vectors\.neurons: 'vit_b_64' is not a trained model",
        ),
        (
            "memories.value_vectors.block_index",
            12,
            r"memories\.value_vectors\.block_index: 12 is outside vit_b_32's blocks 0\.\.11",
        ),
    ],
)
@pytest.mark.workflow
def test_config_errors_name_the_key(tmp_path, key, value, message):
    result = dry_run(tmp_path, paper_copy(tmp_path, **{key: value}))
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr), (result.stdout + result.stderr)[-2000:]
    assert not (tmp_path / "work" / "results").exists()


def test_schema_rejects_malformed_checksums_and_default_tags():
    import jsonschema

    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert not list(validator.iter_errors(PAPER))
    bad = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    bad["datasets"]["imagenet_s"]["imagenet_s"]["downloads"]["segmentation"]["checksum"] = "md5:123"
    bad["models"]["vit_b_16"]["weights"]["tag"] = "vit_base_patch16_224"  # timm's changing default
    paths = sorted(".".join(map(str, e.absolute_path)) for e in validator.iter_errors(bad))
    assert paths == ["datasets.imagenet_s.imagenet_s.downloads.segmentation.checksum", "models.vit_b_16.weights.tag"]


def rates(model, accuracy, pct_tokens, pct_images, pct_tokens_paper=None):
    return {
        "model": model,
        "display_name": model.upper(),
        "accuracy": accuracy,
        "pct_tokens": pct_tokens,
        "pct_images": pct_images,
        "pct_tokens_paper": pct_tokens if pct_tokens_paper is None else pct_tokens_paper,
        "pct_images_paper": pct_images,
    }


def test_reproduction_table_puts_ours_beside_the_paper():
    trained = pd.DataFrame(
        [rates("vit_b_32", 80.0, 61.0, 95.0), rates("vit_gap_16", 84.0, 52.5, 98.0, pct_tokens_paper=52.0)]
    )
    random = pd.DataFrame([{**rates("vit_b_32_random", 0.1, 0.05, 1.0), "trained_model": "vit_b_32"}])
    reference = {
        "vit_b_32": {"accuracy": 81.71, "pct_tokens": 60.726173, "pct_images": 95.58242},
        "vit_gap_16": {"accuracy": 84.13, "pct_tokens": 52.089043},
        "vit_b_32_random": {"pct_tokens": 0.066383, "pct_images": 1.274725},
    }
    table = reproduction.reproduction_table(trained, random, reference).set_index(["model", "metric"])
    assert table.loc[("vit_b_32", "accuracy"), "difference"] == pytest.approx(80.0 - 81.71)
    assert table.loc[("vit_b_32", "pct_tokens"), "paper"] == pytest.approx(60.726173)
    # GAP: ours in the paper's convention (token 0 dropped) against the paper; corrected beside it.
    assert table.loc[("vit_gap_16", "pct_tokens"), "ours"] == 52.0
    assert table.loc[("vit_gap_16", "pct_tokens"), "ours_corrected"] == 52.5
    assert table.loc[("vit_gap_16", "pct_tokens"), "difference"] == pytest.approx(52.0 - 52.089043)
    assert pd.isna(table.loc[("vit_gap_16", "pct_images"), "paper"])
    assert table.loc[("vit_b_32_random", "pct_images"), "difference"] == pytest.approx(1.0 - 1.274725)
    assert table.loc[("vit_b_32_random", "pct_images"), "trained_model"] == "vit_b_32"
    assert len(table) == 9
