"""The static checks of the anchors, run by the test command (so CI runs them): ruff (lint and
format), snakefmt, and `snakemake --lint` for every shipped config (the paper's with its user
paths filled by dummies)."""

import subprocess
import sys
from pathlib import Path

import pytest
from test_paper_config import paper_copy
from workflow_runs import snakemake

REPO = Path(__file__).resolve().parents[1]


def run(*command: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [("ruff", "check", "."), ("ruff", "format", "--check", "."), ("snakefmt", "--check", "Snakefile", "rules")],
    ids=["ruff-check", "ruff-format", "snakefmt"],
)
def test_code_passes_the_linters(command):
    result = run(sys.executable, "-m", *command) if command[0] == "ruff" else run(*command)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-4000:]}{result.stderr[-2000:]}"


@pytest.mark.workflow
@pytest.mark.parametrize("config", ["config.yaml", "tests/configs/micro.yaml", "config/paper.yaml"])
def test_snakemake_lint_is_clean(config, tmp_path):
    configfile = paper_copy(tmp_path) if config == "config/paper.yaml" else REPO / config
    result = snakemake("--lint", configfiles=[configfile], snakefile=None, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Lints for" not in result.stdout, result.stdout[-4000:]
