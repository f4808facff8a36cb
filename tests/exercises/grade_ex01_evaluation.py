"""Grades chapter 1's assignment, lessons/exercises/ex01_evaluation.py (nDCG, MRR, judged@k, a p-value).

    pytest tests/exercises/grade_ex01_evaluation.py

nDCG@10 and MRR are compared with trec_eval's own code (pytrec_eval: ndcg_cut_10, recip_rank) on random
runs, judged@k with hand counts, the p-value with scipy's exact permutation test.
"""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import pytrec_eval
from scipy import stats

from grading import Assignment, Exercise, pytest_tests


def _queries(count: int = 25, seed: int = 1):
    """Random (ranking, judged) pairs: 5-30 passages, some judged 0-3, some unjudged, a few with none relevant."""
    rng = random.Random(seed)
    out = []
    for c in range(count):
        pids = [f"p{i}" for i in range(rng.randint(5, 30))]
        rng.shuffle(pids)
        judged = {pid: rng.choice([0, 0, 1, 2, 3]) for pid in rng.sample(pids, rng.randint(1, len(pids)))}
        judged[f"x{c}"] = rng.choice([1, 2])          # a relevant passage the run never retrieved
        if c % 7 == 0:
            judged = {pid: 0 for pid in judged}       # nothing relevant
        out.append((pids, judged))
    return out


def _trec(ranking, judged, measure: str, level: int = 1) -> float:
    run = {"q": {pid: float(len(ranking) - i) for i, pid in enumerate(ranking)}}
    evaluator = pytrec_eval.RelevanceEvaluator({"q": dict(judged)}, {measure}, relevance_level=level)
    result = evaluator.evaluate(run)["q"]
    return result["ndcg_cut_10" if measure == "ndcg_cut.10" else measure]


def _float(got, what: str) -> float:
    assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{what}: return a float, got {type(got).__name__}"
    return float(got)


def check_ndcg(call) -> None:
    assert _float(call(["a", "b"], {"a": 0, "b": 0}, 10), "no relevant passage") == 0.0, "a query with nothing relevant scores 0"
    by_hand = (1 / math.log2(3)) / (1.0)   # relevant passage at rank 2 of 2, ideal has it at rank 1
    assert math.isclose(call(["a", "b"], {"b": 1}, 10), by_hand, rel_tol=1e-9), f"ranking [a, b], b relevant: expected {by_hand:.6f}"
    for ranking, judged in _queries():
        want = _trec(ranking, judged, "ndcg_cut.10")
        got = _float(call(ranking, judged, 10), "ndcg_at_k")
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12), (
            f"ndcg_at_k = {got:.6f}, trec_eval says {want:.6f} for ranking {ranking[:10]}... and judgements {judged}")


def check_mrr(call) -> None:
    assert call(["a", "b", "c"], {"c": 2}, 10) == pytest.approx(1 / 3), "first relevant passage at rank 3: 1/3"
    assert call(["a", "b", "c"], {"c": 2}, 2) == 0.0, "with k=2 the relevant passage at rank 3 does not count"
    for level in (1, 2):
        for ranking, judged in _queries(seed=2):
            cut = ranking[:10]
            want = _trec(cut, judged, "recip_rank", level) if any(g >= level for g in judged.values()) else 0.0
            got = _float(call(ranking, judged, 10, level), "mrr_at_k")
            assert math.isclose(got, want, rel_tol=1e-9), (
                f"mrr_at_k(level={level}) = {got}, trec_eval's recip_rank on the top 10 says {want} "
                f"(ranking {cut}, judgements {judged})")


def check_judged(call) -> None:
    assert call(["a", "b", "c", "d"], {"a": 0, "c": 3, "z": 1}, 4) == pytest.approx(0.5), "a and c are judged: 2 of 4"
    assert call(["a", "b"], {"a": 1}, 10) == pytest.approx(0.1), "a shorter ranking still divides by k"
    for ranking, judged in _queries(seed=3):
        want = sum(pid in judged for pid in ranking[:10]) / 10
        assert call(ranking, judged, 10) == pytest.approx(want), f"judged_at_k for {ranking[:10]} and {sorted(judged)}"


def check_p_value(call) -> None:
    rng = np.random.default_rng(7)
    for n, shift in [(3, 0.2), (6, 0.0), (8, 0.1), (10, 0.3), (12, 0.05)]:
        a = rng.random(n)
        b = a - shift + rng.normal(0, 0.2, n)
        want = stats.permutation_test((a, b), lambda x, y: np.mean(x - y), permutation_type="samples",
                                      n_resamples=np.inf, alternative="two-sided").pvalue
        got = _float(call(list(a), list(b)), "paired_randomisation_p")
        assert math.isclose(got, want, rel_tol=1e-6), f"n={n}: p = {got:.6f}, scipy's exact test says {want:.6f}"
    assert call([0.5, 0.5], [0.5, 0.5]) == pytest.approx(1.0), "two identical systems: p = 1"


ASSIGNMENT = Assignment(
    "ex01_evaluation", "01",
    [Exercise("ndcg_at_k", 3, check_ndcg), Exercise("mrr_at_k", 2, check_mrr),
     Exercise("judged_at_k", 1, check_judged), Exercise("paired_randomisation_p", 3, check_p_value)],
    forbidden_imports=("minirank", "pytrec_eval", "scipy"),
    forbidden_calls=["minirank.evaluate.ndcg_at_k", "minirank.evaluate.dcg", "minirank.evaluate.evaluate",
                     "minirank.evaluate.paired_test", "scipy.stats.permutation_test"])

test_exercise = pytest_tests(ASSIGNMENT)
