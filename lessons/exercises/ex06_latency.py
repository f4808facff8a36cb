"""Chapter 6 assignment: what a measurement says, and a cost model (7 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex06_latency.py                     # everything, with your points
    pytest tests/exercises/grade_ex06_latency.py -k fit_cost_model   # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with numpy and with hand computations; this file may not import minirank.
numpy is allowed.
"""
from __future__ import annotations

from typing import Sequence


def median_and_spread(seconds: Sequence[float]) -> tuple[float, float]:
    """Exercise 1 (2 points). The median of repeated timings and their spread, the interquartile range
    (lesson 6, the timer). Quartiles by linear interpolation between order statistics (numpy's default):
    the q-quantile of sorted x_0..x_{n-1} sits at position q * (n - 1). Returns (median, q75 - q25).
    Raise ValueError for an empty list.
    """
    # TODO: your code here
    raise NotImplementedError


def predicted_speedup(prefill_s: float, step_s: float, generated: int) -> float:
    """Exercise 2 (1 point). FIRST's speedup over generating ``generated`` tokens (lesson 6, eq. speedup):
    generation costs one prefill and generated - 1 decode steps, FIRST one prefill.
    """
    # TODO: your code here
    raise NotImplementedError


def fit_cost_model(prompt_tokens: Sequence[int], generated: Sequence[int],
                   seconds: Sequence[float]) -> tuple[float, float, float]:
    """Exercise 3 (4 points). Fit the cost model t = c0 + cP * P + cG * G by least squares (lesson 6, a cost
    model) to measured windows: window i had prompt_tokens[i] prompt tokens, generated[i] generated tokens
    and took seconds[i]. Returns (c0, cP, cG). Build the design matrix yourself; numpy.linalg.lstsq may
    solve it. Raise ValueError if the three lists differ in length or there are fewer than 3 windows.
    """
    # TODO: your code here
    raise NotImplementedError
