"""Reference solutions for lessons/exercises/ex08_query_likelihood.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

import math

import torch


def query_log_likelihood(logits: torch.Tensor, ids: torch.Tensor, query_start: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = ids.shape[0]
    if logits.shape[0] != length:
        raise ValueError(f"logits has {logits.shape[0]} rows for {length} ids")
    if not 1 <= query_start < length:
        raise ValueError(f"query_start must be 1..{length - 1}, got {query_start}")
    log_p = torch.log_softmax(logits[query_start - 1:length - 1].float(), dim=-1)
    chosen = log_p.gather(-1, ids[query_start:, None]).squeeze(-1)
    return chosen.sum(), chosen.mean()


def contrastive_loss(scores: torch.Tensor, positive: int, temperature: float) -> torch.Tensor:
    if not temperature > 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    if not 0 <= positive < scores.shape[0]:
        raise ValueError(f"positive must index the {scores.shape[0]} scores, got {positive}")
    scaled = scores / temperature
    return torch.logsumexp(scaled, dim=0) - scaled[positive]


def forward_passes(k: int, window: int = 20, stride: int = 10, batch_size: int = 16) -> tuple[int, int]:
    if k < 1 or batch_size < 1 or not 1 <= stride <= window:
        raise ValueError(f"need k >= 1, batch_size >= 1 and 1 <= stride <= window; got k={k}, window={window}, "
                         f"stride={stride}, batch_size={batch_size}")
    windows = 1 if k <= window else math.ceil((k - window) / stride) + 1
    return math.ceil(k / batch_size), windows
