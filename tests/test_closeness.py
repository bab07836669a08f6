"""The one rule of "close enough" (engines.numeric): compare(), is_close() and close_entries() agree."""

from __future__ import annotations

import numpy as np

from backpropcheck.engines.numeric import ATOL, RTOL, close_entries, compare, is_close


def test_is_close_is_compare_at_the_default_tolerances() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        truth = rng.normal(size=(3, 4)) * 10 ** rng.uniform(-5, 5)
        noise = rng.normal(size=truth.shape) * 10 ** rng.uniform(-16, -3) * np.abs(truth).max()
        claimed = truth + noise * (rng.random(truth.shape) < 0.3)
        assert is_close(claimed, truth) == compare(claimed, truth, RTOL, ATOL)[0]


def test_the_tolerance_scales_with_the_largest_true_entry() -> None:
    truth = np.array([1e6, 0.0])
    assert is_close(truth + np.array([0.0, 1e-2]), truth)  # 1e-2 ≤ 1e-7 · 1e6: a rounding residue
    assert not is_close(truth + np.array([0.0, 1.0]), truth)
    assert close_entries(np.array([1e6, 1.0]), truth).tolist() == [True, False]


def test_nan_and_other_shapes_are_never_close() -> None:
    assert not is_close(np.array([np.nan]), np.array([0.0]))
    assert not is_close(np.zeros(3), np.zeros((3, 1)))
    assert not close_entries(np.array([np.inf, 1.0]), np.array([1.0, 1.0]))[0]


def test_a_difference_that_overflows_is_never_close() -> None:
    # near the float64 limit |truth| + max|truth| overflows: the tolerance must not become inf and let
    # an inf difference (a claim of the opposite sign) pass
    truth = np.array([1e308, 1.0])
    claimed = np.array([-1.7e308, 1.0])
    with np.errstate(all="ignore"):
        assert not compare(claimed, truth, RTOL, ATOL)[0]
        assert close_entries(claimed, truth).tolist() == [False, True]
        assert is_close(truth, truth)
