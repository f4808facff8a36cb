"""Reference solutions for lessons/exercises/ex03_first.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

from typing import Sequence

import torch


def first_order(z: torch.Tensor, token_ids: Sequence[int]) -> list[int]:
    scores = [float(z[t]) for t in token_ids]
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def last_real_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    last = (positions * attention_mask.long()).argmax(dim=1)
    return logits[torch.arange(logits.shape[0]), last]


def agreement_by_rank(orders_a: Sequence[Sequence[int]], orders_b: Sequence[Sequence[int]]) -> list[float]:
    m = len(orders_a[0])
    return [sum(a[r] == b[r] for a, b in zip(orders_a, orders_b)) / len(orders_a) for r in range(m)]
