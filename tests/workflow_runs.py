"""Snakemake as the tests run it: a child process of this Python (so the Snakemake and plugins the
tests import), on the repository's Snakefile unless told otherwise."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"


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
