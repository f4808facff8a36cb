"""Grades chapter 9's assignment, lessons/exercises/ex09_feedback.py (weighted RankNet, KL feedback, Recall@k).

    pytest tests/exercises/grade_ex09_feedback.py

weighted_ranknet is compared with minirank.losses.weighted_ranknet_loss (mean over pairs; value and
gradient), kl_feedback with minirank.feedback.fit_kl on toy vectors (the loss history, the moved vector,
and that the loss falls), recall_at_k with a count by hand before and after feedback.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from grading import Assignment, Exercise, pytest_tests
from minirank import feedback, losses


def _ranks(order: list[int]) -> torch.Tensor:
    ranks = torch.empty(len(order), dtype=torch.long)
    ranks[torch.tensor(order)] = torch.arange(1, len(order) + 1)
    return ranks


def check_weighted_ranknet(call) -> None:
    rng = random.Random(13)
    gen = torch.Generator().manual_seed(13)
    for n in (2, 3, 6, 10):
        order = list(range(n))
        rng.shuffle(order)
        scores = torch.randn(n, generator=gen).requires_grad_()
        got = call(scores, order)
        assert torch.is_tensor(got) and got.dim() == 0, f"return a 0-d tensor, got {got!r}"
        want = losses.weighted_ranknet_loss(scores.detach()[None], _ranks(order)[None], pair_reduction="mean")
        summed = losses.weighted_ranknet_loss(scores.detach()[None], _ranks(order)[None], pair_reduction="sum")
        hint = " (that is the sum over pairs: average it)" if abs(float(got.detach()) - float(summed)) < 1e-5 else ""
        assert torch.allclose(got.detach().float(), want, atol=1e-6), (
            f"n={n}, order {order}: {float(got.detach()):.6f}, eq. 2 averaged over pairs gives {float(want):.6f}{hint}")
        (grad,) = torch.autograd.grad(got, scores)
        ref = scores.detach().clone().requires_grad_()
        losses.weighted_ranknet_loss(ref[None], _ranks(order)[None], pair_reduction="mean").backward()
        assert torch.allclose(grad, ref.grad, atol=1e-6), f"n={n}: the gradient differs from eq. 2's"
    # the better-ranked passage must want the larger score (eq. 2 as printed has the sign the other way)
    right, wrong = call(torch.tensor([2.0, 0.0]), [0, 1]), call(torch.tensor([0.0, 2.0]), [0, 1])
    assert float(right) < float(wrong), "scores that agree with the order must cost less than scores that do not"
    with pytest.raises(ValueError):
        call(torch.zeros(3), [0, 0, 1])


def _toy(seed: int, n: int = 8, dim: int = 6):
    rng = np.random.default_rng(seed)
    passages = rng.normal(size=(n, dim)).astype(np.float32)
    query = rng.normal(size=dim).astype(np.float32)
    teacher = rng.normal(size=n).astype(np.float32) * 3
    return query, passages, teacher


def check_kl_feedback(call) -> None:
    for seed, steps, lr in ((14, 5, 0.005), (15, 30, 0.05), (16, 1, 0.01), (17, 0, 0.005)):
        query, passages, teacher = _toy(seed)
        want_q, want_h = feedback.fit_kl(query, passages, teacher, steps=steps, lr=lr)
        got = call(query.copy(), passages.copy(), list(map(float, teacher)), steps=steps, lr=lr)
        assert len(got) == 2, f"return (new vector, loss history), got {got!r}"
        got_q, got_h = np.asarray(got[0]), list(got[1])
        assert got_q.shape == query.shape, f"the new vector has shape {got_q.shape}, the query {query.shape}"
        assert len(got_h) == steps, f"{steps} steps: the history holds one loss per update, you gave {len(got_h)}"
        assert np.allclose(got_h, want_h, rtol=1e-4, atol=1e-6), (
            f"seed {seed}: losses {np.round(got_h[:3], 5)}..., the library's {np.round(want_h[:3], 5)}... "
            f"(is the scale c / 2 fixed from the starting vector? is the KL the teacher's over the retriever's?)")
        assert np.allclose(got_q, want_q, rtol=1e-4, atol=1e-5), f"seed {seed}: the moved vector differs from fit_kl's"
    query, passages, teacher = _toy(18)
    new, history = call(query, passages, list(map(float, teacher)), steps=40, lr=0.05)
    after = feedback.fit_kl(np.asarray(new), passages, teacher, steps=1, lr=0.05)[1][0]
    assert history[-1] < history[0] and after < history[0], (
        f"40 Adam steps must lower the loss: it went from {history[0]:.4f} to {after:.4f}")
    assert np.allclose(query, _toy(18)[0]), "kl_feedback must not change the query vector it was given"


def _recall_by_hand(query, passages, relevant, k) -> float:
    scores = passages.astype(np.float64) @ query.astype(np.float64)
    top = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return sum(1 for i in set(relevant) if i in top) / len(set(relevant))


def check_recall_at_k(call) -> None:
    passages = np.eye(4, dtype=np.float32)
    query = np.array([0.4, 0.3, 0.2, 0.1], dtype=np.float32)
    assert call(query, passages, [0, 3], 2) == pytest.approx(0.5), "top 2 is {0, 1}: one of the two relevant"
    assert call(query, passages, [2], 4) == pytest.approx(1.0)
    assert call(query, passages, [3], 1) == pytest.approx(0.0)
    for seed in (19, 20):
        query, passages, teacher = _toy(seed, n=30, dim=8)
        relevant = list(np.argsort(-teacher)[:4])                 # the teacher's favourites are the relevant ones
        moved, _ = feedback.fit_kl(query, passages, teacher, steps=60, lr=0.05)
        for vector, when in ((query, "before"), (moved, "after")):
            for k in (1, 5, 10, 30):
                want = _recall_by_hand(vector, passages, relevant, k)
                got = call(vector, passages, relevant, k)
                assert got == pytest.approx(want), f"{when} feedback, seed {seed}, Recall@{k}: {got}, by hand {want}"
    with pytest.raises(ValueError):
        call(query, passages, [], 5)
    with pytest.raises(ValueError):
        call(query, passages, [0], 0)


ASSIGNMENT = Assignment(
    "ex09_feedback", "09",
    [Exercise("weighted_ranknet", 3, check_weighted_ranknet), Exercise("kl_feedback", 3, check_kl_feedback),
     Exercise("recall_at_k", 2, check_recall_at_k)],
    forbidden_calls=["minirank.losses.weighted_ranknet_loss", "minirank.losses.ranknet_loss",
                     "minirank.losses.kl_distillation_loss", "minirank.feedback.fit_kl",
                     "minirank.feedback.fit_ranknet", "minirank.feedback.score_scale"])

test_exercise = pytest_tests(ASSIGNMENT)
