"""Chapter 5 assignment: LoRA and the training targets, by hand (7 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex05_lora.py                   # everything, with your points
    pytest tests/exercises/grade_ex05_lora.py -k lora_linear    # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. The grader
compares your functions with the peft library's LoRA layers and with minirank.losses; this file may not
import minirank or peft.
"""
from __future__ import annotations

from typing import Sequence

import torch


def lora_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, lora_a: torch.Tensor,
                lora_b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Exercise 1 (3 points). A linear layer with a LoRA update (lesson 5; Hu et al. 2021, eq. 3).

    ``x``: (..., d_in); ``weight``: (d_out, d_in), frozen; ``bias``: (d_out,) or None; ``lora_a``: (r, d_in);
    ``lora_b``: (d_out, r). Return x W^T + bias + (alpha / r) * (x A^T) B^T, shape (..., d_out).
    Do not form the d_out x d_in product B A: keep the low-rank path (two thin matrix products).
    """
    # TODO: your code here
    raise NotImplementedError


def lora_parameter_count(shapes: Sequence[tuple[int, int]], r: int) -> int:
    """Exercise 2 (2 points). How many parameters LoRA of rank r trains on linear layers of the given
    (d_out, d_in) shapes (lesson 5, what LoRA trains). Returns an int.
    """
    # TODO: your code here
    raise NotImplementedError


def rank_targets(grades: Sequence[float]) -> list[int]:
    """Exercise 3 (2 points). The target ranks of a training window from its passages' grades (lesson 5,
    training windows): 1 = highest grade; equal grades are ranked in input order (the earlier passage
    gets the better rank). Returns a list of len(grades) ints, a permutation of 1..n.
    """
    # TODO: your code here
    raise NotImplementedError
