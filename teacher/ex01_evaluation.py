"""Reference solutions for lessons/exercises/ex01_evaluation.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence


def _dcg(gains: Sequence[float], k: int) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(list(gains)[:k]))


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    ideal = _dcg(sorted((g for g in judged.values() if g > 0), reverse=True), k)
    if ideal == 0:
        return 0.0
    return _dcg([max(judged.get(pid, 0), 0) for pid in ranking], k) / ideal


def mrr_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10, level: int = 1) -> float:
    for position, pid in enumerate(ranking[:k], start=1):
        if judged.get(pid, 0) >= level:
            return 1.0 / position
    return 0.0


def judged_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    return sum(pid in judged for pid in ranking[:k]) / k


def paired_randomisation_p(a: Sequence[float], b: Sequence[float]) -> float:
    d = [x - y for x, y in zip(a, b)]
    observed = abs(sum(d))
    hits = 0
    for signs in itertools.product((1, -1), repeat=len(d)):
        if abs(sum(s * x for s, x in zip(signs, d))) >= observed * (1 - 1e-9):
            hits += 1
    return hits / 2 ** len(d)
