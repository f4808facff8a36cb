"""Reference solutions for lessons/exercises/ex09_feedback.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def weighted_ranknet(scores: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    n = scores.shape[0]
    order = [int(i) for i in order]
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of range({n}), got {order}")
    if n < 2:
        return scores.sum() * 0
    total = scores.new_zeros(())
    for a in range(n):              # a, b: 0-based positions in the order, ranks a + 1 < b + 1
        for b in range(a + 1, n):
            i, j = order[a], order[b]
            total = total + F.softplus(scores[j] - scores[i]) / (a + 1 + b + 1)
    return total / (n * (n - 1) / 2)


def kl_feedback(query_vector: np.ndarray, passage_vectors: np.ndarray, teacher_scores: Sequence[float],
                steps: int = 100, lr: float = 0.005) -> tuple[np.ndarray, list[float]]:
    passages = torch.as_tensor(np.asarray(passage_vectors), dtype=torch.float32)
    teacher = torch.as_tensor(np.asarray(teacher_scores), dtype=torch.float32)
    query = torch.nn.Parameter(torch.as_tensor(np.asarray(query_vector), dtype=torch.float32).clone())
    with torch.no_grad():
        initial = passages @ query
    spread_t, spread_i = float(teacher.max() - teacher.min()), float(initial.max() - initial.min())
    c = spread_t / spread_i if spread_t > 0 and spread_i > 0 else 1.0
    log_t = torch.log_softmax(teacher, dim=0)
    optimizer = torch.optim.Adam([query], lr=lr)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        log_s = torch.log_softmax((c / 2) * (passages @ query), dim=0)
        loss = (log_t.exp() * (log_t - log_s)).sum()
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return query.detach().numpy(), history


def recall_at_k(query_vector: np.ndarray, passage_vectors: np.ndarray, relevant: Sequence[int], k: int) -> float:
    if len(relevant) == 0 or k < 1:
        raise ValueError(f"need at least one relevant passage and k >= 1; got {len(relevant)} and k={k}")
    scores = np.asarray(passage_vectors, dtype=np.float64) @ np.asarray(query_vector, dtype=np.float64)
    top = set(np.argsort(-scores, kind="stable")[:k].tolist())
    return len(top & set(relevant)) / len(set(relevant))
