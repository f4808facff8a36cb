"""Grades chapter 8's assignment, lessons/exercises/ex08_query_likelihood.py (the query's log-likelihood,
the contrastive loss, forward passes).

    pytest tests/exercises/grade_ex08_query_likelihood.py

query_log_likelihood is compared with minirank.pointwise's token_log_probs and reduce_query (and on logits
built so that reading them one position off gives another answer), contrastive_loss with
minirank.losses.infonce_loss (value and gradient, at tau = 0.001 too), forward_passes with
minirank.listwise.window_schedule and the ceiling of k / batch_size.
"""
from __future__ import annotations

import math

import pytest
import torch

from grading import Assignment, Exercise, pytest_tests
from minirank import losses, pointwise
from minirank.listwise import window_schedule


def _library(logits: torch.Tensor, ids: torch.Tensor, start: int) -> tuple[float, float]:
    length = ids.shape[0]
    rows, targets = logits[start - 1:length - 1][None], ids[start:][None]
    mask = torch.ones_like(targets, dtype=torch.bool)
    log_p = pointwise.token_log_probs(rows, targets, mask)
    return (float(pointwise.reduce_query(log_p, mask, "sum")), float(pointwise.reduce_query(log_p, mask, "mean")))


def check_query_log_likelihood(call) -> None:
    gen = torch.Generator().manual_seed(11)
    for length, vocab, start in ((2, 3, 1), (6, 11, 3), (12, 50, 4), (9, 7, 8)):
        logits = torch.randn(length, vocab, generator=gen) * 2
        ids = torch.randint(0, vocab, (length,), generator=gen)
        got = call(logits, ids, start)
        assert len(got) == 2, f"return (s_sum, s_mean), got {got!r}"
        want = _library(logits, ids, start)
        assert (float(got[0]), float(got[1])) == pytest.approx(want, abs=1e-5), (
            f"L={length}, query_start={start}: {(float(got[0]), float(got[1]))}, eq. 1 in logs gives {want}")
    # row t predicts t + 1: logits that are right only when read one position before each query token
    vocab, ids = 5, torch.tensor([0, 1, 2, 3, 4])
    logits = torch.full((5, vocab), -20.0)
    for t in range(4):
        logits[t, ids[t + 1]] = 20.0          # row t is sure of the next token
    s_sum, s_mean = call(logits, ids, 2)
    assert float(s_sum) == pytest.approx(0.0, abs=1e-6), (
        f"row t predicts the token at t + 1, so these logits give each query token probability 1 (log 0), "
        f"you got {float(s_sum):.3f}: an off-by-one?")
    with pytest.raises(ValueError):
        call(logits, ids, 0)
    with pytest.raises(ValueError):
        call(logits, ids, 5)


def check_contrastive_loss(call) -> None:
    gen = torch.Generator().manual_seed(12)
    for n, positive, tau in ((2, 0, 1.0), (5, 3, 0.5), (16, 7, 0.001), (4, 0, 0.001)):
        scores = (-3 + torch.randn(n, generator=gen)).requires_grad_()
        got = call(scores, positive, tau)
        assert torch.is_tensor(got) and got.dim() == 0, f"return a 0-d tensor, got {got!r}"
        want = losses.infonce_loss(scores.detach()[None], positive, temperature=tau)
        assert torch.isfinite(got), f"n={n}, tau={tau}: the loss is {float(got.detach())}; it must stay finite (log-sum-exp)"
        assert torch.allclose(got.detach().double(), want.double(), rtol=1e-5, atol=1e-4), (
            f"n={n}, positive={positive}, tau={tau}: {float(got.detach())}, eq. 3 gives {float(want)}")
        (grad,) = torch.autograd.grad(got, scores)
        ref = scores.detach().clone().requires_grad_()
        losses.infonce_loss(ref[None], positive, temperature=tau).backward()
        assert torch.allclose(grad, ref.grad, rtol=1e-4, atol=1e-3), f"n={n}, tau={tau}: the gradient differs"
    for bad in ((torch.zeros(3), 0, 0.0), (torch.zeros(3), 3, 1.0), (torch.zeros(3), -1, 1.0)):
        with pytest.raises(ValueError):
            call(*bad)


def check_forward_passes(call) -> None:
    assert tuple(call(100)) == (7, 9), "the top 100, window 20, stride 10, batches of 16: 7 and 9 passes"
    assert tuple(call(20)) == (2, 1), "20 candidates: 2 batches, one window"
    for k, window, stride, batch in ((1, 20, 10, 16), (21, 20, 10, 16), (35, 20, 10, 8), (100, 20, 5, 32),
                                     (57, 10, 10, 1), (3, 4, 2, 2), (101, 20, 20, 16)):
        want = (math.ceil(k / batch), max(1, len(window_schedule(k, window, stride))))
        got = call(k, window, stride, batch)
        assert tuple(got) == want, f"k={k}, window={window}, stride={stride}, batch_size={batch}: {tuple(got)}, want {want}"
    for bad in ((0,), (10, 20, 0), (10, 5, 6)):
        with pytest.raises(ValueError):
            call(*bad)


ASSIGNMENT = Assignment(
    "ex08_query_likelihood", "08",
    [Exercise("query_log_likelihood", 3, check_query_log_likelihood),
     Exercise("contrastive_loss", 2, check_contrastive_loss),
     Exercise("forward_passes", 2, check_forward_passes)],
    forbidden_calls=["minirank.pointwise.token_log_probs", "minirank.pointwise.reduce_query",
                     "minirank.pointwise.cost_per_query", "minirank.losses.infonce_loss",
                     "minirank.listwise.window_schedule"])

test_exercise = pytest_tests(ASSIGNMENT)
