"""Chapter 8 assignment: query likelihood, its contrastive loss and what it costs (7 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex08_query_likelihood.py                         # everything, with your points
    pytest tests/exercises/grade_ex08_query_likelihood.py -k contrastive_loss     # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with the library's and with hand computations; this file may not import
minirank. torch is allowed.
"""
from __future__ import annotations

import torch


def query_log_likelihood(logits: torch.Tensor, ids: torch.Tensor, query_start: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exercise 1 (3 points). The query-likelihood scores of one sequence (lesson 8.1, eq. 1 in logs):
    ``ids`` ``(L,)`` is the prompt followed by the query, which occupies ``ids[query_start:]``;
    ``logits`` ``(L, V)`` is the causal model's output, where row t predicts the token at t + 1.
    Returns (s_sum, s_mean) as 0-d tensors: the sum and the mean over the query tokens of
    log p(q_j | prompt, q_<j). Raise ValueError unless 1 <= query_start < L.
    """
    # TODO: your code here
    raise NotImplementedError


def contrastive_loss(scores: torch.Tensor, positive: int, temperature: float) -> torch.Tensor:
    """Exercise 2 (2 points). TSARankLLM's contrastive loss (lesson 8.4, eq. 3) for one query:
    -log( exp(s_+ / tau) / sum_d exp(s_d / tau) ) over the candidates' scores ``(n,)``, where
    ``scores[positive]`` is the positive's. It must stay finite at the paper's tau = 0.001.
    Returns a 0-d tensor autograd can differentiate. Raise ValueError if temperature <= 0 or
    positive is not an index of scores.
    """
    # TODO: your code here
    raise NotImplementedError


def forward_passes(k: int, window: int = 20, stride: int = 10, batch_size: int = 16) -> tuple[int, int]:
    """Exercise 3 (2 points). Forward passes to rerank k candidates (lesson 8.2): query likelihood reads
    k sequences, batch_size per pass; FIRST reads one sliding window per pass, windows of ``window``
    moved by ``stride`` from the back of the list to the front, the last one starting at 0 (chapter 2;
    a list no longer than one window is one window). Returns (pointwise, first). Raise ValueError for
    k < 1 or a stride outside 1..window.
    """
    # TODO: your code here
    raise NotImplementedError
