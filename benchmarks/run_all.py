"""Run every benchmark of the project and collect their headline numbers in one table.

Each benchmark script runs in its own process and writes its full JSON record under
``benchmarks/results/``; this script reads the records back and writes
``benchmarks/results/summary.json`` and ``summary.md`` (benchmark, metric, measured, goal).
With ``--demo`` it also times the embedded demo from scratch in a temporary copy of the
workflow (``snakemake --cores N``). With ``--readme`` the table replaces the block between the
``<!-- benchmark-table -->`` markers of benchmarks/README.md. On a machine with a GPU the extraction
benchmark runs on it and the table gives images per second with the lens and bare.

    python benchmarks/run_all.py [--quick] [--demo] [--cores 2] [--readme]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
README_MARKERS = ("<!-- benchmark-table -->", "<!-- /benchmark-table -->")


def extraction_rows(record: dict) -> list[tuple[str, str, str]]:
    rows = []
    for name, model in record["models"].items():
        batch = model["batch"]
        rows.append(
            (
                f"extraction with the lens / bare forward, {name} (batch {batch}, {record['device']})",
                f"{model['ratio']:.2f}×; {batch / model['lens_median_s']:.0f} vs {batch / model['bare_median_s']:.0f} images/s",
                f"≤ {record['goals']['ratio_max_vit_b16' if name == 'vit_b16' else 'ratio_max']}×",
            )
        )
        rows.append(
            (
                f"stored bytes per image, {name}",
                f"{model['bytes_per_image'] / 1000:.1f} KB",
                f"≤ {record['goals']['vit_b16_bytes_per_image_max'] / 1000:.0f} KB (ViT-B/16)",
            )
        )
    return rows


def perturbation_rows(record: dict) -> list[tuple[str, str, str]]:
    ratios = [r["ratio"] for r in record["results"] if r["perturbation"] != "bare_forward"]
    ceiling = [r["ratio"] for r in record["results"] if r["perturbation"] == "bare_forward"]
    return [
        (
            f"batched / one-at-a-time attention and token perturbations ({record['device']})",
            f"{min(ratios):.1f}–{max(ratios):.1f}× (bare forward: {min(ceiling):.1f}–{max(ceiling):.1f}×)",
            f"≥ {record['ratio_goal']:.0f}×",
        )
    ]


def lens_profile_rows(record: dict) -> list[tuple[str, str, str]]:
    steps = {k: v for k, v in record["steps_s_per_forward"].items() if not k.startswith("(")}
    step, seconds = max(steps.items(), key=lambda kv: kv[1])
    return [
        (
            f"largest lens step, {record['arch']} (batch {record['batch']})",
            f"{step}: {100 * seconds / record['bare_median_s']:.0f}% of the bare forward",
            "profile",
        )
    ]


def generic_rows(record: dict) -> list[tuple[str, str, str]]:
    """Benchmarks that state their own headline: a list of {metric, measured, goal}."""
    return [(row["metric"], row["measured"], row.get("goal", "")) for row in record.get("headline", [])]


# script, extra arguments for --quick, reader of its JSON record
BENCHMARKS = [
    ("extraction_overhead.py", ["--quick"], extraction_rows),
    ("lens_profile.py", ["--repeats", "1"], lens_profile_rows),
    ("perturbation_batching.py", ["--quick"], perturbation_rows),
    ("explain_perturbation_batching.py", ["--quick"], generic_rows),
    ("streaming_probes.py", ["--quick"], generic_rows),
]


def run_benchmark(script: str, quick_args: list[str], quick: bool) -> dict:
    output = RESULTS / f"{Path(script).stem}.json"
    command = [sys.executable, str(REPO / "benchmarks" / script), "--output", str(output)]
    print("+", " ".join(command + (quick_args if quick else [])), file=sys.stderr, flush=True)
    subprocess.run(command + (quick_args if quick else []), check=True, cwd=REPO)
    return json.loads(output.read_text())


def time_demo(cores: int) -> tuple[str, str, str]:
    """The embedded demo from scratch in a temporary copy of the workflow."""
    ignore = shutil.ignore_patterns("results", ".snakemake", ".git", "__pycache__", ".pytest_cache")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "workflow"
        shutil.copytree(REPO, workdir, ignore=ignore)
        started = time.perf_counter()
        run = subprocess.run(["snakemake", "--cores", str(cores)], cwd=workdir, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if run.returncode:
            sys.exit(f"the demo failed:\n{run.stderr[-3000:]}")
        jobs = re.findall(r"(\d+) of \1 steps \(100%\) done", run.stdout + run.stderr)
    return (
        f"embedded demo from scratch, {cores} cores",
        f"{wall / 60:.0f} min {wall % 60:.0f} s" + (f" ({jobs[-1]} jobs)" if jobs else ""),
        "< 15 min",
    )


def markdown(rows: list[tuple[str, str, str]]) -> str:
    lines = ["| benchmark | measured | goal |", "|---|---|---|"]
    lines += [f"| {metric} | {measured} | {goal} |" for metric, measured, goal in rows]
    return "\n".join(lines) + "\n"


def update_readme(table: str, stamp: str) -> None:
    readme = REPO / "benchmarks" / "README.md"
    text = readme.read_text()
    start, end = README_MARKERS
    if start not in text or end not in text:
        sys.exit(f"benchmarks/README.md lacks the {start} … {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{stamp}\n\n{table}{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke setting")
    parser.add_argument("--demo", action="store_true", help="also time the embedded demo from scratch")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="cores for the demo")
    parser.add_argument("--readme", action="store_true", help="write the table into benchmarks/README.md")
    parser.add_argument("--only", nargs="*", help="benchmark scripts to run (default: all)")
    args = parser.parse_args()

    rows = []
    for script, quick_args, reader in BENCHMARKS:
        if args.only and script not in args.only:
            continue
        if not (REPO / "benchmarks" / script).is_file():
            continue
        rows += reader(run_benchmark(script, quick_args, args.quick))
    if args.demo:
        rows.append(time_demo(args.cores))

    load = os.getloadavg()[0]
    stamp = (
        f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC by `python benchmarks/run_all.py"
        f"{' --quick' if args.quick else ''}{' --demo' if args.demo else ''}` on {os.cpu_count()} CPU cores"
        f" (load average {load:.1f} at the end); every ratio within one run."
    )
    table = markdown(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(f"{stamp}\n\n{table}")
    (RESULTS / "summary.json").write_text(
        json.dumps({"stamp": stamp, "rows": [dict(zip(("metric", "measured", "goal"), row)) for row in rows]}, indent=2)
        + "\n"
    )
    print(stamp, table, sep="\n\n")
    if args.readme:
        update_readme(table, stamp)


if __name__ == "__main__":
    main()
