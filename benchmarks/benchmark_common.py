"""What the benchmark scripts share: the workflow's package on the import path, the common
command line, timing that waits for the GPU, and the machine facts every JSON record carries."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "workflow_scripts"))

from class_embedding.models import building  # noqa: E402 (after the path set-up above)


def argument_parser(doc: str, name: str, quick_help: str, with_config: bool = True) -> argparse.ArgumentParser:
    """--quick, --output (default benchmarks/results/<name>.json), --config, --device, --threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--output", default=str(RESULTS / f"{name}.json"))
    if with_config:
        parser.add_argument("--config", default=str(REPO / "config.yaml"), help="workflow config with the demo models")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return parser


def prepare(args: argparse.Namespace) -> torch.device:
    """Applies --threads and resolves --device."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return building.pick_device(args.device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run, device: torch.device):
    """(seconds, result) of ``run()``, including the GPU work it queued."""
    synchronize(device)
    start = time.perf_counter()
    result = run()
    synchronize(device)
    return time.perf_counter() - start, result


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record(device: torch.device) -> dict:
    """When and where a benchmark ran: the facts a reader needs to compare two records."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
    }


def write_record(record: dict, output: str | Path) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2))
    return output
