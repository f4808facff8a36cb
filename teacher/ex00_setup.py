"""Reference solutions for lessons/exercises/ex00_setup.py (for teachers: see teacher/README.md)."""
from __future__ import annotations

import torch


def choose_dtype(device_type: str, capability: tuple[int, int] | None = None) -> torch.dtype:
    if device_type == "cpu":
        return torch.float32
    if device_type == "mps":
        return torch.float16
    if device_type == "cuda":
        if capability is None:
            raise ValueError("a cuda device needs its compute capability")
        return torch.bfloat16 if capability[0] >= 8 else torch.float16
    raise ValueError(f"unknown device_type {device_type!r}: expected 'cpu', 'mps' or 'cuda'")


def dequantize_q4_1(d: torch.Tensor, m: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    weights = d.float()[:, None] * q.float() + m.float()[:, None]
    return weights.reshape(-1)


def weight_bytes(model: torch.nn.Module) -> int:
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))
