"""Reference solutions for lessons/exercises/ex06_latency.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _quantile(values: list[float], q: float) -> float:
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def median_and_spread(seconds: Sequence[float]) -> tuple[float, float]:
    if len(seconds) == 0:
        raise ValueError("no timings")
    values = sorted(float(s) for s in seconds)
    return _quantile(values, 0.5), _quantile(values, 0.75) - _quantile(values, 0.25)


def predicted_speedup(prefill_s: float, step_s: float, generated: int) -> float:
    return 1 + (generated - 1) * step_s / prefill_s


def fit_cost_model(prompt_tokens: Sequence[int], generated: Sequence[int],
                   seconds: Sequence[float]) -> tuple[float, float, float]:
    if not len(prompt_tokens) == len(generated) == len(seconds):
        raise ValueError("prompt_tokens, generated and seconds must have one entry per window")
    if len(seconds) < 3:
        raise ValueError("three parameters need at least three windows")
    design = np.column_stack([np.ones(len(seconds)), np.asarray(prompt_tokens, float), np.asarray(generated, float)])
    c0, cp, cg = np.linalg.lstsq(design, np.asarray(seconds, float), rcond=None)[0]
    return float(c0), float(cp), float(cg)
