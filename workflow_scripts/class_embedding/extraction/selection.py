"""Per-row top-5 and rank selection for the lens, in one compiled pass per state on a CPU.

``torch.topk`` and comparison-to-boolean counts cost about 1 µs per row on a CPU, which for the
36 states and 24 memory tensors of a ViT-B/16 batch is several percent of its forward pass. The
numba kernels here read each row once or twice with vectorised loops:

- the true class's rank (classes with a larger logit, plus equal ones with a smaller index: a
  stable descending sort's rank) and its logit, counted with integer sums;
- the five largest values, from the maxima of eight strided groups (``j, j + w, j + 2w, …``,
  elementwise maxima of contiguous slices): only the five groups with the largest maxima can
  hold the top five, unless a sixth group ties the fifth maximum, where the row is scanned whole.

Order and ties are a stable descending sort's: larger first, equal values by smaller index. NaN
is never counted above the target nor selected (``torch.topk`` would put it first). Tensors that
are not float32/float64 on the CPU take the torch path (:func:`top5_torch`, :func:`rank_logit_top5_torch`),
which gives the same result up to the order of exact ties in the top five.
"""

from __future__ import annotations

import numba
import numpy as np
import torch

TOP_K = 5
GROUPS = 8
# Narrower rows are scanned whole: the grouped path needs at least five groups, and short rows gain little.
MIN_GROUPED_WIDTH = 8 * GROUPS
_EMPTY_INDEX = np.iinfo(np.int64).max


@numba.njit(inline="always")
def _first(v, j, w, i):
    """Whether value v at index j comes before value w at index i: larger first, then smaller index."""
    return v > w or (v == w and j < i)


@numba.njit(inline="always")
def _push(v, j, top):
    """Insert (v, j) into ``top`` = (v0..v4, i0..i4), descending; the caller checked it beats v4."""
    v0, v1, v2, v3, v4, i0, i1, i2, i3, i4 = top
    if _first(v, j, v2, i2):
        v4, i4, v3, i3 = v3, i3, v2, i2
        if _first(v, j, v1, i1):
            v2, i2 = v1, i1
            if _first(v, j, v0, i0):
                v1, i1, v0, i0 = v0, i0, v, j
            else:
                v1, i1 = v, j
        else:
            v2, i2 = v, j
    elif _first(v, j, v3, i3):
        v4, i4, v3, i3 = v3, i3, v, j
    else:
        v4, i4 = v, j
    return v0, v1, v2, v3, v4, i0, i1, i2, i3, i4


@numba.njit(inline="always")
def _strided_maxima(values, n, maxima):
    """``maxima[w] = max(values[w], values[w + width], …)``, NaN skipped; returns ``width``."""
    width = (n + GROUPS - 1) // GROUPS
    for w in range(width):
        maxima[w] = -np.inf
    for q in range(GROUPS):
        base = q * width
        for w in range(min(width, n - base)):
            v = values[base + w]
            maxima[w] = v if v > maxima[w] else maxima[w]
    return width


@numba.njit(inline="always")
def _empty_top():
    """No value yet: five −∞ with indices past any row, so that −∞ values still enter in index order."""
    low, past = -np.inf, _EMPTY_INDEX
    return low, low, low, low, low, past, past, past, past, past


@numba.njit(inline="always")
def _top5_of(values, n, lower_bound):
    """Top five of ``values[:n]`` among those ≥ ``lower_bound`` (a bound the fifth largest meets)."""
    top = _empty_top()
    for j in range(n):
        v = values[j]
        if v >= lower_bound and _first(v, j, top[4], top[9]):
            top = _push(v, j, top)
    return top


@numba.njit
def _top5_row(row, maxima, maxima_of_maxima, out):
    n = row.shape[0]
    top = _empty_top()
    grouped = False
    if n >= MIN_GROUPED_WIDTH:
        width = _strided_maxima(row, n, maxima)
        # The fifth largest maximum of maxima bounds the fifth largest group maximum from below.
        width2 = _strided_maxima(maxima, width, maxima_of_maxima)
        bound = _top5_of(maxima_of_maxima, width2, -np.inf)[4]  # −∞ with fewer than five
        groups = _top5_of(maxima, width, bound)
        fifth = groups[4]
        at_least_fifth = 0
        for w in range(width):
            at_least_fifth += maxima[w] >= fifth
        # Exactly five groups reach the fifth maximum: the top five lie in them (each other
        # group's elements are below five distinct larger ones), and all are ≥ that maximum.
        if at_least_fifth == TOP_K:
            grouped = True
            for q in range(GROUPS):
                base = q * width
                for g in groups[5:]:
                    j = base + g
                    if j < n:
                        v = row[j]
                        if v >= fifth and _first(v, j, top[4], top[9]):
                            top = _push(v, j, top)
    if not grouped:
        top = _top5_of(row, n, -np.inf)
    for p, index in enumerate(top[TOP_K:]):
        out[p] = index if index < n else -1


@numba.njit(parallel=True, cache=True)
def _top5_kernel(values, out, chunks):
    rows, n = values.shape
    for chunk in numba.prange(chunks):
        maxima = np.empty((n + GROUPS - 1) // GROUPS, values.dtype)
        maxima_of_maxima = np.empty_like(maxima)
        for r in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            _top5_row(values[r], maxima, maxima_of_maxima, out[r])


@numba.njit(parallel=True, cache=True)
def _rank_logit_top5_kernel(logits, targets, rank, logit, top, chunks):
    rows, n = logits.shape
    for chunk in numba.prange(chunks):
        maxima = np.empty((n + GROUPS - 1) // GROUPS, logits.dtype)
        maxima_of_maxima = np.empty_like(maxima)
        for r in range(chunk * rows // chunks, (chunk + 1) * rows // chunks):
            row, target = logits[r], targets[r]
            t = row[target]
            above, equal = np.int32(0), np.int32(0)
            for j in range(n):  # vectorised: integer sums of comparisons
                above += np.int32(row[j] > t)
                equal += np.int32(row[j] == t)
            if equal > 1:  # exact ties with other classes: those with a smaller index come first
                for j in range(target):
                    above += np.int32(row[j] == t)
            rank[r], logit[r] = above, t
            _top5_row(row, maxima, maxima_of_maxima, top[r])


def _uses_kernel(values: torch.Tensor) -> bool:
    return values.device.type == "cpu" and values.dtype in (torch.float32, torch.float64)


def _threads() -> int:
    """Numba uses as many threads as torch (one chunk of rows each)."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads


def _check_width(values: torch.Tensor) -> None:
    if values.shape[-1] < TOP_K:
        raise ValueError(f"top-{TOP_K} needs at least {TOP_K} values per row, got {values.shape[-1]}")


def top5(values: torch.Tensor) -> torch.Tensor:
    """Indices (int16) of the five largest values along the last axis, largest first."""
    _check_width(values)
    if not _uses_kernel(values):
        return top5_torch(values)
    flat = values.detach().reshape(-1, values.shape[-1]).contiguous()
    out = np.empty((flat.shape[0], TOP_K), np.int16)
    _top5_kernel(flat.numpy(), out, _threads())
    return torch.from_numpy(out).view(*values.shape[:-1], TOP_K)


def rank_logit_top5(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For logits (..., C) and target classes (...): the target's rank (int16, 0 = top), its logit
    and the top-5 classes (int16), as :func:`rank_logit_top5_torch` computes them."""
    _check_width(logits)
    if not _uses_kernel(logits):
        return rank_logit_top5_torch(logits, targets)
    classes = logits.shape[-1]
    flat = logits.detach().reshape(-1, classes).contiguous()
    flat_targets = targets.reshape(-1).to(torch.int64).contiguous()
    rows = flat.shape[0]
    rank, logit, top = np.empty(rows, np.int16), np.empty(rows, flat.numpy().dtype), np.empty((rows, TOP_K), np.int16)
    _rank_logit_top5_kernel(flat.numpy(), flat_targets.numpy(), rank, logit, top, _threads())
    shape = logits.shape[:-1]
    return (
        torch.from_numpy(rank).view(shape),
        torch.from_numpy(logit).view(shape),
        torch.from_numpy(top).view(*shape, TOP_K),
    )


def rank_of(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``target`` among the last-axis logits, as a stable descending sort gives.

    Counting is O(C) per row instead of a sort. ``sign(logit − target logit)`` is +1 above the
    target, 0 at it and −1 below (exact: a float32 difference is zero only for equal values), and
    its sum and the sum of its absolute values give the count above; two float passes, several
    times faster on a CPU than comparisons to booleans. Rows where another class ties the target
    exactly (rare), or with a NaN or an infinite difference, are recounted with comparisons and the
    stable sort's tie-break (smaller class indices first); NaN never counts above the target.
    """
    target_logit = logits.gather(-1, target.unsqueeze(-1))
    signs = torch.sub(logits, target_logit).sign_()
    net = signs.sum(-1)  # above − below
    unequal = signs.abs_().sum(-1)  # above + below
    rank = ((net + unequal) / 2).long()
    irregular = (unequal < logits.shape[-1] - 1) | torch.isnan(net)
    if irregular.any():
        rows = irregular.nonzero(as_tuple=True)
        row_logits, row_target_logit = logits[rows], target_logit[rows]
        class_ids = torch.arange(logits.shape[-1], device=logits.device)
        tied_before = (row_logits == row_target_logit) & (class_ids < target[rows].unsqueeze(-1))
        rank[rows] = (row_logits > row_target_logit).sum(-1) + tied_before.sum(-1)
    return rank


def top5_torch(values: torch.Tensor) -> torch.Tensor:
    return values.topk(TOP_K, dim=-1).indices.to(torch.int16)


def rank_logit_top5_torch(
    logits: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logit = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return rank_of(logits, targets).to(torch.int16), logit, top5_torch(logits)
