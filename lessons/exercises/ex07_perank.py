"""Chapter 7 assignment: PE-Rank's projector, constrained decoding and its loss (8 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex07_perank.py                          # everything, with your points
    pytest tests/exercises/grade_ex07_perank.py -k constrained_order     # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with the library's and with hand computations; this file may not import
minirank. torch is allowed.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def projector_parameters(encoder_dim: int, llm_dim: int) -> int:
    """Exercise 1 (1 point). The number of trainable parameters of PE-Rank's projector E_M (lesson 7.2,
    §3.1): Linear(encoder_dim, llm_dim) -> GELU -> Linear(llm_dim, llm_dim), both layers with a bias.
    Raise ValueError unless both dimensions are positive integers.
    """
    # TODO: your code here
    raise NotImplementedError


def constrained_order(logits_of: Callable[[list[int]], torch.Tensor], n: int) -> list[int]:
    """Exercise 2 (3 points). Dynamic-constrained greedy decoding (lesson 7.4, Algorithm 1) over n
    candidates. ``logits_of(placed)`` takes the candidates placed so far (a list, in order) and returns
    the ``(n,)`` logits of this step for *all* n candidates, placed ones included (they may even score
    highest). Call it once per step, n times in all; at each step take the best candidate not yet placed
    (ties: the lowest index). Returns the order, a permutation of range(n). Raise ValueError for n < 1.
    """
    # TODO: your code here
    raise NotImplementedError


def listmle_over_steps(step_logits: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """Exercise 3 (3 points). PE-Rank's ranking loss, eq. 5 (lesson 7.6): the sum over the steps i of
    -log P(order[i] | step i), where step i's softmax runs over the candidates not yet placed,
    order[i], order[i+1], ... only. ``step_logits``: ``(n, n)`` float, row i the logits of step i for every
    candidate (not masked: masking is your job); ``order``: the gold order, a permutation of range(n).
    Returns a 0-d tensor that autograd can differentiate (summed over steps, not averaged).
    """
    # TODO: your code here
    raise NotImplementedError


def window_tokens(instruction_tokens: int, passage_tokens: Sequence[int]) -> tuple[int, int]:
    """Exercise 4 (1 point). The prompt tokens one window makes the model process (lesson 7.1, §5.2):
    a text window reads the instruction's tokens and every passage's tokens, a PE-Rank window the
    instruction's tokens and one embedding per passage. ``instruction_tokens``: everything in the prompt
    but the passages; ``passage_tokens``: each passage's length in tokens. Returns (text, pe_rank).
    """
    # TODO: your code here
    raise NotImplementedError
