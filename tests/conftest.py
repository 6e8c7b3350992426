import os

import pytest
import timm
import torch
import workflow_runs

# Deterministic, small CPU work in every test.
torch.set_num_threads(min(2, os.cpu_count() or 1))

# pyproject.toml runs the tests on two xdist workers (-n 2 --dist loadgroup): each group below goes
# to one worker, which runs its module and session fixtures once. A test that reads the session's
# micro run is in the group "micro_run" (test_workflow.py and test_slurm.py); every other test is in
# the group of its module. Under xdist the groups with the slowest setups start first, in this
# order (their times are in docs/testing.md), so that no long one starts last.
SLOWEST_FIRST = (
    "test_examples.py",
    "micro_run",
    "test_prefix_workflow.py",
    "test_deit_release.py",
    "test_resume.py",
    "test_weight_check_workflow.py",
    "test_slurm.py",
    "test_preflight.py",
    "test_checkpoint_safety.py",
    "test_paper_workflow.py",
)


def xdist_group(item: pytest.Item) -> str:
    """The group of a test: its xdist_group mark, else "micro_run" for the tests that read the
    micro run (the slurm tests ask for it at run time, after checking for SLURM), else its module."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return mark.args[0] if mark.args else mark.kwargs.get("name", "default")
    if "micro_run" in item.fixturenames or item.get_closest_marker("slurm"):
        return "micro_run"
    return item.path.name


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(xdist_group(item)))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {group: i for i, group in enumerate(SLOWEST_FIRST)}
        items.sort(key=lambda item: rank.get(xdist_group(item), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def shared_model_checks(tmp_path_factory):
    """One cache of model-check verdicts for every workflow a test runs in its own directory
    (each would otherwise import torch and audit the same architectures at parse time)."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # one cache for all workers: their common folder
        root = root.parent
    cache = root / "model_checks.json"
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
    test_workflow.py and test_slurm.py read it (the same xdist group, so one worker runs it).
    On SLURM when a selected test is marked slurm and a SLURM answers: in a fresh copy, with
    the command the README documents (test_slurm.py). Otherwise locally through the API."""
    wants_slurm = any(item.get_closest_marker("slurm") for item in request.session.items)
    if wants_slurm and {"cpu", "gpu"} <= workflow_runs.slurm_partitions():
        workdir = workflow_runs.fresh_copy(tmp_path_factory.mktemp("micro_slurm") / "workflow")
        return workflow_runs.micro_run_on_slurm(workdir)
    return workflow_runs.micro_run_locally(tmp_path_factory.mktemp("micro"))
