"""Box-plot statistics as the figures draw them, computed once where the tables are made (a
module of its own: it needs matplotlib, which the jobs that run models do not have)."""

from __future__ import annotations

import matplotlib.cbook
import numpy as np

BOX_STATS = ["mean", "med", "q1", "q3", "whislo", "whishi"]


def box_stats(values: np.ndarray) -> dict[str, float]:
    """Exact boxplot statistics as seaborn computes them (1.5 IQR whiskers), without fliers."""
    stats = matplotlib.cbook.boxplot_stats(np.ravel(values), whis=1.5)[0]
    return {key: float(stats[key]) for key in BOX_STATS}
