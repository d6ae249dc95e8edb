"""The numpy port of scipy's linear_sum_assignment: optimal, and exactly scipy's answer (ties too)."""
import itertools

import numpy as np
import pytest

from anonymize.assignment import linear_sum_assignment


def _brute_force_cost(cost: np.ndarray) -> float:
    nr, nc = cost.shape
    if nr <= nc:
        return min(cost[np.arange(nr), list(p)].sum() for p in itertools.permutations(range(nc), nr))
    return _brute_force_cost(cost.T)


def test_optimal_on_small_matrices():
    rng = np.random.default_rng(0)
    for _ in range(200):
        nr, nc = rng.integers(1, 6, 2)
        cost = rng.random((nr, nc))
        rows, cols = linear_sum_assignment(cost)
        assert len(rows) == min(nr, nc) and len(set(cols.tolist())) == len(cols)
        assert (np.diff(rows) > 0).all()
        assert cost[rows, cols].sum() == pytest.approx(_brute_force_cost(cost))


def test_edge_cases():
    assert [a.tolist() for a in linear_sum_assignment(np.zeros((0, 3)))] == [[], []]
    assert [a.tolist() for a in linear_sum_assignment(np.array([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]))] == [[0, 1], [1, 0]]
    with pytest.raises(ValueError):
        linear_sum_assignment(np.array([[np.nan]]))
    with pytest.raises(ValueError):
        linear_sum_assignment(np.zeros(3))


def test_same_answer_as_scipy_ties_included():
    scipy_lsa = pytest.importorskip("scipy.optimize").linear_sum_assignment  # scipy comes with [test]
    rng = np.random.default_rng(1)
    for trial in range(3000):
        nr, nc = rng.integers(0, 12, 2)
        if trial % 3 == 0:
            cost = rng.random((nr, nc))
        elif trial % 3 == 1:  # integer costs: many ties
            cost = rng.integers(0, 3, (nr, nc)).astype(float)
        else:  # what the tracker passes: -IoU where a link is allowed, +1 elsewhere (float32 in)
            sim = rng.random((nr, nc)).astype(np.float32)
            cost = -np.where(rng.random((nr, nc)) < 0.3, sim, -1.0)
        ours, theirs = linear_sum_assignment(cost), scipy_lsa(cost)
        assert ours[0].tolist() == theirs[0].tolist() and ours[1].tolist() == theirs[1].tolist(), trial
