"""Grades chapter 7's assignment, lessons/exercises/ex07_perank.py (projector size, constrained decoding,
ListMLE over steps, prompt tokens).

    pytest tests/exercises/grade_ex07_perank.py

projector_parameters is compared with the library's Projector, constrained_order with a greedy decoder
written here, on logits that favour placed candidates, tie everywhere or are huge, listmle_over_steps with
minirank.perank.listmle_over_steps (value and gradient) and with chapter 4's ListMLE, window_tokens with
hand counts.
"""
from __future__ import annotations

import random

import pytest
import torch

from grading import Assignment, Exercise, pytest_tests
from minirank import losses
from minirank import perank as PR
from minirank.constrained import MASKED


def check_projector_parameters(call) -> None:
    assert call(384, 576) == 554_112, f"MiniLM (384) into the default LLM (576) has 554,112 parameters, not {call(384, 576)}"
    for d_enc, d_llm in ((1, 1), (3, 5), (768, 4096), (17, 8)):
        want = sum(p.numel() for p in PR.Projector(d_enc, d_llm).parameters()) if d_llm < 1000 else (
            d_enc * d_llm + d_llm + d_llm * d_llm + d_llm)
        got = call(d_enc, d_llm)
        assert got == want, f"({d_enc}, {d_llm}): {got}, the projector has {want}"
    for bad in ((0, 4), (4, -1), (2.5, 4)):
        with pytest.raises(ValueError):
            call(*bad)


def _greedy(logits_of, n: int) -> list[int]:
    placed: list[int] = []
    for _ in range(n):
        logits = torch.as_tensor(logits_of(list(placed)), dtype=torch.float32).clone()
        logits[placed] = float("-inf")
        placed.append(int(logits.argmax()))
    return placed


class Recorder:
    """A logits function that remembers what it was asked."""

    def __init__(self, make):
        self.make, self.calls = make, []

    def __call__(self, placed):
        self.calls.append(list(placed))
        return self.make(list(placed))


def check_constrained_order(call) -> None:
    gen = torch.Generator().manual_seed(7)
    for n in (1, 2, 5, 9):
        table = torch.randn(n, n, generator=gen)
        fn = Recorder(lambda placed, t=table: t[len(placed)])
        got = call(fn, n)
        assert sorted(got) == list(range(n)), f"n={n}: {got} is not a permutation of range({n})"
        assert got == _greedy(lambda placed, t=table: t[len(placed)], n), (
            f"n={n}: {got}, greedy decoding over the remaining candidates gives "
            f"{_greedy(lambda placed, t=table: t[len(placed)], n)}")
        assert len(fn.calls) == n, f"n={n}: logits_of was called {len(fn.calls)} times, one step per candidate is {n}"
        assert all(c == got[:i] for i, c in enumerate(fn.calls)), (
            f"step i must pass the first i placed candidates: calls {fn.calls}, order {got}")
    # the placed candidates score highest: the constraint must still hold
    greedy_for_placed = lambda placed: torch.tensor([100.0 if j in placed else -float(j) for j in range(6)])
    assert call(greedy_for_placed, 6) == [0, 1, 2, 3, 4, 5], "placed candidates that score 100 must stay placed"
    assert call(lambda placed: torch.zeros(7), 7) == list(range(7)), "all logits tied: take the lowest index"
    huge = torch.tensor([1e4, -1e4, 3e4, 2e4])
    assert call(lambda placed: huge, 4) == [2, 3, 0, 1], "logits of 1e4: the order is by the logits"
    with pytest.raises(ValueError):
        call(lambda placed: torch.zeros(1), 0)


def _library(step_logits: torch.Tensor, order: list[int]) -> torch.Tensor:
    n = len(order)
    masked = step_logits.clone()
    for i in range(n):
        masked[i, order[:i]] = MASKED
    return PR.listmle_over_steps(masked[None], torch.tensor([order]), [n])


def check_listmle_over_steps(call) -> None:
    rng = random.Random(8)
    gen = torch.Generator().manual_seed(8)
    for n in (1, 2, 4, 7):
        order = list(range(n))
        rng.shuffle(order)
        logits = (3 * torch.randn(n, n, generator=gen)).requires_grad_()
        ours = call(logits, order)
        assert torch.is_tensor(ours) and ours.dim() == 0, f"return a 0-d tensor, got {ours!r}"
        want = _library(logits.detach(), order)
        assert torch.allclose(ours.detach().float(), want, atol=1e-5), (
            f"n={n}, order {order}: {float(ours.detach()):.6f}, eq. 5 summed over steps gives {float(want):.6f}"
            + (" (that is the mean over steps: eq. 5 sums)" if n > 1 and abs(float(ours.detach()) * n - float(want)) < 1e-4 else ""))
        assert ours.requires_grad, "the loss must keep the graph: autograd differentiates it in training"
        (grad,) = torch.autograd.grad(ours, logits)
        ref_logits = logits.detach().clone().requires_grad_()
        masked = ref_logits.clone()
        for i in range(n):
            masked[i, order[:i]] = MASKED
        PR.listmle_over_steps(masked[None], torch.tensor([order]), [n]).backward()
        assert torch.allclose(grad, ref_logits.grad, atol=1e-5), f"n={n}: the gradient differs from eq. 5's"
    scores = torch.randn(5, generator=gen)
    order = [3, 0, 4, 1, 2]
    ranks = torch.empty(5, dtype=torch.long)
    ranks[torch.tensor(order)] = torch.arange(1, 6)
    same = call(scores[None].expand(5, 5).clone(), order)
    assert torch.allclose(same.detach().float(), losses.listmle_loss(scores[None], ranks[None]), atol=1e-5), (
        "when every step sees the same scores the loss is chapter 4's ListMLE")


def check_window_tokens(call) -> None:
    assert tuple(call(150, [30] * 20)) == (750, 170), "150 instruction tokens and 20 passages of 30 tokens"
    assert tuple(call(12, [5, 60, 1])) == (78, 15)
    assert tuple(call(40, [])) == (40, 40), "no passages: the instruction only"


ASSIGNMENT = Assignment(
    "ex07_perank", "07",
    [Exercise("projector_parameters", 1, check_projector_parameters),
     Exercise("constrained_order", 3, check_constrained_order),
     Exercise("listmle_over_steps", 3, check_listmle_over_steps),
     Exercise("window_tokens", 1, check_window_tokens)],
    forbidden_calls=["minirank.perank.listmle_over_steps", "minirank.losses.listmle_loss",
                     "minirank.losses.plackett_luce_log_prob", "minirank.constrained.step_logits"])

test_exercise = pytest_tests(ASSIGNMENT)
