"""Snakemake as the tests run it: a child process of this Python (so the Snakemake and plugins the
tests import), on the repository's Snakefile unless told otherwise; or in this process through
the Snakemake API (:func:`run_api`). And the micro config end to end, once per test session
(:func:`micro_run`, the session fixture ``micro_run`` of conftest.py): on SLURM, with the command
the README documents, or locally through the API."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
MICRO = REPO / "tests" / "configs" / "micro.yaml"
# What the micro run builds first, alone: test_workflow.py checks that it built only its upstream.
SINGLE_FIGURE = "results/figures/fig_change_rate.pdf"
SLURM_TIMEOUT_S = 1800


def command(
    *args: str, configfiles: Sequence[Path] = (), workdir: Path | None = None, snakefile: Path | None = SNAKEFILE
) -> list[str]:
    """``python -m snakemake args --snakefile … --directory … --configfile …``. ``--configfile``
    comes last because it takes every value up to the next option; for the same reason a target in
    ``args`` must not follow an option with several values (``--quiet rules``)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        *(["--snakefile", str(snakefile)] if snakefile else []),
        *(["--directory", str(workdir)] if workdir else []),
        *(["--configfile", *map(str, configfiles)] if configfiles else []),
    ]


def snakemake(
    *args: str,
    configfiles: Sequence[Path] = (),
    workdir: Path | None = None,
    snakefile: Path | None = SNAKEFILE,
    timeout: float | None = 600,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """Runs :func:`command` to the end; its output is captured as text."""
    return subprocess.run(
        command(*args, configfiles=configfiles, workdir=workdir, snakefile=snakefile),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=check,
    )


def write_config(config: dict, path: Path) -> Path:
    """Writes ``config`` as YAML in its own key order (the order a user writes), folders included."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_api(workdir: Path, targets: Sequence[str] = (), config: Path = MICRO, dryrun: bool = False) -> None:
    """Run the workflow in ``workdir`` as ``snakemake --cores 2 [-n] --configfile config targets``,
    in this process through the Snakemake API (no profile applies)."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (
        ConfigSettings,
        DAGSettings,
        ExecutionSettings,
        OutputSettings,
        ResourceSettings,
    )

    with SnakemakeApi(OutputSettings(quiet=None)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(cores=2),
            config_settings=ConfigSettings(configfiles=[config]),
            snakefile=SNAKEFILE,
            workdir=workdir,
        )
        dag = workflow.dag(DAGSettings(targets=list(targets)))
        dag.execute_workflow(
            executor="dryrun" if dryrun else "local",
            execution_settings=ExecutionSettings(),
        )


def fresh_copy(destination: Path) -> Path:
    """The files git tracks (staged state included), links kept as links: what a clone holds."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip(f"not a git checkout, so no fresh copy can be made: {listed.stderr.strip()}")
    for name in filter(None, listed.stdout.split("\0")):
        source, target = REPO / name, destination / name
        if not os.path.lexists(source):  # deleted in the work tree, not yet committed
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    return destination


def slurm_partitions() -> set[str]:
    """Partitions with a usable node, or an empty set when no SLURM answers."""
    if not shutil.which("sinfo") or not shutil.which("sbatch"):
        return set()
    try:
        states = subprocess.run(["sinfo", "-h", "-o", "%R %T"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return set()
    return {
        line.split()[0]
        for line in states.stdout.splitlines()
        if len(line.split()) == 2 and re.match(r"idle|mix|alloc", line.split()[1])
    }


def documented_slurm_command() -> list[str]:
    """The SLURM command of the README, between its ``<!-- slurm-test-command -->`` markers."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- slurm-test-command -->\n```bash\n(.*?)```", readme, re.S).group(1)
    (line,) = [line for line in block.splitlines() if line.strip()]
    return shlex.split(line)


def job_fields(job_id: str) -> dict[str, str]:
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True)
    return dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)


def running_jobs() -> list[tuple[str, str, str]]:
    queue = subprocess.run(["squeue", "-h", "-o", "%i %T %k"], capture_output=True, text=True)
    return [tuple(line.split(maxsplit=2)) for line in queue.stdout.splitlines() if len(line.split()) == 3]


@dataclass
class MicroRun:
    """The micro config built in ``workdir``: :data:`SINGLE_FIGURE` first (``single_figure``
    lists the files under results/ it left), then everything. On SLURM, ``output`` is both
    runs' Snakemake log, ``jobs`` what scontrol says of every submitted job, and ``cancelled``
    the (job id, comment) of the extraction job cancelled while it ran."""

    workdir: Path
    single_figure: list[str]
    executor: str  # "slurm" or "local"
    returncode: int = 0
    output: str = ""
    jobs: dict[str, dict[str, str]] = field(default_factory=dict)
    cancelled: tuple[str, str] | None = None


def results_files(workdir: Path) -> list[str]:
    return sorted(str(p.relative_to(workdir)) for p in (workdir / "results").rglob("*") if p.is_file())


def micro_run_locally(workdir: Path) -> MicroRun:
    """Through the Snakemake API in this process (a failing job raises)."""
    run_api(workdir, [SINGLE_FIGURE])
    single_figure = results_files(workdir)
    run_api(workdir)
    return MicroRun(workdir, single_figure, "local")


def micro_run_on_slurm(workdir: Path) -> MicroRun:
    """In ``workdir``, a fresh copy of the repository, with the SLURM command the README
    documents: first with :data:`SINGLE_FIGURE` as its target, then as written. While they run,
    the first extraction job seen running is cancelled once (Snakemake must resubmit it)."""
    log_path = workdir / "snakemake.log"
    command = documented_slurm_command()
    cancelled, returncode, single_figure = None, 0, []
    deadline = time.monotonic() + SLURM_TIMEOUT_S
    # The target goes before the options: --configfile takes every value that follows it.
    for args in ([command[0], SINGLE_FIGURE, *command[1:]], command):
        with open(log_path, "a") as log:
            process = subprocess.Popen(args, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
            while process.poll() is None:
                if time.monotonic() > deadline:
                    process.kill()
                    pytest.fail(f"the SLURM runs took more than {SLURM_TIMEOUT_S} s; see {log_path}")
                if cancelled is None:
                    for job_id, state, comment in running_jobs():
                        if (
                            state == "RUNNING"
                            and comment.startswith("rule_extract_shard")
                            # not a job of another workflow on the same SLURM
                            and Path(job_fields(job_id).get("WorkDir", "")).resolve() == workdir.resolve()
                        ):
                            subprocess.run(["scancel", job_id], check=True)
                            cancelled = (job_id, comment)
                            break
                time.sleep(0.2)
        returncode = process.returncode
        if not single_figure:
            single_figure = results_files(workdir)
        if returncode != 0:
            break
    output = log_path.read_text()
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", output)
    jobs = {job_id: job_fields(job_id) for job_id in submitted}
    return MicroRun(workdir, single_figure, "slurm", returncode, output, jobs, cancelled)
