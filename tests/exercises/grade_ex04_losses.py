"""Grades chapter 4's assignment, lessons/exercises/ex04_losses.py (four ranking losses for one query).

    pytest tests/exercises/grade_ex04_losses.py               # all four, with the points
    pytest tests/exercises/grade_ex04_losses.py -k listmle    # listmle and listmle_grad

Each function is compared with minirank.losses (which it may not call) on random queries, on values
computed by hand, at scores of +/-1e4, and run through the chapter's `check_loss`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from grading import Assignment, Exercise, pytest_tests
from minirank import losses as ref

F64 = torch.float64


def _cases(count: int = 12) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Random single queries (scores, target ranks, labels), n from 2 to 8, float64."""
    g = torch.Generator().manual_seed(404)
    out = []
    for c in range(count):
        n = 2 + c % 7
        scores = 3.0 * torch.randn(n, generator=g, dtype=F64)
        ranks = torch.randperm(n, generator=g) + 1
        labels = torch.rand(n, generator=g, dtype=F64) * 3
        out.append((scores, ranks, labels))
    return out


def close(got: Any, want: torch.Tensor, what: str) -> None:
    assert isinstance(got, torch.Tensor), f"{what}: return a torch.Tensor, got {type(got).__name__}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}"
    torch.testing.assert_close(got.to(F64), want, rtol=1e-7, atol=1e-9, msg=lambda m: f"{what}: {m}")


def batched(call: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A one-query exercise as a batched, masked loss, so that minirank.losses.check_loss can run it."""

    def fn(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask
        per_query = []
        for b in range(scores.shape[0]):
            real = mask[b]
            if int(real.sum()) < 2:
                per_query.append(torch.where(real, scores[b], 0.0).sum() * 0.0)
            else:
                per_query.append(call(scores[b][real], targets[b][real]))
        return torch.stack(per_query).mean()

    return fn


def check_weighted_ranknet(call) -> None:
    s = torch.tensor([2.0, 1.0, 0.0], dtype=F64)
    r = torch.tensor([3, 1, 2])
    by_hand = math.log1p(math.exp(-1)) / 3 + math.log1p(math.exp(1)) / 4 + math.log1p(math.exp(2)) / 5
    close(call(s, r), torch.tensor(by_hand, dtype=F64), "weighted_ranknet by hand, scores [2, 1, 0], ranks [3, 1, 2]")
    for scores, ranks, _ in _cases():
        want = ref.weighted_ranknet_loss(scores[None], ranks[None])
        close(call(scores, ranks), want, f"weighted_ranknet on a random query of n={len(scores)}")
    got = call(torch.tensor([1e4, -1e4, 0.0, 1e4], dtype=F64), torch.tensor([4, 1, 2, 3]))
    assert torch.isfinite(got), "weighted_ranknet overflows at scores of +/-1e4: use softplus"
    failures = ref.check_loss(batched(call), top_weighted=True)
    assert failures == [], f"weighted_ranknet fails the chapter's checks (check_loss): {failures}"


def check_listnet(call) -> None:
    close(call(torch.tensor([0.0, 0.0], dtype=F64), torch.tensor([1.0, 0.0], dtype=F64)),
          torch.tensor(math.log(2), dtype=F64), "listnet with equal scores (log 2)")
    for scores, _, labels in _cases():
        close(call(scores, labels), ref.listnet_loss(scores[None], labels[None]), f"listnet n={len(scores)}")
    got = call(torch.tensor([1e4, -1e4], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.isfinite(got), "listnet is not finite at scores of +/-1e4: use log_softmax, not log(softmax)"


def check_listmle(call) -> None:
    close(call(torch.zeros(3, dtype=F64), torch.tensor([1, 2, 3])), torch.tensor(math.log(6), dtype=F64),
          "listmle with equal scores (1/3! per ordering)")
    for scores, ranks, _ in _cases():
        close(call(scores, ranks), ref.listmle_loss(scores[None], ranks[None]), f"listmle n={len(scores)}")
    got = call(torch.tensor([-1e4, 1e4, 0.0], dtype=F64), torch.tensor([1, 2, 3]))
    assert torch.isfinite(got), "listmle is not finite at scores of +/-1e4: use logsumexp"
    failures = ref.check_loss(batched(call))
    assert failures == [], f"listmle fails the chapter's checks (check_loss): {failures}"


def check_listmle_grad(call) -> None:
    for scores, ranks, _ in _cases():
        s = scores.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(ref.listmle_loss(s[None], ranks[None]), s)
        got = call(scores.clone(), ranks)
        close(got, want, f"listmle_grad n={len(scores)} (compared with autograd)")
        assert abs(float(got.sum())) < 1e-9, "listmle_grad must sum to 0: adding a constant to all scores changes nothing"


ASSIGNMENT = Assignment(
    "ex04_losses", "04",
    [Exercise("weighted_ranknet", 3, check_weighted_ranknet), Exercise("listnet", 2, check_listnet),
     Exercise("listmle", 3, check_listmle), Exercise("listmle_grad", 2, check_listmle_grad)],
    forbidden_calls=[f"minirank.losses.{name}" for name in (
        "weighted_ranknet_loss", "ranknet_loss", "listnet_loss", "listmle_loss", "listmle_grad",
        "listnet_grad", "ranknet_grad", "plackett_luce_log_prob")])

test_exercise = pytest_tests(ASSIGNMENT)
