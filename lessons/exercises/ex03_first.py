"""Chapter 3 assignment: FIRST's readout, by hand (7 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex03_first.py                     # everything, with your points
    pytest tests/exercises/grade_ex03_first.py -k first_order      # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with minirank.first and minirank.agreement; this file may not import minirank.
"""
from __future__ import annotations

from typing import Sequence

import torch


def first_order(z: torch.Tensor, token_ids: Sequence[int]) -> list[int]:
    """Exercise 1 (2 points). FIRST's ranking of a window from one logit vector (lesson 3; FIRST §3.2).

    ``z``: (vocabulary,) logits at the first answer position; ``token_ids``: the m identifier tokens, one
    per passage of the window. Return the passage indices 0..m-1 by decreasing logit of their identifier,
    ties in input order (a stable sort).
    """
    # TODO: your code here
    raise NotImplementedError


def last_real_logits(logits: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Exercise 2 (3 points). The logits at each row's last real token of a padded batch (lesson 3, batching;
    exercise 4).

    ``logits``: (batch, tokens, vocabulary); ``attention_mask``: (batch, tokens), 1 for real tokens, 0 for
    padding, which may be on the left or on the right of each row (every row has at least one real token).
    Return (batch, vocabulary). ``logits[:, -1]`` is right only for left padding: use a gather.
    """
    # TODO: your code here
    raise NotImplementedError


def agreement_by_rank(orders_a: Sequence[Sequence[int]], orders_b: Sequence[Sequence[int]]) -> list[float]:
    """Exercise 3 (2 points). Per rank position 1..m, the fraction of windows whose two rankings put the same
    passage there (FIRST Figure 2; lesson 3).

    ``orders_a[w]`` and ``orders_b[w]``: two permutations of window w, best first. All windows have the
    same size m here. Return a list of m floats.
    """
    # TODO: your code here
    raise NotImplementedError
