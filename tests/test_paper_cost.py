"""benchmarks/paper_cost.py: the dry-run listing parsed, and each GPU rule's forwards and backwards
against hand-computed counts."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import paper_cost  # noqa: E402

MODEL = "vit_b_32"
CONFIG = {
    "stimuli": {"images_per_class": 5},
    "extraction": {"shard_size": None},
    "explainability": {"random_permutations": 10, "kept_step": 1},
    "probing": {"models": [MODEL]},
    "models": {MODEL: {"dataset": "imagenet_s", "weights": {"finetune": {"epochs": 3}}}},
}
B32 = {"blocks": 12, "tokens": 50, "image_tokens": 49, "dim": 768}
B16 = {"blocks": 12, "tokens": 197, "image_tokens": 196, "dim": 768}


def cost(rule, config=CONFIG, lens_ratio=1.25, **wildcards):
    return paper_cost.job_cost({"rule": rule, "wildcards": {"model": MODEL, **wildcards}}, config, B32, lens_ratio)


@pytest.mark.workflow
def test_dry_run_listing_gives_rules_wildcards_and_gpu_jobs():
    jobs = paper_cost.parse_dry_run((ROOT / "tests" / "data" / "paper_dry_run_excerpt.txt").read_text())
    assert jobs == [
        {"rule": "probe_stimuli", "wildcards": {"dataset": "imagenet_s"}, "gpu": False},
        {"rule": "finetune_cifar", "wildcards": {"model": "vit_cifar_16"}, "gpu": True},
        {"rule": "extract_shard", "wildcards": {"model": "deit_ensemble_16", "shard": "0"}, "gpu": True},
        {"rule": "stimuli", "wildcards": {"dataset": "cifar100"}, "gpu": False},  # a checkpoint
        {"rule": "tab_value_vector_classes", "wildcards": {}, "gpu": False},  # inside a group job
    ]


def test_counts_by_hand():
    stimuli = 910 * 5
    extraction = cost("extract_shard")
    assert (extraction["forwards"], extraction["forward_equivalents"]) == (stimuli, stimuli * 1.25)
    sharded = {**CONFIG, "extraction": {"shard_size": 1000}}
    assert cost("extract_shard", sharded, shard="4")["forwards"] == 550  # the last shard: 4000..4549
    assert cost("attn_perturbation")["forwards"] == stimuli
    maps = cost("explain_maps")
    assert (maps["forwards"], maps["backwards"], maps["forward_equivalents"]) == (9100, 9100, 27300)
    # 3 orderings × 2 directions + 10 permutations = 16 curves; n = 1..49 kept tokens of 49, each
    # forward on n + 1 of 50 tokens: (2 + 3 + ... + 50) / 50 = 1274 / 50 = 25.48 full forwards per curve.
    assert cost("explain_perturbation")["forwards"] == pytest.approx(16 * 25.48 * stimuli)
    without_probes = {**CONFIG, "probing": {"models": []}}
    assert cost("explain_perturbation", without_probes)["forwards"] == pytest.approx(14 * 25.48 * stimuli)
    assert cost("linear_probes")["forwards"] == 9090 + stimuli
    finetune = cost("finetune_cifar")
    assert (finetune["forwards"], finetune["backwards"], finetune["forward_equivalents"]) == (150000, 150000, 450000)
    with pytest.raises(ValueError, match="no cost model"):
        cost("some_new_gpu_rule")


def test_models_weighed_by_transformer_flops():
    b16 = 12 * 197 * (24 * 768**2 + 4 * 197 * 768)
    b32 = 12 * 50 * (24 * 768**2 + 4 * 50 * 768)
    assert paper_cost.relative_flops(B32, B16) == pytest.approx(b32 / b16)
    assert paper_cost.model_shape({"arch": "vit_base_patch32_224"}) == B32
