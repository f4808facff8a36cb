"""Reference solutions for lessons/exercises/ex07_perank.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def projector_parameters(encoder_dim: int, llm_dim: int) -> int:
    for name, value in (("encoder_dim", encoder_dim), ("llm_dim", llm_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return (encoder_dim * llm_dim + llm_dim) + (llm_dim * llm_dim + llm_dim)


def constrained_order(logits_of: Callable[[list[int]], torch.Tensor], n: int) -> list[int]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    placed: list[int] = []
    remaining = torch.ones(n, dtype=torch.bool)
    for _ in range(n):
        logits = torch.as_tensor(logits_of(list(placed)), dtype=torch.float32)
        pick = int(logits.masked_fill(~remaining, float("-inf")).nan_to_num(nan=float("-inf")).argmax())
        if not remaining[pick]:  # every open logit was -inf or NaN: take the first open candidate
            pick = int(remaining.nonzero()[0])
        placed.append(pick)
        remaining[pick] = False
    return placed


def listmle_over_steps(step_logits: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    n = step_logits.shape[0]
    if step_logits.shape != (n, n) or sorted(int(i) for i in order) != list(range(n)):
        raise ValueError(f"step_logits must be (n, n) and order a permutation of range(n); got "
                         f"{tuple(step_logits.shape)} and {list(order)}")
    loss = step_logits.new_zeros(())
    for i, target in enumerate(order):
        open_now = torch.as_tensor([int(j) for j in order[i:]])
        loss = loss - (step_logits[i, int(target)] - torch.logsumexp(step_logits[i, open_now], dim=0))
    return loss


def window_tokens(instruction_tokens: int, passage_tokens: Sequence[int]) -> tuple[int, int]:
    return instruction_tokens + sum(passage_tokens), instruction_tokens + len(passage_tokens)
