"""Chapter 1 assignment: the metrics and the significance test, by hand (9 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex01_evaluation.py               # everything, with your points
    pytest tests/exercises/grade_ex01_evaluation.py -k mrr_at_k   # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with trec_eval's own code (pytrec_eval) and with scipy; this file may not import
minirank, pytrec_eval or scipy. Plain Python (math, itertools) and numpy are enough.

A ranking is a list of passage ids, best first; ``judged`` is one query's judgements {pid: grade},
grade 0 = judged not relevant; a passage missing from ``judged`` is unjudged (and counts as grade 0).
"""
from __future__ import annotations

from typing import Mapping, Sequence


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    """Exercise 1 (3 points). nDCG@k with trec_eval's linear gains (lesson 1, section on nDCG).

    DCG@k = sum over the first k positions i = 1..k of grade_i / log2(i + 1); divide by the DCG@k of the
    ideal ranking (all positive grades of ``judged``, best first). A query with no positive grade scores 0.
    """
    # TODO: your code here
    raise NotImplementedError


def mrr_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10, level: int = 1) -> float:
    """Exercise 2 (2 points). Reciprocal rank at k: 1 / (the position, from 1, of the first passage in the
    top k whose grade is at least ``level``), or 0 if there is none (lesson 1, exercise 1).
    """
    # TODO: your code here
    raise NotImplementedError


def judged_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    """Exercise 3 (1 point). The fraction of the top k that has a judgement of any grade, 0 included
    (lesson 1, exercise 6). Divide by k even when the ranking is shorter than k.
    """
    # TODO: your code here
    raise NotImplementedError


def paired_randomisation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exercise 4 (3 points). The exact two-sided p-value of the paired randomisation (sign-flip) test
    (lesson 1, significance tests; exercise 7).

    ``a[i]`` and ``b[i]`` are two systems' scores on query i. Under the null hypothesis each difference
    d_i = a_i - b_i is equally likely to have either sign. Enumerate all 2**n sign patterns and return the
    fraction whose |mean(signed d)| is at least |mean(d)| (count ties with the observed value as at least as
    large; allow a relative tolerance of 1e-9 for rounding). n is at most 14 in the tests.
    """
    # TODO: your code here
    raise NotImplementedError
