"""Optimal assignment (the linear sum assignment problem), in numpy: what the tracker links
detections to tracks with.

A port of scipy's ``scipy.optimize.linear_sum_assignment`` (the shortest augmenting path method
of Crouse, "On implementing 2D rectangular assignment algorithms", IEEE TAES 2016, as scipy's
``rectangular_lsap.cpp`` implements it): the same steps in the same order, the same tie-breaking
and the same double-precision arithmetic, so it returns exactly scipy's assignment, ties
included. It replaces a 140 MB dependency used for this one function. The search over the
columns is vectorized; the loops are over rows and augmenting steps, few per row when detections
overlap few tracks, as they do.
"""
from __future__ import annotations

import numpy as np


def linear_sum_assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of a minimum-cost complete assignment of the smaller side of ``cost``
    (2-D, finite), as scipy returns them: ``rows`` ascending, ``cols[k]`` assigned to ``rows[k]``.

    Raises:
        ValueError: ``cost`` is not 2-D or has NaN or infinite entries.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be 2-D, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("cost contains NaN or infinite entries")
    nr, nc = cost.shape
    if nr == 0 or nc == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    transpose = nc < nr
    if transpose:
        cost = np.ascontiguousarray(cost.T)
        nr, nc = nc, nr
    u, v = np.zeros(nr), np.zeros(nc)
    col4row, row4col = np.full(nr, -1, np.int64), np.full(nc, -1, np.int64)
    path = np.full(nc, -1, np.int64)
    for cur in range(nr):
        sink, min_val, spc, sr, sc = _augmenting_path(cost, u, v, path, row4col, cur)
        # dual variables
        u[cur] += min_val
        rows = np.flatnonzero(sr)
        rows = rows[rows != cur]
        u[rows] += min_val - spc[col4row[rows]]
        v[sc] -= min_val - spc[sc]
        augment(path, row4col, col4row, sink, cur)
    if transpose:
        order = np.argsort(col4row, kind="stable")
        return col4row[order], order.astype(np.int64)
    return np.arange(nr, dtype=np.int64), col4row


def augment(path, row4col, col4row, sink: int, cur: int) -> None:
    """Flip the matching along the shortest augmenting path found for row ``cur``, from column
    ``sink`` back to it (``path[j]``: the row that reached column ``j``); in place. Shared with the
    tracker's sparse solver (:func:`anonymize.track._sparse_matching`)."""
    j = sink
    while True:
        i = path[j]
        row4col[j] = i
        col4row[i], j = j, col4row[i]
        if i == cur:
            break


def _augmenting_path(cost: np.ndarray, u: np.ndarray, v: np.ndarray, path: np.ndarray,
                     row4col: np.ndarray, i: int):
    """One Dijkstra-like search from free row ``i`` to a free column (scipy's
    ``augmenting_path``); updates ``path``; returns the sink, the path cost, the shortest path
    costs and the rows / columns visited."""
    nr, nc = cost.shape
    remaining = np.arange(nc - 1, -1, -1, dtype=np.int64)  # scipy's order: last column first
    n_rem = nc
    sr, sc = np.zeros(nr, bool), np.zeros(nc, bool)
    spc = np.full(nc, np.inf)
    min_val = 0.0
    while True:
        sr[i] = True
        rem = remaining[:n_rem]
        r = min_val + cost[i, rem] - u[i] - v[rem]
        better = r < spc[rem]
        if better.any():
            upd = rem[better]
            path[upd] = i
            spc[upd] = r[better]
        costs = spc[rem]
        lowest = costs.min()
        # scipy keeps the first minimum, but a later equal one whose column is free replaces it
        ties = np.flatnonzero(costs == lowest)
        free = ties[row4col[rem[ties]] == -1]
        index = int(free[-1]) if free.size else int(ties[0])
        min_val = float(lowest)
        j = int(rem[index])
        sc[j] = True
        n_rem -= 1
        remaining[index] = remaining[n_rem]
        if row4col[j] == -1:
            return j, min_val, spc, sr, sc
        i = int(row4col[j])
