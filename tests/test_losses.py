"""Tests for minirank.losses (chapter 4): exact values, gradients, Plackett-Luce, properties, mutants."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirank.losses import (
    check_loss,
    delta_ndcg,
    differential_penalty,
    infonce_loss,
    kl_distillation_loss,
    lambdarank_loss,
    listmle_grad,
    listmle_loss,
    listnet_grad,
    listnet_loss,
    ndcg_loss2,
    plackett_luce_log_prob,
    ranknet_grad,
    ranknet_loss,
    ranks_from_labels,
    tsarankllm_objective,
    weighted_ranknet_loss,
)

F64 = torch.float64
FAST = settings(max_examples=25, deadline=None, database=None)  # no .hypothesis folder in the repo


def t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=F64)


def r(*rows: list[int]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.long)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# --------------------------------------------------------------------------- exact small values


def test_ranknet_n2_by_hand() -> None:
    # one pair, candidate 0 ranked above candidate 1, s0 - s1 = 1: log(1 + e^-1)
    assert ranknet_loss(t([1.0, 0.0]), r([1, 2])).item() == pytest.approx(softplus(-1.0), abs=1e-12)
    # FIRST weight 1/(r_i + r_j) = 1/3
    assert weighted_ranknet_loss(t([1.0, 0.0]), r([1, 2])).item() == pytest.approx(softplus(-1.0) / 3, abs=1e-12)


def test_weighted_ranknet_n3_by_hand() -> None:
    # all scores equal: every pair costs log 2; weights 1/(1+2) + 1/(1+3) + 1/(2+3)
    assert weighted_ranknet_loss(t([0.0, 0.0, 0.0]), r([1, 2, 3])).item() == pytest.approx(
        math.log(2) * (1 / 3 + 1 / 4 + 1 / 5), abs=1e-12
    )
    # candidate 1 is best, then 2, then 0; scores (2, 1, 0)
    # pairs (1 over 2): w 1/3, s2 - s1 = -1; (1 over 0): w 1/4, s0 - s1 = 1; (2 over 0): w 1/5, s0 - s2 = 2
    expected = softplus(-1) / 3 + softplus(1) / 4 + softplus(2) / 5
    s, ranks = t([2.0, 1.0, 0.0]), r([3, 1, 2])
    assert weighted_ranknet_loss(s, ranks).item() == pytest.approx(expected, abs=1e-12)
    # FIRST's code averages over the 3 pairs instead of summing
    assert weighted_ranknet_loss(s, ranks, pair_reduction="mean").item() == pytest.approx(expected / 3, abs=1e-12)
    # the printed sign of eq. 2 would give a different number, computed with s_i - s_j
    printed = softplus(1) / 3 + softplus(-1) / 4 + softplus(-2) / 5
    assert weighted_ranknet_loss(-s, ranks).item() == pytest.approx(printed, abs=1e-12)


def test_pair_mean_matches_first_training_code() -> None:
    """pair_reduction="mean" is FIRST's BCEWithLogitsLoss(weight=1/(r_i + r_j)) over the pairs."""
    g = torch.Generator().manual_seed(3)
    s = torch.randn(1, 7, generator=g, dtype=F64)
    ranks = (torch.randperm(7, generator=g) + 1)[None]
    idx = [(i, j) for i in range(7) for j in range(7) if ranks[0, i] < ranks[0, j]]
    diffs = torch.stack([s[0, i] - s[0, j] for i, j in idx])
    weights = torch.tensor([1.0 / (ranks[0, i] + ranks[0, j]).item() for i, j in idx], dtype=F64)
    first_code = torch.nn.BCEWithLogitsLoss(weight=weights)(diffs, torch.ones_like(diffs))
    ours = weighted_ranknet_loss(s, ranks, pair_reduction="mean")
    assert ours.item() == pytest.approx(first_code.item(), abs=1e-12)


def test_lambdarank_by_hand() -> None:
    # labels (1, 0) but the scores put candidate 1 first: swapping positions 1 and 2
    # changes DCG by (2^1 - 1) * (1 - 1/log2(3)); ideal DCG = 1.
    delta = 1 - 1 / math.log2(3)
    got = lambdarank_loss(t([0.0, 1.0]), t([1.0, 0.0]))
    assert got.item() == pytest.approx(delta * softplus(1.0), abs=1e-12)
    # nDCG@1 with labels (2, 1, 0) and the reversed order: only pairs that touch position 1 count.
    # gains (3, 1, 0); position of candidates (3, 2, 1); ideal DCG@1 = 3.
    got = lambdarank_loss(t([0.0, 1.0, 2.0]), t([2.0, 1.0, 0.0]), k=1)
    assert got.item() == pytest.approx(1.0 * softplus(2.0) + (1 / 3) * softplus(1.0), abs=1e-12)
    # the weights carry no gradient and ties in labels make no pair
    w = delta_ndcg(t([0.0, 1.0, 2.0]).requires_grad_(), t([1.0, 1.0, 0.0]))
    assert not w.requires_grad
    assert lambdarank_loss(t([0.0, 5.0]), t([1.0, 1.0])).item() == 0.0
    # linear gains (trec_eval's nDCG): gains (2, 1, 0), ideal DCG@1 = 2
    got = lambdarank_loss(t([0.0, 1.0, 2.0]), t([2.0, 1.0, 0.0]), k=1, gain="linear")
    assert got.item() == pytest.approx(1.0 * softplus(2.0) + 0.5 * softplus(1.0), abs=1e-12)
    # no relevant candidate at all: ideal DCG is 0, the loss is 0 (not nan)
    assert lambdarank_loss(t([0.0, 5.0]), t([0.0, 0.0])).item() == 0.0


def ndcg_loss2_by_formula(s: list[float], y: list[float], k: int | None = None, sigma: float = 1.0,
                          mean: bool = False) -> float:
    """NDCG-Loss2 (Wang et al. 2018) written out for one query, pair by pair, from the formula."""
    n = len(s)
    position = {i: at + 1 for at, i in enumerate(sorted(range(n), key=lambda i: (-s[i], i)))}
    gain = [2.0 ** max(v, 0.0) - 1.0 for v in y]
    ideal = sum(g / math.log2(2 + at) for at, g in enumerate(sorted(gain, reverse=True)) if k is None or at < k)
    total, pairs = 0.0, 0
    for i in range(n):
        for j in range(n):
            if y[i] > y[j] and (k is None or (position[i] <= k and position[j] <= k)):
                d = abs(position[i] - position[j])
                delta = abs(1 / math.log2(1 + d) - 1 / math.log2(2 + d))
                weight = delta * abs(gain[i] - gain[j]) / ideal if ideal > 0 else 0.0
                total += weight * math.log2(1 + math.exp(-sigma * (s[i] - s[j])))
                pairs += 1
    return total / pairs if mean and pairs else total


@pytest.mark.parametrize("k", [None, 1, 3])
@pytest.mark.parametrize("sigma", [1.0, 2.5])
@pytest.mark.parametrize("pair_reduction", ["sum", "mean"])
def test_ndcg_loss2_matches_the_formula(k, sigma: float, pair_reduction: str) -> None:
    scores, labels, _, mask = _batch(7, b=4, n=6)
    labels[1, 2] = -1.0  # a negative label counts as gain 0 (but still prefers nothing over a 0.5)
    labels[2] = torch.floor(labels[2])  # integer grades: ties make no pair
    got = ndcg_loss2(scores, labels, mask, k, sigma, pair_reduction, reduction="none")
    for row in range(4):
        keep = mask[row]
        expected = ndcg_loss2_by_formula(scores[row, keep].tolist(), labels[row, keep].tolist(), k, sigma,
                                         pair_reduction == "mean")
        assert got[row].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_ndcg_loss2_stays_finite_for_labels_past_float32s_range() -> None:
    """FIRST's targets are logits: 2^200 overflows float32, the normalised gains G_i do not."""
    g = torch.Generator().manual_seed(12)
    scores = torch.randn(2, 6, generator=g)
    labels = 150 + 50 * torch.rand(2, 6, generator=g)
    got = ndcg_loss2(scores, labels, reduction="none", pair_reduction="mean")
    for row in range(2):
        expected = ndcg_loss2_by_formula(scores[row].tolist(), labels[row].tolist(), mean=True)
        assert got[row].item() == pytest.approx(expected, rel=1e-4)


def test_ndcg_loss2_telescopes_the_discount() -> None:
    """The step of the derivation (lesson 4.4): 1 - 1/D(p_i) = sum over j above i of delta_ij."""
    g = torch.Generator().manual_seed(11)
    for n in range(1, 9):
        position = (torch.randperm(n, generator=g) + 1).tolist()
        for i in range(n):
            left = 1 - 1 / math.log2(1 + position[i])
            right = sum(abs(1 / math.log2(1 + d) - 1 / math.log2(2 + d))
                        for d in (position[i] - position[j] for j in range(n)) if d > 0)
            assert left == pytest.approx(right, abs=1e-12)


def test_ndcg_loss2_is_ranknet_with_its_weights_and_lets_label_gradients_through() -> None:
    scores, labels, ranks, mask = _batch(8)
    # the gradient with respect to the scores is RankNet's with the (detached) NDCG-Loss2 weights
    hand = ranknet_grad(scores, ranks, mask, _ndcg2_weights(scores, labels, mask))
    torch.testing.assert_close(hand, _autograd(lambda s: ndcg_loss2(s, labels, mask), scores), rtol=1e-10, atol=1e-12)
    # labels that carry gradient (FIRST's targets are the model's own logits) receive it through the weights
    y = labels.clone().requires_grad_(True)
    ndcg_loss2(scores, y, mask).backward()
    assert y.grad is not None and y.grad[mask].abs().sum() > 0 and (y.grad[~mask] == 0).all()


def _ndcg2_weights(scores: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, n, n) pair weights of NDCG-Loss2 in natural-log units, from the formula, pair by pair."""
    w = torch.zeros(*scores.shape, scores.shape[1], dtype=F64)
    for b in range(scores.shape[0]):
        idx = mask[b].nonzero().flatten().tolist()
        s, y = scores[b, idx].tolist(), labels[b, idx].tolist()
        for a, i in enumerate(idx):
            for c, j in enumerate(idx):
                if y[a] > y[c]:
                    w[b, i, j] = _pair_weight(s, y, a, c) / math.log(2)
    return w


def _pair_weight(s: list[float], y: list[float], a: int, c: int) -> float:
    position = {i: at + 1 for at, i in enumerate(sorted(range(len(s)), key=lambda i: (-s[i], i)))}
    gain = [2.0 ** max(v, 0.0) - 1.0 for v in y]
    ideal = sum(g / math.log2(2 + at) for at, g in enumerate(sorted(gain, reverse=True)))
    d = abs(position[a] - position[c])
    return abs(1 / math.log2(1 + d) - 1 / math.log2(2 + d)) * abs(gain[a] - gain[c]) / ideal


def test_listnet_by_hand() -> None:
    # equal scores: the student puts 1/2 on each, so the cross-entropy is log 2 whatever the labels
    assert listnet_loss(t([0.0, 0.0]), t([1.0, 0.0])).item() == pytest.approx(math.log(2), abs=1e-12)
    # equal labels: target (1/2, 1/2); student softmax(1, 0) = (sigma(1), sigma(-1))
    expected = -0.5 * (math.log(1 / (1 + math.exp(-1))) + math.log(1 / (1 + math.exp(1))))
    assert listnet_loss(t([1.0, 0.0]), t([0.0, 0.0])).item() == pytest.approx(expected, abs=1e-12)
    # temperature divides the scores
    assert listnet_loss(t([2.0, 0.0]), t([0.0, 0.0]), temperature=2.0).item() == pytest.approx(expected, abs=1e-12)


def test_listmle_by_hand() -> None:
    # equal scores: P(any permutation) = 1/3 * 1/2 * 1 = 1/6
    assert listmle_loss(t([0.0, 0.0, 0.0]), r([1, 2, 3])).item() == pytest.approx(math.log(6), abs=1e-12)
    # n = 2 reduces to RankNet's pair term
    assert listmle_loss(t([1.0, 0.0]), r([1, 2])).item() == pytest.approx(softplus(-1.0), abs=1e-12)
    # n = 3, scores (2, 1, 0), target order 0 > 1 > 2
    e = math.e
    expected = -(2 - math.log(e**2 + e + 1)) - (1 - math.log(e + 1))
    assert listmle_loss(t([2.0, 1.0, 0.0]), r([1, 2, 3])).item() == pytest.approx(expected, abs=1e-12)


def test_infonce_by_hand() -> None:
    # TSARankLLM's tau = 0.001 turns scores (0.003, 0.001, 0.002) into logits (3, 1, 2)
    e = math.e
    got = infonce_loss(t([0.003, 0.001, 0.002]), 0, temperature=0.001)
    assert got.item() == pytest.approx(-(3 - math.log(e**3 + e + e**2)), abs=1e-9)
    # equal scores: -log(1/3); a positive index per query works too
    got = infonce_loss(t([0.0, 0.0, 0.0], [5.0, 0.0, 0.0]), torch.tensor([2, 0]), reduction="none")
    assert got[0].item() == pytest.approx(math.log(3), abs=1e-12)
    assert got[1].item() == pytest.approx(-(5 - math.log(math.exp(5) + 2)), abs=1e-12)


def test_kl_distillation_by_hand() -> None:
    # teacher softmax(0, log 3) = (1/4, 3/4); student uniform (1/2, 1/2)
    expected = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    got = kl_distillation_loss(t([0.0, 0.0]), t([0.0, math.log(3)]))
    assert got.item() == pytest.approx(expected, abs=1e-12)
    assert kl_distillation_loss(t([1.0, 2.0]), t([1.0, 2.0])).item() == pytest.approx(0.0, abs=1e-12)
    # direction: KL(teacher || student), not the reverse
    reverse = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert abs(got.item() - reverse) > 1e-3


def test_kl_distillation_stepwise_is_sum_over_steps() -> None:
    """With target_ranks: PE-Rank eq. 7, one KL per decoding step over the unplaced candidates."""
    g = torch.Generator().manual_seed(0)
    s, te = torch.randn(1, 4, generator=g, dtype=F64), torch.randn(1, 4, generator=g, dtype=F64)
    ranks = r([3, 1, 4, 2])
    order = torch.argsort(ranks[0])
    by_hand = sum(
        kl_distillation_loss(s[:, order[k:]], te[:, order[k:]]).item() for k in range(4)
    )
    got = kl_distillation_loss(s, te, target_ranks=ranks)
    assert got.item() == pytest.approx(by_hand, abs=1e-12)


def test_differential_penalty_by_hand() -> None:
    # two query tokens, vocabulary of 2; the CPT model says (1/4, 3/4), the SFT model (1/2, 1/2)
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    cpt = t([[0.0, math.log(3)], [0.0, 0.0]]).reshape(1, 2, 2)
    sft = torch.zeros(1, 2, 2, dtype=F64, requires_grad=True)
    # mean over the query tokens: (kl + 0) / 2
    assert differential_penalty(sft, cpt).item() == pytest.approx(kl / 2, abs=1e-12)
    # only the first token is a query token; the second holds nan and must not leak
    sft_nan = sft.detach().clone()
    sft_nan[0, 1] = float("nan")
    sft_nan.requires_grad_(True)
    got = differential_penalty(sft_nan, cpt, token_mask=torch.tensor([[True, False]]))
    assert got.item() == pytest.approx(kl, abs=1e-12)
    got.backward()
    assert torch.isfinite(sft_nan.grad).all() and (sft_nan.grad[0, 1] == 0).all()
    # the CPT model is frozen: no gradient reaches it
    cpt_leaf = cpt.clone().requires_grad_(True)
    differential_penalty(sft, cpt_leaf).backward()
    assert cpt_leaf.grad is None
    assert tsarankllm_objective(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)).item() == pytest.approx(
        0.6 * 1 + 0.4 * 5
    )


def test_ranks_from_labels() -> None:
    labels = t([1.0, 3.0, 1.0, 3.0, 2.0])
    # ties go to the earlier index: the two 3s get ranks 1, 2; the two 1s get 4, 5
    assert ranks_from_labels(labels).tolist() == [[4, 1, 5, 2, 3]]
    mask = torch.tensor([[True, True, True, False, True]])
    assert ranks_from_labels(labels, mask).tolist() == [[3, 1, 4, 0, 2]]
    weird = t([float("-inf"), float("nan"), 0.0])
    assert ranks_from_labels(weird, torch.tensor([[True, False, True]])).tolist() == [[2, 0, 1]]


# --------------------------------------------------------------------------- gradients


def _batch(seed: int, b: int = 3, n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random float64 scores, graded labels, their ranks and a mask with some padding."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, n, generator=g, dtype=F64)
    labels = torch.randint(0, 4, (b, n), generator=g).to(F64) + 0.1 * torch.rand(b, n, generator=g, dtype=F64)
    mask = torch.ones(b, n, dtype=torch.bool)
    mask[0, -2:] = False
    mask[-1, 0] = False
    return scores, labels, ranks_from_labels(labels, mask), mask


def _all_losses(labels: torch.Tensor, ranks: torch.Tensor, mask: torch.Tensor, teacher: torch.Tensor):
    return {
        "ranknet": lambda s: ranknet_loss(s, ranks, mask),
        "weighted_ranknet": lambda s: weighted_ranknet_loss(s, ranks, mask),
        "weighted_ranknet_pair_mean": lambda s: weighted_ranknet_loss(s, ranks, mask, pair_reduction="mean"),
        "lambdarank": lambda s: lambdarank_loss(s, labels, mask),
        "lambdarank@3": lambda s: lambdarank_loss(s, labels, mask, k=3),
        "ndcg_loss2": lambda s: ndcg_loss2(s, labels, mask),
        "ndcg_loss2@3_mean": lambda s: ndcg_loss2(s, labels, mask, k=3, sigma=2.0, pair_reduction="mean"),
        "listnet": lambda s: listnet_loss(s, labels, mask, temperature=0.7),
        "listmle": lambda s: listmle_loss(s, ranks, mask),
        "infonce": lambda s: infonce_loss(s, 1, mask, temperature=0.5),
        "kl": lambda s: kl_distillation_loss(s, teacher, mask, temperature=2.0),
        "kl_stepwise": lambda s: kl_distillation_loss(s, teacher, mask, target_ranks=ranks),
    }


@pytest.mark.parametrize(
    "name",
    ["ranknet", "weighted_ranknet", "weighted_ranknet_pair_mean", "lambdarank", "lambdarank@3",
     "ndcg_loss2", "ndcg_loss2@3_mean", "listnet", "listmle", "infonce", "kl", "kl_stepwise"],
)
def test_gradcheck(name: str) -> None:
    scores, labels, ranks, mask = _batch(1)
    teacher = torch.randn(scores.shape, generator=torch.Generator().manual_seed(9), dtype=F64)
    fn = _all_losses(labels, ranks, mask, teacher)[name]
    assert torch.autograd.gradcheck(fn, (scores.clone().requires_grad_(),), eps=1e-6, atol=1e-6)


def test_gradcheck_differential_penalty() -> None:
    g = torch.Generator().manual_seed(2)
    sft = torch.randn(2, 3, 5, generator=g, dtype=F64, requires_grad=True)
    cpt = torch.randn(2, 3, 5, generator=g, dtype=F64)
    token_mask = torch.tensor([[True, True, False], [False, True, True]])
    assert torch.autograd.gradcheck(lambda x: differential_penalty(x, cpt, token_mask), (sft,))


def _autograd(fn, scores: torch.Tensor) -> torch.Tensor:
    s = scores.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fn(s), s)
    return grad


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hand_gradients_match_autograd(seed: int, reduction: str) -> None:
    scores, labels, ranks, mask = _batch(seed)
    pair_w = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=F64)
    cases = [
        (lambda s: ranknet_loss(s, ranks, mask, reduction=reduction), ranknet_grad(scores, ranks, mask, reduction=reduction)),
        (lambda s: weighted_ranknet_loss(s, ranks, mask, reduction=reduction),
         ranknet_grad(scores, ranks, mask, "inverse_mean_rank", reduction=reduction)),
        (lambda s: weighted_ranknet_loss(s, ranks, mask, "mean", reduction),
         ranknet_grad(scores, ranks, mask, "inverse_mean_rank", "mean", reduction)),
        (lambda s: ranknet_loss(s, ranks, mask, pair_w, reduction=reduction),
         ranknet_grad(scores, ranks, mask, pair_w, reduction=reduction)),
        (lambda s: listmle_loss(s, ranks, mask, reduction=reduction), listmle_grad(scores, ranks, mask, reduction=reduction)),
        (lambda s: listnet_loss(s, labels, mask, 0.5, reduction), listnet_grad(scores, labels, mask, 0.5, reduction)),
    ]
    for fn, hand in cases:
        torch.testing.assert_close(hand, _autograd(fn, scores), rtol=1e-10, atol=1e-12)


def test_hand_gradient_none_reduction_is_per_query() -> None:
    scores, labels, ranks, mask = _batch(4)
    per_query = listmle_grad(scores, ranks, mask, reduction="none")
    torch.testing.assert_close(per_query, listmle_grad(scores, ranks, mask, reduction="sum"))


# --------------------------------------------------------------------------- ListMLE = Plackett-Luce


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_listmle_matches_brute_force_plackett_luce(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    scores = 2.0 * torch.randn(1, n, generator=g, dtype=F64)
    perms = list(itertools.permutations(range(n)))  # perm[k] = candidate placed at position k + 1
    ranks = torch.empty(len(perms), n, dtype=torch.long)
    for row, perm in enumerate(perms):
        ranks[row, list(perm)] = torch.arange(1, n + 1)
    log_p = plackett_luce_log_prob(scores.expand(len(perms), n), ranks)
    # the model is a probability distribution over all n! orderings
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
    # and ListMLE is exactly -log P(target), checked against a naive product for every ordering
    losses = listmle_loss(scores.expand(len(perms), n), ranks, reduction="none").tolist()
    s = scores[0].tolist()
    for perm, loss in zip(perms, losses):
        prob = 1.0
        for k, item in enumerate(perm):
            prob *= math.exp(s[item]) / sum(math.exp(s[j]) for j in perm[k:])
        assert loss == pytest.approx(-math.log(prob), abs=1e-10)


# --------------------------------------------------------------------------- properties

score_lists = st.lists(st.floats(-30, 30, allow_nan=False), min_size=2, max_size=7, unique=True)
junk_values = st.lists(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e30, 0.0]), min_size=1, max_size=3)


def _targets_for(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ranks = (torch.randperm(n, generator=g) + 1)[None]
    labels = (n - ranks).to(F64) / 2  # distinct graded labels, consistent with the ranks
    teacher = torch.randn(1, n, generator=g, dtype=F64)
    return ranks, labels, teacher


def _losses_on(ranks: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor):
    return [
        lambda s, m=None: ranknet_loss(s, ranks, m),
        lambda s, m=None: weighted_ranknet_loss(s, ranks, m),
        lambda s, m=None: lambdarank_loss(s, labels, m),
        lambda s, m=None: ndcg_loss2(s, labels, m),
        lambda s, m=None: listnet_loss(s, labels, m),
        lambda s, m=None: listmle_loss(s, ranks, m),
        lambda s, m=None: infonce_loss(s, int((ranks[0] == 1).nonzero()[0, 0]), m),
        lambda s, m=None: kl_distillation_loss(s, teacher, m, target_ranks=ranks),
    ]


@FAST
@given(values=score_lists, seed=st.integers(0, 2**16))
def test_permutation_invariance(values: list[float], seed: int) -> None:
    n = len(values)
    scores = torch.tensor([values], dtype=F64)
    ranks, labels, teacher = _targets_for(n, seed)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    base = _losses_on(ranks, labels, teacher)
    moved = _losses_on(ranks[:, perm], labels[:, perm], teacher[:, perm])
    for fn, fn_moved in zip(base, moved):
        g = _autograd(fn, scores)
        g_moved = _autograd(fn_moved, scores[:, perm])
        torch.testing.assert_close(fn(scores), fn_moved(scores[:, perm]), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(g[:, perm], g_moved, rtol=1e-10, atol=1e-12)


@FAST
@given(values=score_lists, seed=st.integers(0, 2**16), junk=junk_values, where=st.integers(0, 7))
def test_masked_entries_change_nothing(values: list[float], seed: int, junk: list[float], where: int) -> None:
    n = len(values)
    scores = torch.tensor([values], dtype=F64)
    ranks, labels, teacher = _targets_for(n, seed)
    at = min(where, n)
    pad = torch.tensor([junk], dtype=F64)
    k = pad.shape[1]

    def insert(x: torch.Tensor, filler: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :at], filler.to(x.dtype), x[:, at:]], dim=1)

    mask = insert(torch.ones(1, n, dtype=torch.bool), torch.zeros(1, k, dtype=torch.bool))
    padded = _losses_on(insert(ranks, torch.full((1, k), -5)), insert(labels, pad), insert(teacher, pad))
    for fn, fn_pad in zip(_losses_on(ranks, labels, teacher), padded):
        s_pad = insert(scores, pad).requires_grad_(True)
        value = fn_pad(s_pad, mask)
        (grad,) = torch.autograd.grad(value, s_pad)
        torch.testing.assert_close(value, fn(scores), rtol=1e-10, atol=1e-12)
        assert torch.isfinite(grad).all()
        assert (grad[:, at : at + k] == 0).all()
        torch.testing.assert_close(torch.cat([grad[:, :at], grad[:, at + k :]], 1), _autograd(fn, scores))


@FAST
@given(signs=st.lists(st.sampled_from([-1e4, 1e4, 0.0]), min_size=2, max_size=7), seed=st.integers(0, 2**16))
def test_stable_at_extreme_scores(signs: list[float], seed: int) -> None:
    for dtype in (torch.float32, F64):
        scores = torch.tensor([signs], dtype=dtype)
        ranks, labels, teacher = _targets_for(len(signs), seed)
        teacher = 1e4 * teacher.sign()
        for fn in _losses_on(ranks, labels.to(dtype), teacher.to(dtype)):
            s = scores.clone().requires_grad_(True)
            value = fn(s)
            (grad,) = torch.autograd.grad(value, s)
            assert torch.isfinite(value) and torch.isfinite(grad).all()
    # TSARankLLM's tau = 0.001 on extreme scores gives logits of 1e7
    s = torch.tensor([[1e4, -1e4, 0.0]], requires_grad=True)
    value = infonce_loss(s, 1, temperature=0.001)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(s.grad).all()


@FAST
@given(seed=st.integers(0, 2**16), n=st.integers(2, 7), silenced=st.integers(0, 6))
def test_zero_weight_pairs_contribute_nothing(seed: int, n: int, silenced: int) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(1, n, generator=g, dtype=F64)
    ranks = (torch.randperm(n, generator=g) + 1)[None]
    w = torch.rand(1, n, n, generator=g, dtype=F64) * (torch.rand(1, n, n, generator=g) < 0.6)
    k = silenced % n
    w[:, k, :] = 0.0  # every pair that involves candidate k gets weight 0
    w[:, :, k] = 0.0
    # the loss equals the sum over the weighted pairs only, computed pair by pair
    s = scores[0].tolist()
    by_hand = sum(
        w[0, i, j].item() * softplus(s[j] - s[i])
        for i in range(n) for j in range(n) if ranks[0, i] < ranks[0, j]
    )
    assert ranknet_loss(scores, ranks, weighting=w).item() == pytest.approx(by_hand, abs=1e-10)
    # candidate k neither moves the loss nor receives gradient
    moved = scores.clone()
    moved[0, k] += 123.0
    assert ranknet_loss(moved, ranks, weighting=w).item() == pytest.approx(by_hand, abs=1e-10)
    assert _autograd(lambda x: ranknet_loss(x, ranks, weighting=w), scores)[0, k] == 0.0


def test_degenerate_rows_are_zero() -> None:
    scores = t([3.0, float("nan"), 1.0], [float("inf"), 2.0, 0.0], [1.0, 2.0, 3.0])
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    ranks = r([1, 0, 0], [0, 0, 0], [1, 2, 3])
    labels = t([1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.0, 1.0, 0.0])
    fns = _losses_on(ranks, labels, torch.zeros(3, 3, dtype=F64))
    for fn in fns:
        s = scores.clone().requires_grad_(True)
        per_query = fn(s, mask)
        (grad,) = torch.autograd.grad(per_query, s)
        assert torch.isfinite(per_query)
        assert torch.isfinite(grad).all() and (grad[:2] == 0).all()
    assert weighted_ranknet_loss(scores, ranks, mask, reduction="none")[:2].tolist() == [0.0, 0.0]
    assert listmle_loss(scores, ranks, mask, reduction="none")[:2].tolist() == [0.0, 0.0]


def test_reductions() -> None:
    scores, labels, ranks, mask = _batch(5)
    per_query = weighted_ranknet_loss(scores, ranks, mask, reduction="none")
    assert per_query.shape == (3,)
    torch.testing.assert_close(weighted_ranknet_loss(scores, ranks, mask), per_query.mean())
    torch.testing.assert_close(weighted_ranknet_loss(scores, ranks, mask, reduction="sum"), per_query.sum())
    with pytest.raises(ValueError):
        weighted_ranknet_loss(scores, ranks, mask, reduction="avg")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ranknet_loss(scores, ranks, mask, weighting="ndcg")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- check_loss and mutants


@pytest.mark.parametrize(
    ("fn", "target", "top_weighted"),
    [
        (ranknet_loss, "ranks", False),
        (weighted_ranknet_loss, "ranks", True),
        (lambda s, y, mask=None: weighted_ranknet_loss(s, y, mask, pair_reduction="mean"), "ranks", True),
        (lambdarank_loss, "labels", True),
        (ndcg_loss2, "labels", True),
        (lambda s, y, mask=None: ndcg_loss2(s, y, mask, pair_reduction="mean"), "labels", True),
        (listnet_loss, "labels", False),
        (listmle_loss, "ranks", False),
    ],
)
def test_correct_losses_pass_check_loss(fn, target: str, top_weighted: bool) -> None:
    assert check_loss(fn, target=target, top_weighted=top_weighted) == []


def printed_eq2(scores, target_ranks, mask=None):
    """FIRST eq. 2 exactly as printed: log(1 + exp(s_i - s_j)) for r_i < r_j (the sign bug)."""
    return weighted_ranknet_loss(-scores, target_ranks, mask)


def unit_weights(scores, target_ranks, mask=None):
    """Weighted RankNet with 1/(r_i + r_j) replaced by 1."""
    return ranknet_loss(scores, target_ranks, mask)


def input_index_weights(scores, target_ranks, mask=None):
    """Weights 1/(i + j) from the candidates' input positions instead of their ranks."""
    i = torch.arange(1, scores.shape[1] + 1, dtype=scores.dtype)
    return ranknet_loss(scores, target_ranks, mask, weighting=1.0 / (i[:, None] + i[None, :]))


@pytest.mark.parametrize(
    ("mutant", "must_report"),
    [
        (printed_eq2, "correct order must cost less"),
        (unit_weights, "swapping the top pair"),
        (input_index_weights, "moving scores and targets together"),
    ],
)
def test_mutants_fail_check_loss(mutant, must_report: str) -> None:
    failures = check_loss(mutant, top_weighted=True)
    assert any(must_report in f for f in failures), failures


def test_check_loss_reports_a_crash_instead_of_raising() -> None:
    def broken(scores, target_ranks, mask=None):
        raise RuntimeError("boom")

    failures = check_loss(broken)
    assert failures and all("boom" in f for f in failures)
