"""Grades chapter 0's assignment, lessons/exercises/ex00_setup.py (dtype choice, Q4_1, memory).

    pytest tests/exercises/grade_ex00_setup.py

choose_dtype is compared with minirank.device.pick_dtype on faked GPUs, dequantize_q4_1 with the gguf
package's own Q4_1 decoder on packed blocks, weight_bytes with torch's byte counts.
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

from grading import Assignment, Exercise, pytest_tests
from minirank import device
from minirank.models import tiny_model


def check_choose_dtype(call) -> None:
    assert call("cpu") == torch.float32, "choose_dtype('cpu') must be torch.float32"
    assert call("mps") == torch.float16, "choose_dtype('mps') must be torch.float16"
    for capability in [(6, 1), (7, 0), (7, 5), (8, 0), (8, 6), (8, 9), (9, 0), (10, 0)]:
        with mock.patch("torch.cuda.get_device_capability", return_value=capability):
            want = device.pick_dtype(torch.device("cuda"))
        got = call("cuda", capability)
        assert got == want, f"choose_dtype('cuda', {capability}) = {got}, expected {want}"
    with pytest.raises(ValueError, match="tpu"):
        call("tpu")


def _packed(d: np.ndarray, m: np.ndarray, q: np.ndarray) -> np.ndarray:
    """GGUF's Q4_1 block layout: d (fp16), m (fp16), 16 bytes; byte j holds q[j] (low) and q[j + 16] (high)."""
    qs = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    return np.concatenate([d.astype(np.float16)[:, None].view(np.uint8), m.astype(np.float16)[:, None].view(np.uint8), qs], axis=1)


def check_dequantize_q4_1(call) -> None:
    rng = np.random.default_rng(0)
    for blocks in (1, 3, 8):
        d = rng.normal(0, 0.05, blocks).astype(np.float16)
        m = rng.normal(0, 0.1, blocks).astype(np.float16)
        q = rng.integers(0, 16, (blocks, 32)).astype(np.uint8)
        want = dequantize(_packed(d, m, q).reshape(-1), GGMLQuantizationType.Q4_1).reshape(-1)
        got = call(torch.from_numpy(d), torch.from_numpy(m), torch.from_numpy(q))
        assert isinstance(got, torch.Tensor), f"return a torch.Tensor, got {type(got).__name__}"
        assert got.dtype == torch.float32, f"return float32 weights, got {got.dtype}"
        assert tuple(got.shape) == (blocks * 32,), f"{blocks} blocks: shape {tuple(got.shape)}, expected ({blocks * 32},)"
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{blocks} blocks: your weights differ from gguf's Q4_1 decoder")


def check_weight_bytes(call) -> None:
    model = tiny_model(64, seed=0)
    want = sum(p.numel() * 4 for p in model.parameters())
    got = call(model)
    assert got == want, f"tiny float32 model: {got} bytes, expected {want}"
    half = call(model.to(torch.bfloat16))
    assert half == want // 2, f"the same model in bfloat16: {half} bytes, expected {want // 2}"


ASSIGNMENT = Assignment(
    "ex00_setup", "00",
    [Exercise("choose_dtype", 2, check_choose_dtype), Exercise("dequantize_q4_1", 3, check_dequantize_q4_1),
     Exercise("weight_bytes", 1, check_weight_bytes)],
    forbidden_imports=("minirank", "gguf"),
    forbidden_calls=["minirank.device.pick_dtype"])

test_exercise = pytest_tests(ASSIGNMENT)
