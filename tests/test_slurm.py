"""The slurm profile (`snakemake --profile slurm`, the link slurm -> profiles/slurm).

Without SLURM: in a fresh copy of the repository the short profile name is found and plans the
demo's jobs; a missing executor plugin or missing SLURM commands stop the run with what to install.

On a real SLURM (tests/slurm/start-local-slurm.sh, marked slurm): the micro workflow runs with the
command the README documents, first with a single figure as its target, then as written (the
session's one micro run, conftest.py, which test_workflow.py reads too). While it runs, the first
extraction job is cancelled once: Snakemake must resubmit it with twice the memory and still
finish. Afterwards SLURM itself (scontrol) says what every job was given: GPU rules one GPU on the
gpu partition, the rest no GPU on the cpu partition.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from workflow_runs import documented_slurm_command as documented_command
from workflow_runs import fresh_copy, slurm_partitions, snakemake

REPO = Path(__file__).resolve().parents[1]


def require_slurm() -> None:
    missing = {"cpu", "gpu"} - slurm_partitions()
    if missing:
        message = (
            f"no SLURM with the partitions {sorted(missing)}: start one with "
            "tests/slurm/start-local-slurm.sh (as root) to run this test"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message + " (CI=true: .ci/run starts it, so this is a failure)")
        pytest.skip(message)


def gpu_rules() -> set[str]:
    """Rules whose jobs ask for a GPU, as Snakemake plans them for the demo (rules declare it
    through gpu_job() of rules/common.smk, some in loops, so the rule files are not parsed)."""
    with tempfile.TemporaryDirectory() as workdir:
        plan = snakemake("-n", configfiles=[REPO / "config.yaml"], workdir=workdir, timeout=300, check=True)
    names, rule = set(), None
    for line in (plan.stdout + plan.stderr).splitlines():
        if match := re.match(r"\s*(?:local)?(?:rule|checkpoint) (\w+):$", line):
            rule = match.group(1)
        elif rule and re.match(r"\s*resources: .*\bgpu=1\b", line):
            names.add(rule)
    return names


def no_user_profiles(tmp_path: Path) -> dict[str, str]:
    """An environment whose user and site Snakemake config directories are empty, so a profile
    name can only be found in the working directory."""
    (tmp_path / "xdg").mkdir()
    return {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CONFIG_DIRS": str(tmp_path / "xdg")}


def job_stats(output: str) -> dict[str, int]:
    """The first 'Job stats' table of a Snakemake run: rule -> job count."""
    table = output.split("Job stats:\n", 1)[1].split("\n\n", 1)[0]
    rows = [line.split() for line in table.splitlines()[2:]]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2}


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return fresh_copy(tmp_path_factory.mktemp("fresh") / "workflow")


@pytest.mark.workflow
def test_short_profile_name_plans_the_demo_in_a_fresh_copy(workflow_copy, tmp_path):
    env = no_user_profiles(tmp_path)
    assert (workflow_copy / "slurm").is_symlink(), "the link slurm -> profiles/slurm is not tracked by git"

    def dry_run(*profile: str) -> str:
        run = snakemake(*profile, "-n", snakefile=None, cwd=workflow_copy, env=env, timeout=300)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        return run.stdout + run.stderr

    local, short, long = dry_run(), dry_run("--profile", "slurm"), dry_run("--profile", "profiles/slurm")
    assert "Using profiles slurm and workflow specific profile profiles/default" in short
    plan = job_stats(local)
    assert {"demo_dataset", "train_demo_model", "extract_shard", "all"} <= set(plan) and plan["all"] == 1
    assert job_stats(short) == job_stats(long) == plan
    # Jobs that ask for no resources get the profile's default-resources at attempt 1.
    bare = len(re.findall(r"^\s+resources: tmpdir=\S+$", local, re.M))
    assert bare >= 10
    for output in (short, long):
        defaults = re.findall(r"^\s+resources: .*\bmem_mb=2000,.*\bruntime=30$", output, re.M)
        assert len(defaults) == bare


@pytest.mark.workflow
def test_missing_executor_plugin_says_what_to_install(workflow_copy, tmp_path):
    """Snakemake finds executor plugins by scanning installed modules; hiding the module from that
    scan and from imports is what an environment without the plugin looks like."""
    hide_plugin = (
        "import pkgutil, sys; from snakemake.cli import main; "
        "plugin = 'snakemake_executor_plugin_slurm'; scan = pkgutil.iter_modules; "
        "pkgutil.iter_modules = lambda *a, **k: [m for m in scan(*a, **k) if m.name != plugin]; "
        "sys.modules[plugin] = None; sys.argv[0] = 'snakemake'; main()"
    )
    run = subprocess.run(
        [sys.executable, "-c", hide_plugin, "--profile", "slurm", "-n"],
        cwd=workflow_copy,
        env=no_user_profiles(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode != 0
    last_line = run.stderr.strip().splitlines()[-1]
    assert "SLURM executor plugin, which is not installed" in last_line, run.stderr[-2000:]
    assert "pip install snakemake-executor-plugin-slurm" in last_line


@pytest.mark.workflow
def test_missing_slurm_commands_stop_the_run_before_anything_runs(tmp_path):
    """A login node without SLURM's client commands: the run stops once, before any job, naming
    what is missing and what to install (instead of one 'No such file' per job)."""
    tools = tmp_path / "bin"  # the shell tools Snakemake and the plugin call, and no SLURM
    tools.mkdir()
    for tool in filter(shutil.which, ("which", "bash", "sh")):
        (tools / tool).symlink_to(shutil.which(tool))
    path = os.pathsep.join([str(Path(sys.executable).parent), str(tools)])
    assert not any(shutil.which(command, path=path) for command in ("sbatch", "squeue", "scancel", "sinfo"))
    workdir = fresh_copy(tmp_path / "workflow")
    run = snakemake(
        "--profile",
        "slurm",
        configfiles=[Path("tests/configs/micro.yaml")],
        snakefile=None,
        cwd=workdir,
        env={**no_user_profiles(tmp_path), "PATH": path},
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "sbatch, squeue, scancel, sinfo are not on PATH" in output, output[-3000:]
    assert "apt install slurm-client" in output
    assert "Select jobs to execute" not in output and not (workdir / "results").exists()


@pytest.fixture(scope="module")
def slurm_run(request):
    """The session's micro run (conftest.py), which runs on SLURM when a slurm test is selected:
    the documented command with a single figure as its target, then as written."""
    require_slurm()
    run = request.getfixturevalue("micro_run")
    if run.executor != "slurm":
        pytest.fail("the session's micro run did not run on SLURM (no SLURM answered when it started)")
    return {
        "workdir": run.workdir,
        "returncode": run.returncode,
        "output": run.output,
        "jobs": run.jobs,
        "cancelled": run.cancelled,
    }


def test_documented_command_runs_the_micro_config_through_the_profile():
    command = documented_command()
    assert command[:3] == ["snakemake", "--profile", "slurm"]
    assert "tests/configs/micro.yaml" in command


@pytest.mark.slurm
def test_micro_workflow_finishes_on_slurm(slurm_run):
    assert slurm_run["returncode"] == 0, slurm_run["output"][-3000:]
    results = slurm_run["workdir"] / "results"
    assert (results / "tables/tab_identifiability_rates.csv").stat().st_size > 0
    figures = {p.name for p in (results / "figures").glob("*.pdf")}
    assert {"fig_change_rate.pdf", "fig_identifiability_evolution.pdf", "fig_class_building_micro_cls.pdf"} <= figures
    dry = subprocess.run(
        [*documented_command(), "-n"], cwd=slurm_run["workdir"], capture_output=True, text=True, timeout=300
    )
    assert "Nothing to be done" in dry.stdout + dry.stderr


@pytest.mark.slurm
def test_gpu_rules_get_one_gpu_on_the_gpu_partition_and_the_rest_none(slurm_run):
    gpu = gpu_rules()
    assert {"extract_shard", "attn_perturbation", "token_perturbation"} <= gpu
    seen_gpu = seen_cpu = 0
    for job_id, fields in slurm_run["jobs"].items():
        rule = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", fields["Comment"]).group(1)
        if rule in gpu:
            seen_gpu += 1
            assert fields["Partition"] == "gpu", (job_id, rule)
            assert fields.get("TresPerJob") == "gres:gpu:1", (job_id, rule, fields.get("TresPerJob"))
        else:
            seen_cpu += 1
            assert fields["Partition"] == "cpu", (job_id, rule)
            assert "gpu" not in fields.get("TresPerJob", "") + fields.get("TresPerNode", ""), (job_id, rule)
    assert seen_gpu >= 9 and seen_cpu >= 20  # 3 models × 3 shards of extraction alone


@pytest.mark.slurm
def test_cancelled_job_is_resubmitted_with_more_memory(slurm_run):
    assert slurm_run["cancelled"], "no extraction job was seen running, so none was cancelled"
    job_id, comment = slurm_run["cancelled"]
    attempts = sorted((int(i), fields) for i, fields in slurm_run["jobs"].items() if fields["Comment"] == comment)
    assert [str(i) for i, _ in attempts][0] == job_id and len(attempts) == 2, attempts
    (_, first), (_, second) = attempts
    assert first["JobState"] == "CANCELLED" and second["JobState"] == "COMPLETED"
    memory = [int(fields["MinMemoryNode"].rstrip("M")) for _, fields in attempts]
    assert memory[1] == 2 * memory[0]


@pytest.mark.slurm
def test_gpu_jobs_are_not_serialised_by_the_workflow_on_slurm(slurm_run):
    """profiles/default limits gpu to 1 with scope local: a workstation runs one GPU job at a
    time, but on SLURM Snakemake submits several and leaves the GPUs to the scheduler."""
    gpu, in_flight, most = gpu_rules(), set(), 0
    for line in slurm_run["output"].splitlines():
        submitted = re.match(r"Job (\d+) has been submitted with SLURM jobid \d+ \(log: .*/rule_(\w+?)/", line)
        finished = re.match(r"Finished jobid: (\d+) \(Rule: (\w+)\)", line)
        if submitted and submitted.group(2) in gpu:
            in_flight.add(submitted.group(1))
        elif finished:
            in_flight.discard(finished.group(1))
        most = max(most, len(in_flight))
    assert most >= 2
