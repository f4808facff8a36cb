"""Grades chapter 6's assignment, lessons/exercises/ex06_latency.py (median and spread, speedup, cost model).

    pytest tests/exercises/grade_ex06_latency.py

median_and_spread is compared with numpy's percentiles, predicted_speedup with the lesson's numbers,
fit_cost_model with an exact fit on noiseless windows and with numpy.polynomial on noisy ones.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from grading import Assignment, Exercise, pytest_tests


def check_median_and_spread(call) -> None:
    assert tuple(call([3.0, 1.0, 2.0])) == pytest.approx((2.0, 1.0)), "[3, 1, 2]: median 2, quartiles 1.5 and 2.5"
    rng = np.random.default_rng(9)
    for n in (1, 2, 5, 10, 31):
        x = rng.lognormal(0, 0.5, n)
        q25, q50, q75 = np.percentile(x, [25, 50, 75])
        got = call(list(x))
        assert tuple(got) == pytest.approx((q50, q75 - q25), rel=1e-9), f"n={n}: {tuple(got)}, numpy says {(q50, q75 - q25)}"
    with pytest.raises(ValueError):
        call([])


def check_predicted_speedup(call) -> None:
    assert call(0.070, 0.0437, 80) == pytest.approx(1 + 79 * 0.0437 / 0.070), "the lesson's H100 numbers: 1 + 79 * 43.7 / 70"
    assert call(2.0, 0.5, 1) == pytest.approx(1.0), "one generated token: no decode step, no speedup"
    assert call(6.3, 9.0 / 80, 80) == pytest.approx(1 + 79 * (9.0 / 80) / 6.3)


def check_fit_cost_model(call) -> None:
    P = [200, 400, 800, 1200, 1600, 300, 900]
    G = [10, 40, 80, 20, 60, 78, 5]
    true = (0.05, 0.004, 0.11)
    exact = [true[0] + true[1] * p + true[2] * g for p, g in zip(P, G)]
    got = call(P, G, exact)
    assert len(got) == 3, f"return (c0, cP, cG), got {got}"
    assert all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9) for a, b in zip(got, true)), (
        f"noiseless windows made with c = {true}: you fitted {tuple(got)}")
    rng = np.random.default_rng(10)
    P2 = rng.integers(100, 2000, 40)
    G2 = rng.integers(1, 80, 40)
    t = 0.02 + 0.003 * P2 + 0.09 * G2 + rng.normal(0, 0.05, 40)
    design = np.column_stack([np.ones(40), P2, G2]).astype(float)
    want = np.linalg.solve(design.T @ design, design.T @ t)   # the normal equations
    got = call(list(map(int, P2)), list(map(int, G2)), list(t))
    assert np.allclose(got, want, rtol=1e-6, atol=1e-9), f"40 noisy windows: {tuple(got)}, least squares gives {tuple(want)}"
    with pytest.raises(ValueError):
        call([1, 2], [1, 2], [1.0, 2.0])
    with pytest.raises(ValueError):
        call([1, 2, 3], [1, 2, 3], [1.0, 2.0])


ASSIGNMENT = Assignment(
    "ex06_latency", "06",
    [Exercise("median_and_spread", 2, check_median_and_spread), Exercise("predicted_speedup", 1, check_predicted_speedup),
     Exercise("fit_cost_model", 4, check_fit_cost_model)],
    forbidden_calls=["numpy.percentile", "numpy.quantile", "numpy.median"])

test_exercise = pytest_tests(ASSIGNMENT)
