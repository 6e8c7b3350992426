"""Benchmark: size of the explorer pages of a finished run and how fast each opens from disk in a
headless Chromium (goal for the demo's 7×7 model: under 5 MB and under one second).

    python benchmarks/explorer_page_load.py [--results results] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from chromium import Browser, find_browser  # noqa: E402 (the tests' DevTools client)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(REPO / "results"), help="results folder of a finished run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "explorer_page_load.json"))
    args = parser.parse_args()
    pages = sorted(p for p in (Path(args.results) / "explorer").glob("*.html") if p.name != "index.html")
    executable = find_browser()
    if not pages or executable is None:
        sys.exit(
            f"needs explorer pages under {args.results}/explorer and a Chromium ({'found' if executable else 'none'})"
        )
    records = []
    with tempfile.TemporaryDirectory() as profile:
        browser = Browser(executable, Path(profile))
        try:
            for page in pages:
                wall, load_event = [], []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    browser.open(page.resolve().as_uri())
                    wall.append(time.perf_counter() - start)
                    load_event.append(browser.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
                records.append(
                    {
                        "page": page.name,
                        "mb": page.stat().st_size / 1e6,
                        "open_s": wall,
                        "load_event_ms": load_event,
                        "errors": browser.errors(),
                    }
                )
                print(f"{page.name}: {records[-1]['mb']:.2f} MB, opened in {min(wall):.3f}–{max(wall):.3f} s")
        finally:
            browser.close()
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"benchmark": "explorer_page_load", "pages": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
