"""The refined DeiT release (deit_base_trm.pth) through the real download and conversion rules.

No copy of the release can be downloaded here. Its layout is known exactly from the code that
writes and reads it (tests/data/deit_base_trm.layout.json, copied from the project's record of
the upstream files): top-level keys epoch, arch, state_dict, best_acc1, optimizer; 240 weights of
the full-size model under state_dict, 11 intermediate "transformerheads.*" among them. The fake
below has exactly that layout with random values; its optimizer state is a real SGD state dict,
smaller than the release's (momentum for a few tensors, not all)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_checkpoint_safety import micro_config, run_workflow

REPO = Path(__file__).resolve().parents[1]
LAYOUT = json.loads((REPO / "tests" / "data" / "deit_base_trm.layout.json").read_text())

pytestmark = pytest.mark.workflow


def fake_release(path: Path, drop: str | None = None, key_prefix: str = "") -> dict:
    generator = torch.Generator().manual_seed(0)
    weights = {
        name: 0.02 * torch.randn(shape, generator=generator) for name, shape in LAYOUT["state_dict_shapes"].items()
    }
    weights = {name: (value.abs() if "running_var" in name else value) for name, value in weights.items()}
    weights["transformerheads.0.bn.num_batches_tracked"] = torch.tensor(5005)
    state = {f"{key_prefix}{k}": v for k, v in weights.items() if k != drop}
    momentum = [torch.nn.Parameter(weights[k].clone()) for k in ("head.weight", "head.bias")]
    optimizer = torch.optim.SGD(momentum, lr=0.01, momentum=0.9, weight_decay=1e-4)
    sum(p.sum() for p in momentum).backward()
    optimizer.step()
    checkpoint = {
        "epoch": 20,
        "arch": "deit_base_patch16_224",
        "state_dict": state,
        "best_acc1": torch.tensor(81.2),
        "optimizer": optimizer.state_dict(),
    }
    assert list(checkpoint) == LAYOUT["top_level_keys"]
    torch.save(checkpoint, path)
    return weights


def deit_entry(url: str) -> dict:
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["models"]["deit_ensemble_16"]
    return {**paper, "dataset": "micro", "random_twin": False, "weights": {**paper["weights"], "url": url}}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("deit")
    weights = fake_release(root / "deit_base_trm.pth")
    fake_release(root / "missing.pth", drop="blocks.3.mlp.fc1.weight")
    fake_release(root / "ddp.pth", key_prefix="module.")
    models = {
        name: deit_entry((root / file).as_uri())
        for name, file in (("deit", "deit_base_trm.pth"), ("deit_missing", "missing.pth"), ("deit_ddp", "ddp.pth"))
    }
    work = root / "work"
    targets = [f"results/checkpoints/{name}.pt" for name in models]
    result = run_workflow(micro_config(models), work, *targets, timeout=1200)
    return work / "results", result, weights


def test_the_release_layout_loads_with_weights_only(converted):
    results, result, weights = converted
    assert (results / "checkpoints" / "deit.pt").is_file(), result.stderr[-3000:]
    state = torch.load(results / "checkpoints" / "deit.pt", weights_only=True)
    backbone = {k: v for k, v in weights.items() if not k.startswith("transformerheads.")}
    assert len(weights) == 240 and len(backbone) == 152
    assert set(state) == set(backbone)
    assert all(torch.equal(state[k], v) for k, v in backbone.items())
    log = (results / "logs" / "convert_checkpoint" / "deit.log").read_text()
    assert "ignored 88 entries not in the model (transformerheads)" in log


def test_a_missing_backbone_weight_stops_naming_it(converted):
    results, result, _ = converted
    assert result.returncode != 0
    assert not (results / "checkpoints" / "deit_missing.pt").exists()
    log = (results / "logs" / "convert_checkpoint" / "deit_missing.log").read_text()
    assert "lacks 1 weights of model 'deit_missing' (blocks.3.mlp.fc1.weight)" in log


def test_module_prefixes_are_stripped(converted):
    results, _, weights = converted
    state = torch.load(results / "checkpoints" / "deit_ddp.pt", weights_only=True)
    assert torch.equal(state["blocks.3.mlp.fc1.weight"], weights["blocks.3.mlp.fc1.weight"])
