"""Chapter 2 assignment: the sliding window and reading the model's answer (8 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex02_listwise.py                       # everything, with your points
    pytest tests/exercises/grade_ex02_listwise.py -k window_schedule    # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with minirank.listwise's; this file may not import minirank.
"""
from __future__ import annotations

from typing import Sequence


def window_schedule(k: int, window: int = 20, stride: int = 10) -> list[tuple[int, int]]:
    """Exercise 1 (3 points). The (start, end) windows over the top k, from the back of the list to the
    front (lesson 2, the sliding window; FIRST §3.1).

    The first window covers the last ``window`` positions; each next one starts ``stride`` positions
    higher. The last window always starts at 0 and is full width where the list allows (min(window, k)),
    so the top of the list is compared even when k - window is not a multiple of stride. A list no longer
    than ``window`` gets one window over everything; k = 0 or 1 gets no windows.
    Raise ValueError if stride > window.
    """
    # TODO: your code here
    raise NotImplementedError


def parse_permutation(text: str, n: int) -> list[int]:
    """Exercise 2 (3 points). Turn the model's answer, e.g. "[B] > [A] > [C]", into a permutation of range(n)
    (lesson 2, reading the answer).

    Identifiers are capital letters in square brackets, spaces allowed inside: "[A]", "[ B ]"; [A] is 0.
    Keep the first mention of each valid identifier, in order; drop repeats, identifiers outside the window
    (a letter >= the n-th) and any other text; then append the identifiers never mentioned, in input order.
    Hint: the re module, with the pattern r"\\[\\s*([A-Z])\\s*\\]".
    """
    # TODO: your code here
    raise NotImplementedError


def sliding_pass(relevance: Sequence[float], window: int, stride: int) -> list[int]:
    """Exercise 3 (2 points). One pass of the sliding window with a perfect window ranker (lesson 2, why the
    windows overlap; exercise 3).

    ``relevance[i]``: the hidden relevance of the passage now at position i. Go through
    window_schedule(len(relevance), window, stride) in order; in each window, sort the passages it covers by
    decreasing relevance (ties keep their order). Return the final order as a list of original positions.
    """
    # TODO: your code here
    raise NotImplementedError
