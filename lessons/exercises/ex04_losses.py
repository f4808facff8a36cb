"""Chapter 4 assignment: write four ranking losses yourself (10 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex04_losses.py                     # everything, with your points
    pytest tests/exercises/grade_ex04_losses.py -k weighted_ranknet # one exercise
    pytest tests/exercises/grade_ex04_losses.py -k listmle          # listmle and listmle_grad

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your code with minirank.losses on random inputs, on hand-computed values and at scores of
+/-1e4; this file may not import minirank (writing the loss is the exercise).

Every function works on ONE query: 1-D tensors of length n, no batch and no padding mask.
  scores        (n,) float: the model's score for each candidate, higher = more relevant.
  target_ranks  (n,) long: the true rank of each candidate, 1 = best (a permutation of 1..n).
  labels        (n,) float: graded relevance, higher = better.
Use only torch operations (no Python floats in the middle) so that autograd still works.
Hints: torch.nn.functional.softplus, torch.logsumexp, torch.log_softmax, torch.argsort.
"""

from __future__ import annotations

import torch
from torch import Tensor


def weighted_ranknet(scores: Tensor, target_ranks: Tensor) -> Tensor:
    """Exercise 1. FIRST's weighted RankNet (FIRST §3.2, eq. 2), with the intended sign.

    Sum over every pair (i, j) with target_ranks[i] < target_ranks[j] of
        log(1 + exp(scores[j] - scores[i])) / (target_ranks[i] + target_ranks[j]).
    Keep it stable at scores of +/-1e4 (log(1 + exp(x)) overflows; softplus does not).
    Returns a 0-dim tensor.
    """
    # TODO: your code here
    raise NotImplementedError


def listnet(scores: Tensor, labels: Tensor) -> Tensor:
    """Exercise 2. Top-1 ListNet (Cao et al. 2007): cross-entropy between two softmaxes.

    -sum_i softmax(labels)[i] * log softmax(scores)[i]. Returns a 0-dim tensor.
    """
    raise NotImplementedError


def listmle(scores: Tensor, target_ranks: Tensor) -> Tensor:
    """Exercise 3. ListMLE (PE-Rank §3.3, eq. 5): -log of the Plackett-Luce probability.

    Put the candidates in target order (best first): s_(1), ..., s_(n). Then
        loss = sum_{t=1..n} [ logsumexp(s_(t), ..., s_(n)) - s_(t) ].
    Returns a 0-dim tensor.
    """
    # TODO: your code here
    raise NotImplementedError


def listmle_grad(scores: Tensor, target_ranks: Tensor) -> Tensor:
    """Exercise 4. The gradient of listmle with respect to scores, derived by hand (no autograd).

    From the lesson: d loss / d s_i = sum_{t <= r_i} P_t(i) - 1, where P_t(i) is the softmax
    probability of candidate i among the candidates not yet placed at step t. Returns (n,).
    """
    # TODO: your code here
    raise NotImplementedError
