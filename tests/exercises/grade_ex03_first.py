"""Grades chapter 3's assignment, lessons/exercises/ex03_first.py (FIRST's order, padding, agreement).

    pytest tests/exercises/grade_ex03_first.py

first_order is compared with minirank.first's readout (identifier_logits, order_from_scores),
last_real_logits with a per-row loop and with a tiny model run unpadded, agreement_by_rank with
minirank.agreement's.
"""
from __future__ import annotations

import random

import torch

from grading import Assignment, Exercise, pytest_tests
from minirank import agreement, first
from minirank.models import tiny_model


def check_first_order(call) -> None:
    z = torch.tensor([0.0, 5.0, 1.0, 5.0, -2.0, 3.0])
    assert list(call(z, [1, 3, 5, 2])) == [0, 1, 2, 3], "tied logits keep input order: ids [1, 3, 5, 2] -> [0, 1, 2, 3]"
    g = torch.Generator().manual_seed(3)
    for m in (2, 5, 10, 20):
        for _ in range(10):
            z = torch.randn(500, generator=g).round(decimals=1)   # rounding makes ties
            ids = torch.randperm(500, generator=g)[:m].tolist()
            want = first.order_from_scores(first.identifier_logits(z[None], ids)[0].tolist())
            got = call(z, ids)
            assert list(got) == want, f"first_order on a window of {m}: {list(got)}, expected {want}"
            assert list(call(torch.softmax(z, 0), ids)) == want, "a softmax over the vocabulary must not change the order"


def check_last_real_logits(call) -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(4, 7, 11, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]])
    want = torch.stack([logits[b, int(mask[b].nonzero().max())] for b in range(4)])
    got = call(logits, mask)
    assert isinstance(got, torch.Tensor) and got.shape == (4, 11), f"return (batch, vocabulary) = (4, 11), got {getattr(got, 'shape', got)}"
    torch.testing.assert_close(got, want, msg=lambda m: f"rows padded left and right: {m}")
    # A real model: three prompts of different lengths, right-padded, against each prompt run alone.
    model = tiny_model(50, seed=0).eval()
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    width = max(map(len, prompts))
    ids = torch.tensor([p + [0] * (width - len(p)) for p in prompts])
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
    with torch.no_grad():
        batched = model(input_ids=ids, attention_mask=mask).logits
        alone = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts])
    torch.testing.assert_close(call(batched, mask), alone, rtol=1e-4, atol=1e-4,
                               msg=lambda m: f"right-padded batch against each prompt alone: {m}")


def check_agreement(call) -> None:
    rng = random.Random(5)
    for m in (3, 8, 20):
        a = [rng.sample(range(m), m) for _ in range(50)]
        b = [order[:] if rng.random() < 0.3 else rng.sample(range(m), m) for order in a]
        want = agreement.agreement_by_rank(a, b)["agreement"].tolist()
        got = call(a, b)
        assert len(got) == m, f"one value per rank: {m} expected, got {len(got)}"
        assert all(abs(x - y) < 1e-12 for x, y in zip(got, want)), f"agreement_by_rank for m={m}: {list(got)}, expected {want}"
    assert list(call([[0, 1, 2]], [[0, 1, 2]])) == [1.0, 1.0, 1.0], "a ranking agrees with itself at every rank"


ASSIGNMENT = Assignment(
    "ex03_first", "03",
    [Exercise("first_order", 2, check_first_order), Exercise("last_real_logits", 3, check_last_real_logits),
     Exercise("agreement_by_rank", 2, check_agreement)],
    forbidden_calls=["minirank.first.order_from_scores", "minirank.first.identifier_logits",
                     "minirank.agreement.agreement_by_rank"])

test_exercise = pytest_tests(ASSIGNMENT)
