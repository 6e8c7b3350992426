"""A run killed during extraction resumes (profiles/default: rerun-incomplete) and loses nothing."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import workflow_runs

from class_embedding import results_layout as layout

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO / "tests" / "configs" / "micro.yaml"
TARGET = layout.layer_table("micro_cls", "hs", 1)

pytestmark = pytest.mark.workflow


def snakemake(workdir: Path, *args: str, **popen) -> subprocess.Popen:
    """The CLI as a user runs it (the workflow profile profiles/default applies)."""
    command = workflow_runs.command("--cores", "2", *args, configfiles=[MICRO], workdir=workdir)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


def extraction_tables(workdir: Path) -> dict[str, object]:
    extract = workdir / "results/extract/model=micro_cls"
    return {str(path.relative_to(extract)): pq.read_table(path) for path in sorted(extract.rglob("*.parquet"))}


def test_run_killed_during_extraction_resumes_and_loses_nothing(tmp_path):
    finish(snakemake(tmp_path, TARGET))
    reference = extraction_tables(tmp_path)
    assert len(reference) == 7
    for path in (tmp_path / "results/extract/model=micro_cls").rglob("*.parquet"):
        path.unlink()
    for path in (tmp_path / "results/logs/extract_shard").glob("micro_cls_*.log"):
        path.unlink()

    # Kill the whole run (Snakemake and its jobs) as soon as the first of three shards is written.
    shards = (tmp_path / layout.extraction_shard("micro_cls", 0)).parent
    process = snakemake(tmp_path, TARGET, start_new_session=True)
    deadline = time.monotonic() + 300

    def written():
        return sorted(p.name for p in shards.glob("[0-9]")) if shards.is_dir() else []

    while not written():
        assert process.poll() is None, "the run ended before a shard was written"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept = written()
    assert 1 <= len(kept) < 3 and not list(shards.parent.glob("*.parquet")), kept

    # A killed Snakemake leaves its lock behind (as after a power loss): unlock, then rerun.
    finish(snakemake(tmp_path, "--unlock"))
    output = finish(snakemake(tmp_path, TARGET))
    rerun = re.findall(
        r"^(?:local)?rule extract_shard:\n(?:.*\n)*?    wildcards: model=micro_cls, shard=(\d)", output, re.M
    )
    assert sorted(rerun) == sorted({"0", "1", "2"} - set(kept)), (kept, output[-3000:])
    resumed = extraction_tables(tmp_path)
    assert resumed.keys() == reference.keys()
    for name, table in reference.items():
        assert resumed[name].equals(table), name
