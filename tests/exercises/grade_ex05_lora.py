"""Grades chapter 5's assignment, lessons/exercises/ex05_lora.py (a LoRA layer, its size, the targets).

    pytest tests/exercises/grade_ex05_lora.py

lora_linear and lora_parameter_count are compared with the peft library's LoRA on small linear layers,
rank_targets with minirank.losses.ranks_from_labels.
"""
from __future__ import annotations

import random

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from grading import Assignment, Exercise, pytest_tests
from minirank import losses


class Layers(nn.Module):
    def __init__(self, shapes, bias=True):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d_in, d_out, bias=bias) for d_out, d_in in shapes)

    def forward(self, x):
        return self.layers[0](x)


def _peft(shapes, r, alpha, bias=True, seed=0):
    torch.manual_seed(seed)
    names = [f"layers.{i}" for i in range(len(shapes))]
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=names)
    return get_peft_model(Layers(shapes, bias), config)


def check_lora_linear(call) -> None:
    g = torch.Generator().manual_seed(6)
    for d_in, d_out, r, alpha, bias in [(8, 5, 2, 4, True), (16, 16, 4, 8, False), (12, 3, 1, 1, True), (6, 10, 6, 3, True)]:
        model = _peft([(d_out, d_in)], r, alpha, bias)
        layer = model.base_model.model.layers[0]
        with torch.no_grad():   # peft starts B at zero; give it values so that the update shows
            layer.lora_A["default"].weight.copy_(torch.randn(r, d_in, generator=g))
            layer.lora_B["default"].weight.copy_(torch.randn(d_out, r, generator=g))
        x = torch.randn(3, 2, d_in, generator=g)
        with torch.no_grad():
            want = layer(x)
            got = call(x, layer.base_layer.weight, layer.base_layer.bias, layer.lora_A["default"].weight,
                       layer.lora_B["default"].weight, alpha)
        assert isinstance(got, torch.Tensor) and got.shape == want.shape, (
            f"d_in={d_in}, d_out={d_out}: shape {getattr(got, 'shape', got)}, expected {tuple(want.shape)}")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5,
                                   msg=lambda m: f"against peft's LoRA layer (d_in={d_in}, d_out={d_out}, r={r}, alpha={alpha}): {m}")


def check_parameter_count(call) -> None:
    for shapes, r in [([(5, 8)], 2), ([(16, 16), (4, 16), (16, 4)], 4), ([(576, 576), (192, 576)], 8)]:
        model = _peft(shapes, r, 2 * r)
        want = sum(p.numel() for p in model.parameters() if p.requires_grad)
        got = call(shapes, r)
        assert got == want, f"LoRA r={r} on {shapes}: {got} parameters, peft trains {want}"


def check_rank_targets(call) -> None:
    assert list(call([0, 3, 1, 3])) == [4, 1, 3, 2], "grades [0, 3, 1, 3] -> ranks [4, 1, 3, 2] (the tie in input order)"
    rng = random.Random(8)
    for _ in range(30):
        grades = [rng.choice([0, 1, 2, 3]) for _ in range(rng.randint(1, 20))]
        want = losses.ranks_from_labels(torch.tensor([grades], dtype=torch.float32))[0].tolist()
        got = call(grades)
        assert [int(x) for x in got] == want, f"rank_targets({grades}) = {list(got)}, expected {want}"


ASSIGNMENT = Assignment(
    "ex05_lora", "05",
    [Exercise("lora_linear", 3, check_lora_linear), Exercise("lora_parameter_count", 2, check_parameter_count),
     Exercise("rank_targets", 2, check_rank_targets)],
    forbidden_imports=("minirank", "peft"),
    forbidden_calls=["minirank.losses.ranks_from_labels"])

test_exercise = pytest_tests(ASSIGNMENT)
