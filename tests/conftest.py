import os

import pytest
import timm
import torch
import workflow_runs

# Deterministic, small CPU work in every test.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def shared_model_checks(tmp_path_factory):
    """One cache of model-check verdicts for every workflow a test runs in its own directory
    (each would otherwise import torch and audit the same architectures at parse time)."""
    cache = tmp_path_factory.mktemp("model_checks") / "model_checks.json"
    os.environ["CLASS_EMBEDDING_MODEL_CHECKS"] = str(cache)
    yield cache
    os.environ.pop("CLASS_EMBEDDING_MODEL_CHECKS", None)


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def scrambled_vit():
    """Builds a small timm ViT with every parameter moved by ``scale`` · N(0, 1) away from timm's
    initialisation (post-norm scales near zero, tiny head), so attention is not uniform and
    logits are well separated: comparisons against brute force are then non-trivial."""

    def build(arch: str = "vit_base_patch16_224", scale: float = 0.5, seed: int = 0, **kwargs) -> torch.nn.Module:
        torch.manual_seed(seed)
        model = timm.create_model(arch, pretrained=False, **kwargs)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(scale * torch.randn_like(parameter))
        return model.eval()

    return build


@pytest.fixture(scope="session")
def micro_run(request, tmp_path_factory) -> workflow_runs.MicroRun:
    """The micro config end to end, once per session: a single figure first, then everything.
    test_workflow.py, test_slurm.py and test_querying.py read it.
    On SLURM when a selected test is marked slurm and a SLURM answers: in a fresh copy, with
    the command the README documents (test_slurm.py). Otherwise locally through the API."""
    wants_slurm = any(item.get_closest_marker("slurm") for item in request.session.items)
    if wants_slurm and {"cpu", "gpu"} <= workflow_runs.slurm_partitions():
        workdir = workflow_runs.fresh_copy(tmp_path_factory.mktemp("micro_slurm") / "workflow")
        return workflow_runs.micro_run_on_slurm(workdir)
    return workflow_runs.micro_run_locally(tmp_path_factory.mktemp("micro"))
