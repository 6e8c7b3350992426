"""tab_reproduction_vs_paper: our last-block identifiability rates and accuracy beside the
paper's (docs/method.md §5, config ``paper_reference``), so a run shows at once whether it matches."""

from __future__ import annotations

import math

import pandas as pd

from ..tables import atomic_path

METRICS = ("accuracy", "pct_tokens", "pct_images")
COLUMNS = ["model", "display_name", "trained_model", "metric", "ours", "paper", "difference", "ours_corrected"]


def reproduction_table(rates: pd.DataFrame, random_rates: pd.DataFrame, reference: dict) -> pd.DataFrame:
    """One row per (model, metric): ours, the paper's, ours − paper.

    ``ours`` follows the paper's conventions (for a model without [CLS], token 0 dropped,
    docs/method.md §7.9), which is what the paper's numbers mean; ``ours_corrected`` is the corrected
    value (all image tokens). Models without reference numbers get an empty ``paper``.
    """
    trained = rates.assign(trained_model=rates["model"])
    frames = [trained, random_rates] if len(random_rates) else [trained]
    rows = []
    for frame in frames:
        for record in frame.to_dict("records"):
            paper_numbers = reference.get(record["model"], {})
            for metric in METRICS:
                if metric == "accuracy":
                    ours = corrected = record["accuracy"]
                else:
                    ours, corrected = record[f"{metric}_paper"], record[metric]
                paper = paper_numbers.get(metric, math.nan)
                rows.append(
                    {
                        "model": record["model"],
                        "display_name": record["display_name"],
                        "trained_model": record["trained_model"],
                        "metric": metric,
                        "ours": float(ours),
                        "paper": float(paper),
                        "difference": float(ours) - float(paper),
                        "ours_corrected": float(corrected),
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def tab_reproduction_vs_paper(rates_csv, random_csv, reference: dict, output_csv) -> pd.DataFrame:
    table = reproduction_table(pd.read_csv(rates_csv), pd.read_csv(random_csv), reference)
    with atomic_path(output_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")
    return table
