"""FIRST's joint objective on one batch (chapter 5, lessons/05_lora_finetuning.md §5.1 and §5.8).

FIRST (Reddy et al., 2024, §3.2) trains on ``L = L_LM + lambda * L_Rank``: eq. 1, the language-modelling loss on
the target permutation, plus eq. 2, a weighted RankNet on the identifier logits of the first answer position,
with lambda = 10 (§4.1). Its ablation (Tables 2-3) swaps or drops the terms: :data:`OBJECTIVES`.

How the ranking term of each row is scaled and what its targets are is a *protocol* (:data:`PROTOCOLS`):

* ``"first"``, what FIRST's released training script (``scripts/train_ranking.py``) does: the ranking term is
  multiplied by 10 for weighted RankNet, by 1 for plain RankNet and LambdaRank and by 0.1 for ListNet, and
  ListNet's and LambdaRank's targets are the model's own first-token logits, sorted and handed out in the
  teacher's order (:func:`first_targets`); its "LambdaRank" is LambdaLoss's NDCG-Loss2
  (:func:`minirank.losses.ndcg_loss2`);
* ``"uniform"``, the book's first version of the ablation: lambda = 10 for every ranking loss, ListNet and
  Burges' LambdaRank (:func:`minirank.losses.lambdarank_loss`) on the qrels grades.

For ``joint``, ``-lm`` and ``lm-only`` the two protocols compute the same loss.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch

from minirank import losses as LOSSES
from minirank.first import identifier_logits
from minirank.forward import logits_kwargs

#: The ablation of FIRST Table 2 (rows "- Weighting", "- LM") and Table 3 (the other ranking losses):
#: objective name -> (uses the LM loss, the ranking loss on the first-token logits or None).
OBJECTIVES: dict[str, tuple[bool, str | None]] = {
    "joint": (True, "weighted_ranknet"),      # FIRST: L_LM + lambda * weighted RankNet (eq. 3)
    "-weighting": (True, "ranknet"),          # Table 2 "- Weighting": plain RankNet, every pair weight 1
    "-lm": (False, "weighted_ranknet"),       # Table 2 "- LM": lambda * weighted RankNet alone
    "lm-only": (True, None),                  # Table 2 "LM Generation" training: RankZephyr's objective
    "listnet": (True, "listnet"),             # Table 3: ListNet in place of weighted RankNet
    "lambdarank": (True, "lambdarank"),       # Table 3: LambdaRank in place of weighted RankNet
}

#: The two protocols of the ablation (module docstring): ranking loss -> (function of minirank.losses, scale at
#: lambda = 10, targets). Under "first" the scales are those of FIRST's scripts/train_ranking.py; a lambda other
#: than 10 multiplies all of them by lambda / 10. Targets: "teacher ranks" (pairs of equal grade left out, see
#: rank_loss), "qrels grades", or "own sorted logits" (first_targets).
PROTOCOLS: dict[str, dict[str, tuple[str, float, str]]] = {
    "first": {
        "weighted_ranknet": ("weighted_ranknet_loss", 10.0, "teacher ranks"),
        "ranknet": ("ranknet_loss", 1.0, "teacher ranks"),
        "listnet": ("listnet_loss", 0.1, "own sorted logits"),
        "lambdarank": ("ndcg_loss2", 1.0, "own sorted logits"),
    },
    "uniform": {
        "weighted_ranknet": ("weighted_ranknet_loss", 10.0, "teacher ranks"),
        "ranknet": ("ranknet_loss", 10.0, "teacher ranks"),
        "listnet": ("listnet_loss", 10.0, "qrels grades"),
        "lambdarank": ("lambdarank_loss", 10.0, "qrels grades"),
    },
}


def ranking_term(objective: str, protocol: str = "first", lam: float = 10.0) -> dict | None:
    """What the ablation row ``objective`` adds to the LM loss under ``protocol``: ``{"loss", "scale",
    "targets"}`` (the function of :mod:`minirank.losses`, the factor in front of it, how its targets are
    built), or None for ``lm-only``. Unknown names are a ValueError listing the known ones."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: expected one of {list(OBJECTIVES)}")
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: expected one of {list(PROTOCOLS)}")
    kind = OBJECTIVES[objective][1]
    if kind is None:
        return None
    loss, scale, targets = PROTOCOLS[protocol][kind]
    return {"loss": loss, "scale": scale * lam / 10.0, "targets": targets}


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean negative log-likelihood of the target tokens (labels != -100), next-token shifted.

    ``logits`` may cover only the last ``k`` positions of the sequence (see :func:`forward_logits`);
    the labels are aligned with them from the right.
    """
    offset = labels.shape[1] - logits.shape[1]
    shifted = logits[:, :-1, :].float()
    target = labels[:, offset + 1:]
    return torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), target.reshape(-1),
                                             ignore_index=-100)


def forward_logits(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """``(logits, offset)``: the logits from the first rank position of the batch to the end.

    Neither loss needs the prompt's other positions, and their logits (``tokens x vocabulary``, 49k
    wide for the default model) cost about a fifth of the step's compute and most of its activation
    memory. ``offset`` is the sequence position of ``logits[:, 0]``; models without ``logits_to_keep``
    return all positions (offset 0).
    """
    width = batch["input_ids"].shape[1]
    keep = logits_kwargs(model, width - int(batch["rank_position"].min()))
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **keep)
    return out.logits, width - out.logits.shape[1]


def first_token_scores(logits: torch.Tensor, rank_position: torch.Tensor, identifier_ids: torch.Tensor,
                       offset: int = 0) -> torch.Tensor:
    """``s_i``: the logit of each passage's identifier at the rank position (B, m), read by
    :func:`minirank.first.identifier_logits`, the readout FIRST's inference uses too."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    return identifier_logits(logits[rows, rank_position.to(logits.device) - offset], identifier_ids)


def first_targets(scores: torch.Tensor, target_ranks: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """FIRST's ListNet and LambdaRank targets (B, m): the model's own scores sorted best first, the r-th largest
    handed to the passage the teacher ranks r (``target_ranks``, 1 = best). 0 on padding.

    As in FIRST's ``scripts/train_ranking.py`` (``scores.sort`` then ``gather`` by the teacher's ranks) the targets
    are not detached: the gradient flows through them too. They hold the same values as the scores, in the
    teacher's order, so the loss asks the model to reorder its logits, not to reach a fixed scale.
    """
    mask = mask.to(torch.bool)
    ordered = torch.sort(torch.where(mask, scores, float("-inf")), dim=1, descending=True).values
    picked = ordered.gather(1, (target_ranks.to(scores.device) - 1).clamp(min=0))
    return torch.where(mask, picked, 0.0)


def rank_loss(scores: torch.Tensor, target_ranks: torch.Tensor, grades: torch.Tensor, mask: torch.Tensor,
              kind: str = "weighted_ranknet", pair_reduction: str = "mean", protocol: str = "first") -> torch.Tensor:
    """The ranking loss on the first-token scores (B, m), mean over the batch; unscaled (see :func:`joint_loss`).

    ``weighted_ranknet`` is eq. 2 with the intended sign: pairs ``r_i < r_j`` weighted ``1/(r_i + r_j)``
    (:func:`minirank.losses.weighted_ranknet_loss`); ``ranknet`` sets every weight to 1. Pairs whose
    grades are equal (qrels ties) carry no preference and are left out. ``pair_reduction='mean'``
    divides by the number of pairs, as FIRST's training code does and as lambda = 10 assumes; with a
    strict teacher ordering the result equals ``weighted_ranknet_loss(..., pair_reduction='mean')``.
    ``listnet`` and ``lambdarank`` (Table 3) depend on the protocol: under ``"first"`` ListNet and NDCG-Loss2
    on :func:`first_targets`; under ``"uniform"`` ListNet and Burges' LambdaRank on the grades.
    """
    mask = mask.to(torch.bool)
    target_ranks, grades = target_ranks.to(scores.device), grades.to(scores.device)
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}: expected one of {list(PROTOCOLS)}")
    if pair_reduction not in ("mean", "sum"):
        raise ValueError(f"pair_reduction must be 'mean' or 'sum', not {pair_reduction!r}")
    if kind in ("weighted_ranknet", "ranknet"):
        r = torch.where(mask, target_ranks, 0).to(scores.dtype)
        differ = grades[:, :, None] != grades[:, None, :]
        base = (1.0 / (r[:, :, None] + r[:, None, :]).clamp(min=1.0) if kind == "weighted_ranknet"
                else torch.ones_like(differ, dtype=scores.dtype))
        weights = torch.where(differ, base, 0.0)
        per_query = LOSSES.ranknet_loss(scores, target_ranks, mask, weighting=weights, pair_reduction="sum",
                                        reduction="none")
        if pair_reduction == "mean":
            pairs = (r[:, :, None] < r[:, None, :]) & differ & mask[:, :, None] & mask[:, None, :]
            per_query = per_query / pairs.sum(dim=(1, 2)).clamp(min=1)
        return per_query.mean()
    if kind not in ("listnet", "lambdarank"):
        raise ValueError(f"unknown ranking loss {kind!r}: expected weighted_ranknet, ranknet, listnet or lambdarank")
    if protocol == "first":
        targets = first_targets(scores, target_ranks, mask)
        if kind == "listnet":
            return LOSSES.listnet_loss(scores, targets, mask)
        return LOSSES.ndcg_loss2(scores, targets, mask, pair_reduction=pair_reduction)
    if kind == "listnet":
        return LOSSES.listnet_loss(scores, grades, mask)
    return LOSSES.lambdarank_loss(scores, grades, mask, pair_reduction=pair_reduction)


def joint_loss(model, batch: Mapping[str, torch.Tensor], objective: str = "joint", lam: float = 10.0,
               pair_reduction: str = "mean", protocol: str = "first") -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 3 for one batch: ``L_LM + scale * L_Rank`` for the ablation row ``objective``; also the parts.

    ``scale`` is :func:`ranking_term`'s: ``lam`` for weighted RankNet (FIRST's lambda = 10), and under the
    ``"first"`` protocol ``lam / 10`` for RankNet and LambdaRank and ``lam / 100`` for ListNet.
    """
    term = ranking_term(objective, protocol, lam)
    use_lm, kind = OBJECTIVES[objective]
    device = batch["input_ids"].device
    logits, offset = forward_logits(model, batch)
    parts: dict[str, float] = {}
    total = torch.zeros((), device=logits.device)
    lm = lm_loss(logits, batch["labels"].to(logits.device))
    parts["loss_lm"] = float(lm.detach())
    if use_lm:
        total = total + lm
    scores = first_token_scores(logits, batch["rank_position"], batch["identifier_ids"], offset)
    if term is not None:
        rank = rank_loss(scores, batch["target_ranks"], batch["grades"], batch["candidate_mask"].to(device),
                         kind, pair_reduction, protocol)
        parts["loss_rank"] = float(rank.detach())
        total = total + term["scale"] * rank
    return total, parts
