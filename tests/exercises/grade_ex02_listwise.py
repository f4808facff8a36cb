"""Grades chapter 2's assignment, lessons/exercises/ex02_listwise.py (windows, parsing, one pass).

    pytest tests/exercises/grade_ex02_listwise.py

window_schedule and parse_permutation are compared with minirank.listwise's; sliding_pass with a pass
built from the library's schedule, and with the overlap property the lesson proves.
"""
from __future__ import annotations

import random

import pytest

from grading import Assignment, Exercise, pytest_tests
from minirank import listwise


def check_window_schedule(call) -> None:
    assert call(100, 20, 10)[:2] == [(80, 100), (70, 90)], "k=100, window 20, stride 10 starts (80, 100), (70, 90)"
    for k in range(0, 61):
        for window in range(1, 13):
            for stride in range(1, window + 1):
                want = listwise.window_schedule(k, window, stride)
                got = call(k, window, stride)
                assert [tuple(w) for w in got] == want, f"window_schedule({k}, {window}, {stride}) = {got}, expected {want}"
    with pytest.raises(ValueError):
        call(10, 4, 5)


def check_parse_permutation(call) -> None:
    cases = ["[B] > [A] > [C]", "[C] > [c] > [C] > [Q] > [A]", "", "I think [ D ] is best, then [B]",
             "[A] Paris is the capital ... [B] ...", "[E] > [E] > [E]", "[Z] > [Y]", "no identifiers at all"]
    rng = random.Random(2)
    for _ in range(40):
        n = rng.randint(1, 20)
        letters = [chr(ord("A") + rng.randint(0, 22)) for _ in range(rng.randint(0, 25))]
        cases.append(" > ".join(f"[{x}]" if rng.random() > 0.1 else x for x in letters))
    for text in cases:
        for n in (1, 4, 12, 20):
            want, _ = listwise.parse_permutation(text, n)
            got = call(text, n)
            assert list(got) == want, f"parse_permutation({text!r}, {n}) = {got}, expected {want}"


def check_sliding_pass(call) -> None:
    rng = random.Random(3)
    for trial in range(30):
        k, window = rng.randint(2, 60), rng.randint(2, 12)
        stride = rng.randint(1, window)
        relevance = [rng.random() for _ in range(k)]
        want = list(range(k))
        for start, end in listwise.window_schedule(k, window, stride):
            want[start:end] = sorted(want[start:end], key=lambda i: -relevance[i])
        got = call(relevance, window, stride)
        assert list(got) == want, f"sliding_pass(k={k}, window={window}, stride={stride}) = {got}, expected {want}"
        top = window - stride
        assert list(got)[:top] == sorted(range(k), key=lambda i: -relevance[i])[:top], (
            "after one pass the top window - stride passages must be the true best, in order")


ASSIGNMENT = Assignment(
    "ex02_listwise", "02",
    [Exercise("window_schedule", 3, check_window_schedule), Exercise("parse_permutation", 3, check_parse_permutation),
     Exercise("sliding_pass", 2, check_sliding_pass)],
    forbidden_calls=["minirank.listwise.window_schedule", "minirank.listwise.parse_permutation"])

test_exercise = pytest_tests(ASSIGNMENT)
