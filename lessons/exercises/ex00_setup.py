"""Chapter 0 assignment: the number formats the book runs in (6 points).

Fill in each TODO, then grade your work:

    pytest tests/exercises/grade_ex00_setup.py                    # everything, with your points
    pytest tests/exercises/grade_ex00_setup.py -k dequantize_q4_1 # one exercise

A function that still raises NotImplementedError fails with a message saying what to do. This file may
not import minirank or gguf: the grader compares your functions with theirs.
"""
from __future__ import annotations

import torch


def choose_dtype(device_type: str, capability: tuple[int, int] | None = None) -> torch.dtype:
    """Exercise 1 (2 points). The number format minirank runs a model in (lesson 0, "device and dtype").

    ``device_type``: "cpu", "mps" or "cuda"; ``capability``: the GPU's compute capability (major, minor),
    given only for "cuda". Return torch.bfloat16 on GPUs with native bf16 (Ampere and newer, major >= 8),
    torch.float16 on older GPUs (a T4 is 7.5) and on Apple's mps, torch.float32 on the CPU.
    Raise ValueError for any other device_type, naming it.
    """
    # TODO: your code here
    raise NotImplementedError


def dequantize_q4_1(d: torch.Tensor, m: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Exercise 2 (3 points). Undo GGUF's Q4_1 quantisation (lesson 0, "the default model").

    Weights are stored in blocks of 32: each block has a scale ``d`` and an offset ``m`` and 32 four-bit
    integers ``q`` in 0..15, and each weight is ``w = d * q + m``.
    ``d``, ``m``: (blocks,) float16; ``q``: (blocks, 32) uint8. Return the (blocks * 32,) float32 weights,
    block after block. Compute in float32 (convert d and m first).
    """
    # TODO: your code here
    raise NotImplementedError


def weight_bytes(model: torch.nn.Module) -> int:
    """Exercise 3 (1 point). The memory a model's parameters take, in bytes (number of weights times the
    size of one element of each parameter's dtype: 4 for float32, 2 for bfloat16). Returns an int.
    """
    # TODO: your code here
    raise NotImplementedError
