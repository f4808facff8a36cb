"""Reference solutions for lessons/exercises/ex04_losses.py (for teachers: see teacher/README.md).

Written with plain loops, independently of minirank.losses, so the grader compares two different
implementations. tests/exercises/test_assignments.py grades this file and expects every point.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def weighted_ranknet(scores: Tensor, target_ranks: Tensor) -> Tensor:
    total = scores.new_zeros(())
    n = scores.shape[0]
    for i in range(n):
        for j in range(n):
            if target_ranks[i] < target_ranks[j]:
                weight = 1.0 / (target_ranks[i] + target_ranks[j]).to(scores.dtype)
                total = total + weight * F.softplus(scores[j] - scores[i])
    return total


def listnet(scores: Tensor, labels: Tensor) -> Tensor:
    target = torch.softmax(labels.to(scores.dtype), dim=0)
    return -(target * torch.log_softmax(scores, dim=0)).sum()


def listmle(scores: Tensor, target_ranks: Tensor) -> Tensor:
    ordered = scores[torch.argsort(target_ranks)]
    total = scores.new_zeros(())
    for t in range(ordered.shape[0]):
        total = total + torch.logsumexp(ordered[t:], dim=0) - ordered[t]
    return total


def listmle_grad(scores: Tensor, target_ranks: Tensor) -> Tensor:
    order = torch.argsort(target_ranks)
    grad = -torch.ones_like(scores)
    for t in range(scores.shape[0]):
        unplaced = order[t:]
        grad[unplaced] += torch.softmax(scores[unplaced], dim=0)
    return grad
