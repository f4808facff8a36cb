"""Reference solutions for lessons/exercises/ex02_listwise.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

import re
from typing import Sequence

IDENTIFIER = re.compile(r"\[\s*([A-Z])\s*\]")


def window_schedule(k: int, window: int = 20, stride: int = 10) -> list[tuple[int, int]]:
    if stride > window:
        raise ValueError(f"stride {stride} > window {window}")
    if k <= 1:
        return []
    schedule, end = [], k
    while end - window > 0:
        schedule.append((end - window, end))
        end -= stride
    schedule.append((0, min(window, k)))
    return schedule


def parse_permutation(text: str, n: int) -> list[int]:
    order: list[int] = []
    for letter in IDENTIFIER.findall(text or ""):
        i = ord(letter) - ord("A")
        if i < n and i not in order:
            order.append(i)
    return order + [i for i in range(n) if i not in order]


def sliding_pass(relevance: Sequence[float], window: int, stride: int) -> list[int]:
    order = list(range(len(relevance)))
    for start, end in window_schedule(len(order), window, stride):
        order[start:end] = sorted(order[start:end], key=lambda i: -relevance[i])
    return order
