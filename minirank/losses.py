"""Ranking losses for LLM rerankers (chapter 4, lessons/04_ranking_losses.md).

Papers cited in the docstrings:
  FIRST      = Reddy et al. 2024, "FIRST: Faster Improved Listwise Reranking with Single Token Decoding".
  PE-Rank    = Liu et al. 2024, "Leveraging Passage Embeddings for Efficient Listwise Reranking with LLMs".
  TSARankLLM = Zhang et al. 2023, "A Two-Stage Adaptation of Large Language Models for Text Ranking".

Conventions shared by every loss:
  scores        (B, n) float, one row per query, higher = more relevant.
  mask          (B, n) bool, True = real candidate, None = all real. Masked slots may hold
                anything (even inf or nan): they reach neither the value nor the gradient.
  target_ranks  (B, n) long, 1 = best; on the real entries a permutation of 1..n_real.
  labels        (B, n) float graded relevance, higher = better.
  reduction     "mean" (over the B queries, the default), "sum", or "none" (a (B,) tensor).
A query with fewer than two real candidates has nothing to rank and contributes exactly 0.
Pairwise losses sum over pairs inside a query (FIRST eq. 2) unless pair_reduction="mean",
which divides by the number of pairs, as FIRST's released training code does.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Reduction = Literal["mean", "sum", "none"]
PairReduction = Literal["sum", "mean"]
Weighting = Literal["inverse_mean_rank"] | Tensor | None

__all__ = [
    "ranks_from_labels",
    "ranknet_loss",
    "weighted_ranknet_loss",
    "ranknet_grad",
    "delta_ndcg",
    "lambdarank_loss",
    "ndcg_loss2",
    "listnet_loss",
    "listnet_grad",
    "listmle_loss",
    "listmle_grad",
    "plackett_luce_log_prob",
    "infonce_loss",
    "kl_distillation_loss",
    "differential_penalty",
    "tsarankllm_objective",
    "check_loss",
]


# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


def _valid(scores: Tensor, mask: Tensor | None) -> Tensor:
    """The padding mask as a bool tensor shaped like scores (True = real candidate)."""
    if mask is None:
        return torch.ones(scores.shape, dtype=torch.bool, device=scores.device)
    if mask.shape != scores.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != scores shape {tuple(scores.shape)}")
    return mask.to(torch.bool)


def _reduce(per_query: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_query.mean()
    if reduction == "sum":
        return per_query.sum()
    if reduction == "none":
        return per_query
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")


def _grad_scale(batch: int, reduction: Reduction) -> float:
    """Factor that turns d(per-query loss)/ds into d(reduced loss)/ds ('none' = per query)."""
    return 1.0 / batch if reduction == "mean" else 1.0


def _masked_log_softmax(x: Tensor, keep: Tensor) -> Tensor:
    """log_softmax over the kept entries of the last dim; 0 at dropped entries.

    Safe when a row keeps nothing (it returns zeros, not nan) and when dropped entries hold
    inf or nan: they are replaced before any arithmetic, so no nan reaches the gradient.
    """
    x = torch.where(keep, x, float("-inf"))
    x = torch.where(keep.any(dim=-1, keepdim=True), x, 0.0)  # rows with nothing kept: dummy zeros
    return torch.where(keep, torch.log_softmax(x, dim=-1), 0.0)


def ranks_from_labels(labels: Tensor, mask: Tensor | None = None) -> Tensor:
    """Graded labels (B, n) -> target ranks (B, n), 1 = highest label.

    Ties are broken by original index (the earlier candidate gets the better rank), so the
    result is deterministic. Masked slots get rank 0; real slots get 1..n_real.
    """
    valid = _valid(labels, mask)
    key = torch.where(valid, labels, float("-inf"))
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    # Second stable sort: real candidates before padding, even if a real label is -inf.
    real_first = torch.sort(valid.gather(1, order).to(torch.int8), dim=1, descending=True, stable=True)
    order = order.gather(1, real_first.indices)
    positions = torch.arange(1, labels.shape[1] + 1, device=labels.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return torch.where(valid, ranks, 0)


# ---------------------------------------------------------------------------
# Pairwise: RankNet, FIRST's weighted RankNet, LambdaRank, NDCG-Loss2
# ---------------------------------------------------------------------------


def _pairwise_logistic(
    scores: Tensor,
    prefer: Tensor,
    weights: Tensor,
    valid: Tensor,
    pair_reduction: PairReduction,
    reduction: Reduction,
) -> Tensor:
    """Sum (or mean) over preferred pairs (i above j) of w_ij * log(1 + exp(s_j - s_i))."""
    if pair_reduction not in ("sum", "mean"):
        raise ValueError(f"pair_reduction must be 'sum' or 'mean', not {pair_reduction!r}")
    s = torch.where(valid, scores, 0.0)  # padding may hold inf/nan: never let it into arithmetic
    pairs = prefer & valid[:, :, None] & valid[:, None, :]
    w = torch.where(pairs, weights.to(s.dtype), 0.0)
    diff = s[:, None, :] - s[:, :, None]  # diff[b, i, j] = s_j - s_i
    per_query = (w * F.softplus(diff)).sum(dim=(1, 2))
    if pair_reduction == "mean":
        per_query = per_query / pairs.sum(dim=(1, 2)).clamp(min=1)
    return _reduce(per_query, reduction)


def _rank_pairs(
    scores: Tensor, target_ranks: Tensor, mask: Tensor | None, weighting: Weighting
) -> tuple[Tensor, Tensor, Tensor]:
    """(valid, prefer, weights) for rank targets: prefer[b, i, j] = r_i < r_j."""
    valid = _valid(scores, mask)
    r = torch.where(valid, target_ranks, 0)
    prefer = r[:, :, None] < r[:, None, :]
    if weighting is None:
        weights = torch.ones((), dtype=scores.dtype, device=scores.device)
    elif isinstance(weighting, Tensor):
        weights = weighting.to(device=scores.device, dtype=scores.dtype)
    elif weighting == "inverse_mean_rank":
        rf = r.to(scores.dtype)
        weights = 1.0 / (rf[:, :, None] + rf[:, None, :]).clamp(min=1.0)  # FIRST eq. 2: 1/(r_i + r_j)
    else:
        raise ValueError(f"weighting must be None, 'inverse_mean_rank' or a tensor, not {weighting!r}")
    return valid, prefer, weights


def ranknet_loss(
    scores: Tensor,
    target_ranks: Tensor,
    mask: Tensor | None = None,
    weighting: Weighting = None,
    pair_reduction: PairReduction = "sum",
    reduction: Reduction = "mean",
) -> Tensor:
    """RankNet (Burges et al. 2005): sum over pairs r_i < r_j of w_ij * log(1 + exp(s_j - s_i)).

    weighting: None (w = 1, plain RankNet), "inverse_mean_rank" (w = 1/(r_i + r_j), FIRST §3.2
    eq. 2), or a (B, n, n) / (n, n) tensor of pair weights (w[b, i, j] for i ranked above j).
    pair_reduction: "sum" as written in FIRST eq. 2; "mean" divides by the number of pairs,
    as FIRST's training code does (BCEWithLogitsLoss with per-pair weights).
    """
    valid, prefer, weights = _rank_pairs(scores, target_ranks, mask, weighting)
    return _pairwise_logistic(scores, prefer, weights, valid, pair_reduction, reduction)


def weighted_ranknet_loss(
    scores: Tensor,
    target_ranks: Tensor,
    mask: Tensor | None = None,
    pair_reduction: PairReduction = "sum",
    reduction: Reduction = "mean",
) -> Tensor:
    """FIRST §3.2, eq. 2: sum over r_i < r_j of log(1 + exp(s_j - s_i)) / (r_i + r_j).

    The printed eq. 2 reads exp(s_i - s_j), which would reward the wrong order; this is the
    intended sign (the better-ranked candidate i should get the larger logit s_i).
    """
    return ranknet_loss(scores, target_ranks, mask, "inverse_mean_rank", pair_reduction, reduction)


def ranknet_grad(
    scores: Tensor,
    target_ranks: Tensor,
    mask: Tensor | None = None,
    weighting: Weighting = None,
    pair_reduction: PairReduction = "sum",
    reduction: Reduction = "mean",
) -> Tensor:
    """Hand-derived dL/ds (B, n) of ranknet_loss (lesson eq. ranknet-grad).

    dL/ds_k = sum_{j below k} -w_kj sigma(s_j - s_k) + sum_{i above k} w_ik sigma(s_k - s_i).
    For reduction="none" it is the gradient of each query's own loss.
    """
    valid, prefer, weights = _rank_pairs(scores, target_ranks, mask, weighting)
    s = torch.where(valid, scores, 0.0)
    pairs = prefer & valid[:, :, None] & valid[:, None, :]
    w = torch.where(pairs, weights.to(s.dtype), 0.0)
    g = w * torch.sigmoid(s[:, None, :] - s[:, :, None])  # g[b, i, j] = w_ij * sigma(s_j - s_i)
    grad = g.sum(dim=1) - g.sum(dim=2)  # + as the lower item j, - as the upper item i
    if pair_reduction == "mean":
        grad = grad / pairs.sum(dim=(1, 2)).clamp(min=1)[:, None]
    return torch.where(valid, grad, 0.0) * _grad_scale(scores.shape[0], reduction)


def _gains_and_positions(scores: Tensor, labels: Tensor, valid: Tensor, gain: str) -> tuple[Tensor, Tensor]:
    """Gains (B, n), 0 on padding, and 1-based positions (B, n) in the detached score order (ties by index)."""
    rel = torch.where(valid, labels, 0.0).to(scores.dtype).clamp(min=0.0)
    if gain not in ("exp2", "linear"):
        raise ValueError(f"gain must be 'exp2' or 'linear', not {gain!r}")
    gains = torch.where(valid, torch.pow(2.0, rel) - 1.0 if gain == "exp2" else rel, 0.0)
    order = torch.sort(torch.where(valid, scores.detach(), float("-inf")), dim=1, descending=True, stable=True).indices
    ranks = torch.arange(1, scores.shape[1] + 1, device=scores.device).expand_as(order)
    return gains, torch.empty_like(order).scatter_(1, order, ranks)


def _ideal_dcg(gains: Tensor, k: int | None) -> Tensor:
    """DCG@k (B,) of the ideal order, discount 1/log2(1 + position)."""
    discount = 1.0 / torch.log2(1.0 + torch.arange(1, gains.shape[1] + 1, device=gains.device, dtype=gains.dtype))
    if k is not None:
        discount = torch.where(torch.arange(gains.shape[1], device=gains.device) < k, discount, 0.0)
    return (torch.sort(gains, dim=1, descending=True).values * discount).sum(dim=1)


def delta_ndcg(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    k: int | None = None,
    gain: Literal["exp2", "linear"] = "exp2",
) -> Tensor:
    """|Delta nDCG@k| (B, n, n) from swapping candidates i and j in the current score order.

    Burges et al. 2006 (LambdaRank): gain 2^label - 1 ("exp2"), or the label itself ("linear",
    trec_eval's nDCG as in minirank.evaluate); negative labels count as 0; discount
    1/log2(1 + position). Positions come from the detached scores (ties broken by index); the
    result carries no gradient. A query whose ideal DCG is 0 (no relevant candidate) gets all-zero weights.
    """
    valid = _valid(scores, mask)
    gains, position = _gains_and_positions(scores, labels, valid, gain)
    discount = 1.0 / torch.log2(1.0 + position.to(scores.dtype))
    if k is not None:
        discount = torch.where(position <= k, discount, 0.0)
    ideal_dcg = _ideal_dcg(gains, k)
    delta = (gains[:, :, None] - gains[:, None, :]).abs() * (discount[:, :, None] - discount[:, None, :]).abs()
    delta = torch.where(ideal_dcg[:, None, None] > 0, delta / ideal_dcg.clamp(min=1e-12)[:, None, None], 0.0)
    pairs = valid[:, :, None] & valid[:, None, :]
    return torch.where(pairs, delta, 0.0).detach()


def ndcg_loss2(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    k: int | None = None,
    sigma: float = 1.0,
    pair_reduction: PairReduction = "sum",
    reduction: Reduction = "mean",
) -> Tensor:
    """LambdaLoss's NDCG-Loss2 (Wang et al. 2018, "The LambdaLoss Framework"), FIRST's "LambdaRank".

    L = sum over y_i > y_j of delta_ij |G_i - G_j| log2(1 + exp(-sigma (s_i - s_j))), with
    G_i = (2^y_i - 1) / IDCG@k, delta_ij = |1/D(d) - 1/D(d + 1)|, D(d) = log2(1 + d), and
    d = |p_i - p_j| the distance of the pair in the current (detached) score order. With k, only
    pairs whose positions are both within the top k count. Negative labels count as gain 0, as in
    FIRST's training code, which calls this scheme with pair_reduction="mean" (lesson 4.4).
    ``labels`` are used as given: if they carry gradient (FIRST builds them from the model's own
    logits, see minirank.objective), it flows through the weights too.
    """
    valid = _valid(scores, mask)
    _, position = _gains_and_positions(scores, labels, valid, "exp2")
    # gains and IDCG both divided by 2^max(y): G is unchanged, and logits as labels (FIRST) cannot overflow
    rel = torch.where(valid, labels, 0.0).to(scores.dtype).clamp(min=0.0)
    top = rel.detach().amax(dim=1, keepdim=True)
    gains = torch.where(valid, torch.pow(2.0, rel - top) - torch.pow(2.0, -top), 0.0)
    ideal = _ideal_dcg(gains, k)
    g = torch.where(ideal[:, None] > 0, gains / ideal.clamp(min=torch.finfo(gains.dtype).tiny)[:, None], 0.0)
    d = (position[:, :, None] - position[:, None, :]).abs().to(scores.dtype)
    delta = (1.0 / torch.log2(1.0 + d.clamp(min=1.0)) - 1.0 / torch.log2(2.0 + d)).abs()
    weights = delta * (g[:, :, None] - g[:, None, :]).abs() / math.log(2.0)  # log2(1 + e^x) = softplus(x) / ln 2
    rel = torch.where(valid, labels, 0.0)
    prefer = rel[:, :, None] > rel[:, None, :]
    if k is not None:
        top = position <= k
        prefer = prefer & top[:, :, None] & top[:, None, :]
    return _pairwise_logistic(scores * sigma, prefer, weights, valid, pair_reduction, reduction)


def lambdarank_loss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    k: int | None = None,
    pair_reduction: PairReduction = "sum",
    reduction: Reduction = "mean",
    gain: Literal["exp2", "linear"] = "exp2",
) -> Tensor:
    """LambdaRank (Burges et al. 2006; compared in FIRST §4.2, Table 3).

    RankNet over pairs with label_i > label_j, each weighted by the detached |Delta nDCG@k|
    of swapping i and j in the current score order (see delta_ndcg for k and gain).
    """
    valid = _valid(scores, mask)
    rel = torch.where(valid, labels, 0.0)
    prefer = rel[:, :, None] > rel[:, None, :]
    weights = delta_ndcg(scores, labels, mask, k, gain)
    return _pairwise_logistic(scores, prefer, weights, valid, pair_reduction, reduction)


# ---------------------------------------------------------------------------
# Listwise: ListNet (top-1) and ListMLE (Plackett-Luce)
# ---------------------------------------------------------------------------


def listnet_loss(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Top-1 ListNet (Cao et al. 2007; compared in FIRST §4.2, Table 3).

    Cross-entropy -sum_i softmax(labels)_i * log softmax(scores / temperature)_i.
    """
    valid = _valid(scores, mask)
    target = torch.where(valid, _masked_log_softmax(labels.to(scores.dtype), valid).exp(), 0.0)
    log_q = _masked_log_softmax(scores / temperature, valid)
    return _reduce(-(target * log_q).sum(dim=1), reduction)


def listnet_grad(
    scores: Tensor,
    labels: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """Hand-derived dL/ds of listnet_loss: (softmax(s / T) - softmax(labels)) / T."""
    valid = _valid(scores, mask)
    target = torch.where(valid, _masked_log_softmax(labels.to(scores.dtype), valid).exp(), 0.0)
    q = torch.where(valid, _masked_log_softmax(scores / temperature, valid).exp(), 0.0)
    return (q - target) / temperature * _grad_scale(scores.shape[0], reduction)


def _remaining(target_ranks: Tensor, valid: Tensor) -> Tensor:
    """remaining[b, t, i]: candidate i is still unplaced at step t (0-based), i.e. r_i > t."""
    n = target_ranks.shape[1]
    steps = torch.arange(n, device=target_ranks.device)
    return valid[:, None, :] & (target_ranks[:, None, :] > steps[None, :, None])


def plackett_luce_log_prob(scores: Tensor, target_ranks: Tensor, mask: Tensor | None = None) -> Tensor:
    """log P(target permutation | scores) (B,) under the Plackett-Luce model (PE-Rank §3.3, eq. 4).

    At step t the item ranked t is drawn from the not-yet-placed items with probability
    exp(s_i) / sum_{unplaced j} exp(s_j); the permutation's probability is the product.
    """
    valid = _valid(scores, mask)
    remaining = _remaining(target_ranks, valid)
    log_p = _masked_log_softmax(scores[:, None, :].expand_as(remaining), remaining)
    steps = torch.arange(1, scores.shape[1] + 1, device=scores.device)
    picked = valid[:, None, :] & (target_ranks[:, None, :] == steps[None, :, None])
    return torch.where(picked, log_p, 0.0).sum(dim=(1, 2))


def listmle_loss(
    scores: Tensor,
    target_ranks: Tensor,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """ListMLE (Xia et al. 2008), PE-Rank §3.3, eq. 5: -log P_PL(target permutation | scores).

    Summed over the n steps as in eq. 5 (PE-Rank's released code averages over steps instead).
    """
    return _reduce(-plackett_luce_log_prob(scores, target_ranks, mask), reduction)


def listmle_grad(
    scores: Tensor,
    target_ranks: Tensor,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Hand-derived dL/ds of listmle_loss: dL/ds_i = sum_{t <= r_i} P_t(i) - 1.

    P_t(i) is the softmax probability of i among the candidates still unplaced at step t.
    """
    valid = _valid(scores, mask)
    remaining = _remaining(target_ranks, valid)
    log_p = _masked_log_softmax(scores[:, None, :].expand_as(remaining), remaining)
    p = torch.where(remaining, log_p.exp(), 0.0)
    grad = p.sum(dim=1) - 1.0
    return torch.where(valid, grad, 0.0) * _grad_scale(scores.shape[0], reduction)


# ---------------------------------------------------------------------------
# Contrastive (TSARankLLM) and distillation (PE-Rank, TSARankLLM)
# ---------------------------------------------------------------------------


def infonce_loss(
    scores: Tensor,
    positive_index: Tensor | int,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    """TSARankLLM §2.3, eq. 3: -log exp(S(q, d+)/tau) / sum_{d in D} exp(S(q, d)/tau).

    positive_index: an int or a (B,) long tensor giving the positive's column. The paper uses
    tau = 0.001 (§3.1). A query whose positive slot is masked contributes 0.
    """
    valid = _valid(scores, mask)
    batch = scores.shape[0]
    pos = torch.as_tensor(positive_index, device=scores.device, dtype=torch.long).expand(batch)[:, None]
    log_p = _masked_log_softmax(scores / temperature, valid)
    per_query = -torch.where(valid.gather(1, pos), log_p.gather(1, pos), 0.0).squeeze(1)
    return _reduce(per_query, reduction)


def kl_distillation_loss(
    student_scores: Tensor,
    teacher_scores: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    target_ranks: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """KL(teacher || student) between softmax(scores / temperature) distributions (PE-Rank §3.3, eq. 7).

    target_ranks=None: one KL over all real candidates. With target_ranks, the sum over
    decoding steps of eq. 7: at step t both distributions cover the candidates not yet placed
    by the target permutation. The direction KL(teacher || student) follows PE-Rank's released
    code; teacher_scores are used as given (detach them if the teacher must not learn).
    """
    valid = _valid(student_scores, mask)
    if target_ranks is None:
        keep = valid[:, None, :]
    else:
        keep = _remaining(target_ranks, valid)
    keep = keep.expand(student_scores.shape[0], -1, -1)
    log_s = _masked_log_softmax((student_scores / temperature)[:, None, :].expand_as(keep), keep)
    log_t = _masked_log_softmax((teacher_scores / temperature)[:, None, :].expand_as(keep), keep)
    p_t = torch.where(keep, log_t.exp(), 0.0)
    return _reduce((p_t * (log_t - log_s)).sum(dim=(1, 2)), reduction)


def differential_penalty(
    sft_logits: Tensor,
    cpt_logits: Tensor,
    token_mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """TSARankLLM §2.3, eq. 4: L_dp = 1/|T| sum_{j in T} sum_{k in V} KL(p_cpt^{j,k}, p_sft^{j,k}).

    sft_logits, cpt_logits: (B, T, V) next-token logits of the model being fine-tuned and of the
    frozen continually pre-trained model (no gradient flows into it). token_mask (B, T) marks
    the query tokens T. Per sequence: the mean over query tokens of KL(p_cpt || p_sft), the
    inner sum over k being the sum over the vocabulary inside the KL.
    """
    if token_mask is None:
        token_mask = torch.ones(sft_logits.shape[:2], dtype=torch.bool, device=sft_logits.device)
    keep = token_mask.to(torch.bool)[..., None]
    log_sft = torch.log_softmax(torch.where(keep, sft_logits, 0.0), dim=-1)
    log_cpt = torch.log_softmax(torch.where(keep, cpt_logits.detach(), 0.0), dim=-1)
    kl_per_token = (log_cpt.exp() * (log_cpt - log_sft)).sum(dim=-1)  # (B, T)
    kl_per_token = torch.where(token_mask.to(torch.bool), kl_per_token, 0.0)
    per_seq = kl_per_token.sum(dim=1) / token_mask.sum(dim=1).clamp(min=1)
    return _reduce(per_seq, reduction)


def tsarankllm_objective(rank_loss: Tensor, ntp_loss: Tensor, dp_loss: Tensor, alpha: float = 0.6) -> Tensor:
    """TSARankLLM §2.3, eq. 5: alpha * L_rank + (1 - alpha) * (L_ntp + L_dp); alpha = 0.6 in §3.1."""
    return alpha * rank_loss + (1.0 - alpha) * (ntp_loss + dp_loss)


# ---------------------------------------------------------------------------
# check_loss: the behavioural checks the notebook and the tests both run
# ---------------------------------------------------------------------------


def check_loss(
    fn: Callable[..., Tensor],
    target: Literal["ranks", "labels"] = "ranks",
    top_weighted: bool = False,
    n: int = 6,
    seed: int = 0,
    rtol: float = 1e-9,
) -> list[str]:
    """Run behavioural checks on a ranking loss; return the failures (empty list = all pass).

    fn(scores, target, mask=...) must return the batch-mean loss. target="ranks" passes
    target ranks (1 = best), target="labels" passes distinct graded labels (higher = better).
    top_weighted=True adds FIRST's intent: mis-ordering the top pair must cost more than
    mis-ordering the bottom pair. Everything runs in float64.
    """
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    ranks = (torch.randperm(n, generator=g) + 1)[None, :]  # (1, n)
    targ = ranks if target == "ranks" else (n - ranks).to(dt)
    failures: list[str] = []

    def value_and_grad(s: Tensor, t: Tensor, m: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = s.detach().clone().requires_grad_(True)
        v = fn(s, t, mask=m)
        (gr,) = torch.autograd.grad(v, s, allow_unused=True)
        return v.detach(), torch.zeros_like(s) if gr is None else gr

    def check(name: str, body: Callable[[], bool]) -> None:
        try:
            if not body():
                failures.append(name)
        except Exception as exc:  # a crashing loss fails the check, it does not stop the others
            failures.append(f"{name} (raised {type(exc).__name__}: {exc})")

    ordered = (n - ranks).to(dt)  # best candidate gets the largest score
    noise = 0.01 * torch.randn(1, n, generator=g, dtype=dt)

    def correct_beats_reversed() -> bool:
        return bool(value_and_grad(ordered, targ)[0] < value_and_grad(-ordered, targ)[0])

    def gradient_direction() -> bool:
        _, gr = value_and_grad(noise, targ)
        best, worst = ranks[0] == 1, ranks[0] == n
        return bool((-gr[0, best] > 0).all() and (-gr[0, worst] < 0).all())

    def finite_at_extremes() -> bool:
        s = torch.where(torch.arange(n) % 2 == 0, 1e4, -1e4).to(dt)[None, :]
        v, gr = value_and_grad(s, targ)
        v2, gr2 = value_and_grad(-s, targ)
        return bool(torch.isfinite(torch.stack([v, v2])).all() and torch.isfinite(gr).all() and torch.isfinite(gr2).all())

    def masking() -> bool:
        s = torch.randn(1, n, generator=g, dtype=dt)
        v, gr = value_and_grad(s, targ)
        junk = torch.tensor([[float("nan"), float("inf"), -float("inf")]], dtype=dt)
        sp = torch.cat([s[:, :2], junk, s[:, 2:]], dim=1)
        junk_t = torch.tensor([[7, -3, 0]]) if target == "ranks" else torch.tensor([[float("nan"), 99.0, -1.0]], dtype=dt)
        tp = torch.cat([targ[:, :2], junk_t, targ[:, 2:]], dim=1)
        m = torch.ones_like(sp, dtype=torch.bool)
        m[:, 2:5] = False
        vp, grp = value_and_grad(sp, tp, m)
        keep = torch.cat([grp[:, :2], grp[:, 5:]], dim=1)
        return bool(torch.allclose(v, vp, rtol=rtol, atol=1e-12) and torch.allclose(gr, keep, rtol=rtol, atol=1e-12)
                    and (grp[:, 2:5] == 0).all())

    def permutation_invariance() -> bool:
        s = torch.randn(1, n, generator=g, dtype=dt)
        perm = torch.randperm(n, generator=g)
        v, gr = value_and_grad(s, targ)
        vp, grp = value_and_grad(s[:, perm], targ[:, perm])
        return bool(torch.allclose(v, vp, rtol=rtol, atol=1e-12) and torch.allclose(gr[:, perm], grp, rtol=rtol, atol=1e-12))

    def degenerate_rows() -> bool:
        s = torch.randn(2, n, generator=g, dtype=dt)
        t = targ.expand(2, n).clone()
        if target == "ranks":
            t[0] = torch.where(ranks[0] == 1, 1, 0)  # the one real candidate is rank 1
        m = torch.zeros(2, n, dtype=torch.bool)
        m[0, ranks[0] == 1] = True  # row 0: one real candidate; row 1: none
        v, gr = value_and_grad(s, t, m)
        return bool(v == 0 and torch.isfinite(gr).all() and (gr == 0).all())

    def batch_is_mean_of_queries() -> bool:
        s = torch.randn(3, n, generator=g, dtype=dt)
        ts = [targ[:, torch.randperm(n, generator=g)] for _ in range(3)]
        batched = value_and_grad(s, torch.cat(ts))[0]
        single = torch.stack([value_and_grad(s[i : i + 1], ts[i])[0] for i in range(3)]).mean()
        return bool(torch.allclose(batched, single, rtol=rtol, atol=1e-12))

    def top_pair_costs_more() -> bool:
        top = ordered.clone()
        a, b = (ranks[0] == 1), (ranks[0] == 2)
        top[0, a], top[0, b] = ordered[0, b], ordered[0, a]
        bottom = ordered.clone()
        c, d = (ranks[0] == n - 1), (ranks[0] == n)
        bottom[0, c], bottom[0, d] = ordered[0, d], ordered[0, c]
        return bool(value_and_grad(top, targ)[0] > value_and_grad(bottom, targ)[0] * (1 + 1e-6))

    check("correct order must cost less than the reversed order", correct_beats_reversed)
    check("gradient descent must raise the best candidate and lower the worst", gradient_direction)
    check("value and gradient must stay finite at scores of +/-1e4", finite_at_extremes)
    check("masked slots (nan/inf inside) must change neither value nor gradient", masking)
    check("moving scores and targets together must not change the loss", permutation_invariance)
    check("queries with 0 or 1 real candidates must give loss 0 and zero gradient", degenerate_rows)
    check("a batch must give the mean of its queries' losses", batch_is_mean_of_queries)
    if top_weighted:
        check("swapping the top pair must cost more than swapping the bottom pair", top_pair_costs_more)
    return failures
