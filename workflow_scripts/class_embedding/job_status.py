"""What each job last did, and the preflight summary built from it.

Every rule script runs inside :func:`logs.logged`, which writes a status record beside the job's
log (``results/logs/<rule>/<name>.status.json``): the rule, its wildcards and outputs, when it
ended, the error if it failed, and its notices (e.g. the sha256 of an unverified download).
``snakemake preflight`` ends with one table of every check (:func:`report_preflight`, called by
the ``onsuccess``/``onerror`` hooks, so also after failures with ``-k``): ok, FAILED with what to
do, or not run with the failed check it waits for. No torch here: the hooks run in Snakemake's
own process.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .results_layout import LOGS, preflight_summary

# This module is imported when the workflow is parsed: records older than that are of earlier runs.
RUN_STARTED = time.time()
SUMMARY_FILE = Path(preflight_summary())


def record_path(log: str | os.PathLike) -> Path:
    log = Path(log)
    return log.with_suffix(".status.json") if log.suffix == ".log" else log.with_name(log.name + ".status.json")


def write(smk, error: str | None, notices: list[str]) -> None:
    """Record a job's outcome beside its log; never fails the job itself."""
    wildcards = getattr(smk, "wildcards", None)
    record = {
        "rule": smk.rule,
        "wildcards": dict(wildcards.items()) if hasattr(wildcards, "items") else {},
        "outputs": [str(path) for path in getattr(smk, "output", [])],
        "log": str(smk.log[0]),
        "ok": error is None,
        "error": error,
        "notices": list(notices),
        "time": time.time(),
    }
    path = record_path(smk.log[0])
    try:
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    except OSError:
        pass


def read(path: str | os.PathLike) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Check:
    """A job of the preflight: its name in the table, what it writes and reads, its log."""

    label: str
    outputs: list[str]
    inputs: list[str] = field(default_factory=list)
    log: str | None = None


@dataclass
class Row:
    number: int
    check: Check
    status: str  # ok, FAILED, not run
    detail: str = ""
    notices: list[str] = field(default_factory=list)


def records_by_output(root: str | os.PathLike = LOGS) -> dict[str, dict]:
    """The newest record of every output path under ``root`` (for checks without a known log)."""
    found: dict[str, dict] = {}
    for path in Path(root).rglob("*.status.json"):
        record = read(path)
        for output in (record or {}).get("outputs", []):
            if output not in found or found[output]["time"] < record["time"]:
                found[output] = record
    return found


def summarise(checks: list[Check], since: float = RUN_STARTED, keep_going: bool = True) -> list[Row]:
    """One row per check: ok when its outputs exist; FAILED with the job's error when it failed in
    this run; otherwise not run, naming the failed checks whose outputs it waits for."""
    by_output = None
    rows = []
    for number, check in enumerate(checks, 1):
        if check.log is not None:
            record = read(record_path(check.log))
        else:
            by_output = records_by_output() if by_output is None else by_output
            record = next((by_output[o] for o in check.outputs if o in by_output), None)
        fresh = record is not None and record.get("time", 0) >= since
        notices = record.get("notices", []) if fresh else []
        if all(os.path.exists(output) for output in check.outputs):
            rows.append(Row(number, check, "ok", "" if fresh else "already there", notices))
        elif fresh and not record.get("ok"):
            rows.append(Row(number, check, "FAILED", record.get("error") or f"failed: see {check.log}", notices))
        else:
            rows.append(Row(number, check, "not run"))
    producer = {output: row for row in rows for output in row.check.outputs}
    for row in rows:
        if row.status != "not run":
            continue
        waits = sorted({producer[i].number for i in row.check.inputs if i in producer and producer[i].status != "ok"})
        if waits:
            row.detail = "waits for " + ", ".join(f"[{n}] {rows[n - 1].check.label}" for n in waits)
        elif keep_going:
            row.detail = "not started (the run was stopped)"
        else:
            row.detail = "not started: Snakemake stopped at the first failure; add -k to run every check"
    return rows


def format_summary(rows: list[Row]) -> str:
    failed = [row for row in rows if row.status == "FAILED"]
    not_run = [row for row in rows if row.status == "not run"]
    if failed or not_run:
        headline = f"{len(failed)} of {len(rows)} checks FAILED, {len(not_run)} not run."
    else:
        headline = f"all {len(rows)} checks passed."
    width = max([len(row.check.label) for row in rows] + [5])
    lines = [f"Preflight summary: {headline}", f"  {'#':>3}  {'status':<8} {'check':<{width}}  output"]
    for row in rows:
        output = row.check.outputs[0] if row.check.outputs else ""
        lines.append(f"  {row.number:>3}  {row.status:<8} {row.check.label:<{width}}  {output}")
    if failed or not_run:
        lines.append("What to do:")
        for row in failed + not_run:
            text = row.detail.replace("\n", "\n      ")
            lines.append(f"  [{row.number}] {row.check.label} ({row.status}): {text}")
            if row.status == "FAILED" and row.check.log:
                lines.append(f"      (log: {row.check.log})")
    notices = [(row, notice) for row in rows for notice in row.notices]
    if notices:
        lines.append("Notices:")
        lines += [f"  [{row.number}] {row.check.label}: {notice}" for row, notice in notices]
    return "\n".join(lines)


def dag_checks(workflow) -> list[Check] | None:
    """The jobs of this run's DAG when its target is rule preflight (every check, whether it ran
    now, earlier or not at all); None for runs of other targets. Raises AttributeError or
    TypeError where Snakemake's DAG reads differently."""
    dag = workflow.dag
    if not any(job.rule.name == "preflight" for job in dag.targetjobs):
        return None
    checks = []
    for job in dag.jobs:
        if job.rule.name == "preflight":
            continue
        wildcards = ", ".join(str(value) for value in job.wildcards_dict.values())
        checks.append(
            Check(
                label=f"{job.rule.name} {wildcards}".strip(),
                outputs=[str(path) for path in job.output],
                inputs=[str(path) for path in job.input],
                log=str(job.log[0]) if job.log else None,
            )
        )
    return sorted(checks, key=lambda check: check.label)


def report_preflight(workflow, paths: list[str]) -> None:
    """Print the summary of a preflight run on the console and to :data:`SUMMARY_FILE` (the
    ``onsuccess``/``onerror`` hook); nothing for runs of other targets. ``paths`` (the inputs of
    rule preflight) stand in for the DAG where Snakemake's cannot be read."""
    try:
        checks = dag_checks(workflow)
    except (AttributeError, TypeError):  # another Snakemake: the inputs of rule preflight only
        checks = [Check(label=path, outputs=[path]) for path in paths] if "preflight" in sys.argv else None
    if checks is None:
        return
    started = getattr(workflow, "start_time", None)
    since = started.timestamp() if hasattr(started, "timestamp") else RUN_STARTED
    keep_going = getattr(getattr(workflow, "execution_settings", None), "keep_going", True)
    text = format_summary(summarise(checks, since=since, keep_going=keep_going))
    print("\n" + text + f"\n(also in {SUMMARY_FILE})", file=sys.stderr)
    try:
        SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY_FILE.write_text(text + "\n")
    except OSError:
        pass
