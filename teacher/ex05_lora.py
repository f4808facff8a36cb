"""Reference solutions for lessons/exercises/ex05_lora.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

from typing import Sequence

import torch


def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_a: torch.Tensor,
                lora_b: torch.Tensor, alpha: float) -> torch.Tensor:
    out = x @ weight.T
    if bias is not None:
        out = out + bias
    return out + (alpha / lora_a.shape[0]) * ((x @ lora_a.T) @ lora_b.T)


def lora_parameter_count(shapes: Sequence[tuple[int, int]], r: int) -> int:
    return sum(r * (d_in + d_out) for d_out, d_in in shapes)


def rank_targets(grades: Sequence[float]) -> list[int]:
    order = sorted(range(len(grades)), key=lambda i: -grades[i])
    ranks = [0] * len(grades)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks
