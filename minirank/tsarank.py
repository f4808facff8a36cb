"""Two-stage adaptation of a query-likelihood ranker, in miniature (TSARankLLM §2.2-2.3, chapter 8).

TSARankLLM (Zhang et al., 2023) adapts a decoder-only LLM to the query-likelihood score of
:mod:`minirank.pointwise` in two stages:

1. **Continual pre-training** (§2.2, eq. 2) on weakly related text pairs: next-token prediction of the
   shorter text (the "query") after ``'Document: {longer text} Query:'``. The released
   ``pretrain.py`` puts the loss on the query and an end-of-sequence token only (``mask_input``).
   The paper mines its pairs from the web (title-body, question-answer, ...); offline, the book makes
   them from the course collection's own passages: a passage's first sentence is the "query" for the
   rest of it (:func:`weak_pairs`).
2. **Supervised fine-tuning** (§2.3) on queries with one relevant passage and ``m`` negatives:
   a contrastive loss over the candidates' scores at temperature τ (eq. 3), next-token prediction on
   the positive (the NTP term) and the *differential penalty* (eq. 4), a KL from the frozen stage-one
   model to the model being trained on the query tokens. Each term can be switched off
   (:class:`SFTConfig`), so the lesson can ablate it.

Where the book follows the released code (``sft.py``) and where the paper:

* the candidate score in the contrastive loss is ``exp(mean log p(q_j))`` (the geometric mean of the
  query tokens' probabilities; the code's ``torch.exp(scores) / temperature``), divided by τ = 0.001
  (``sft.sh``; §3.1) — code and paper agree on τ, and the paper's S is a probability too (eq. 1);
* the NTP term is on the positive's **query tokens** (the paper, §2.3; the code takes the whole
  positive sequence, passage included, which would teach the model to write passages);
* the differential penalty is on the query tokens of every candidate (the paper's T; the code
  averages over every position, padding included);
* the terms are weighted ``α L_rank + (1 - α)(L_ntp + L_dp)`` with α = 0.6 (the paper's eq. 5);
  ``alpha=None`` sums them as the code does.

Only the top decoder blocks train (the paper: "the top 16 transformer layers", after RankLLaMA; the
released recipe trains 16 of BLOOM-560m's 24). For the default model's 30 blocks the book trains the
top :data:`TOP_LAYERS` = 20, the same two thirds as the released recipe for its smallest model; the
embeddings (tied to the output layer in SmolLM2) stay frozen, so the vocabulary's geometry, which
every other chapter's prompts rely on, does not move.

Training is plain PyTorch (AdamW, one group per step), like chapter 5's harness: the contrastive
loss over a group of sequences and the frozen reference model do not fit ``trl``'s trainers without
rewriting their loss anyway.
"""
from __future__ import annotations

import copy
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from minirank import losses
from minirank import prompts as P
from minirank.pointwise import prompt_ids, query_logits, query_token_ids, reduce_query, token_log_probs
from minirank.retrieval import Run, ranked

#: Decoder blocks that train (of the default model's 30): two thirds, as the released recipe's 16 of 24.
TOP_LAYERS = 20
#: Learning rates of the released scripts (``pretrain.sh``: 5e-5; ``sft.sh``: 3e-5).
CPT_LR, SFT_LR = 5e-5, 3e-5

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def weak_pairs(passages: Mapping[str, str], min_query_words: int = 4, min_document_words: int = 10) -> list[tuple[str, str]]:
    """``(query, document)`` pairs from passages: the first sentence is the query for the rest.

    A stand-in for TSARankLLM's web-mined pairs (§2.2, Table 1), which are out of reach offline.
    Passages whose first sentence has fewer than ``min_query_words`` words, or whose rest has fewer
    than ``min_document_words``, give no pair. In ``passages`` order.
    """
    pairs = []
    for text in passages.values():
        parts = _SENTENCE_END.split(" ".join(str(text).split()), maxsplit=1)
        if len(parts) == 2 and len(parts[0].split()) >= min_query_words and len(parts[1].split()) >= min_document_words:
            pairs.append((parts[0], parts[1]))
    return pairs


@dataclass(frozen=True)
class Group:
    """One SFT example: a query, its relevant passage, and ``m`` negatives (TSARankLLM §2.3)."""

    query: str
    positive: str
    negatives: tuple[str, ...]

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.positive, *self.negatives)


def sft_groups(collection, candidates: Run, negatives: int = 3, seed: int = 0) -> list[Group]:
    """Groups from a collection's judged queries: each relevant passage (grade >= the collection's level)
    with ``negatives`` passages drawn from the query's first-stage ``candidates`` that are not judged
    relevant (the paper draws them from BGE's top 1000; here from the run given, e.g. BM25's).
    Queries without enough negatives are skipped; a ValueError if no group can be made."""
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1:
        raise ValueError(f"negatives must be a positive integer, got {negatives!r}")
    level = getattr(collection, "relevance_level", 1)
    rng = random.Random(seed)
    groups = []
    for qid in sorted(collection.qrels):
        judged = collection.qrels[qid]
        relevant = sorted(p for p, g in judged.items() if g >= level)
        pool = [p for p in ranked(candidates.get(qid, {})) if judged.get(p, 0) < level]
        if len(pool) < negatives:
            continue
        for pid in relevant:
            drawn = rng.sample(pool, negatives)
            groups.append(Group(collection.queries[qid], collection.passages[pid],
                                tuple(collection.passages[p] for p in drawn)))
    if not groups:
        raise ValueError(f"no SFT group could be made: no judged query has a relevant passage and {negatives} "
                         f"unjudged candidates")
    return groups


def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of decoder blocks (``model.model.layers`` for Llama-like models)."""
    core = getattr(model, "get_decoder", lambda: None)()
    for owner in (core, getattr(model, "model", None), getattr(model, "transformer", None)):
        for name in ("layers", "h"):
            blocks = getattr(owner, name, None)
            if isinstance(blocks, torch.nn.ModuleList):
                return blocks
    raise TypeError(f"cannot find the decoder blocks of {type(model).__name__} (expected .model.layers)")


def train_top_layers(model, top: int) -> int:
    """Freeze everything but the top ``top`` decoder blocks; return the number of trainable parameters."""
    blocks = decoder_layers(model)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(blocks):
        raise ValueError(f"top_layers must be between 1 and the model's {len(blocks)} blocks, got {top!r}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in blocks[len(blocks) - top:]:
        for parameter in block.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _rows(tokenizer, pairs: Sequence[tuple[str, str]], max_passage_tokens, eos: bool):
    rows = []
    for query, document in pairs:
        q = query_token_ids(tokenizer, query, eos=eos)
        rows.append((prompt_ids(tokenizer, document, len(q), max_passage_tokens)[0], q))
    return rows


def cpt_loss(model, tokenizer, pairs: Sequence[tuple[str, str]],
             max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS) -> torch.Tensor:
    """Stage one (eq. 2): the mean negative log-likelihood of the query tokens and EOS after the prompt
    (averaged over the batch's target tokens, as the released code's cross-entropy)."""
    logits, targets, mask = query_logits(model, _rows(tokenizer, pairs, max_passage_tokens, eos=True),
                                         P.pad_token_id(tokenizer))
    return -token_log_probs(logits, targets, mask).sum() / mask.sum()


@dataclass(frozen=True)
class SFTConfig:
    """Stage two's objective (TSARankLLM §2.3, §3.1): switch each term off to ablate it.

    ``tau``: the contrastive temperature (0.001 in §3.1 and ``sft.sh``); ``alpha``: eq. 5's weight
    (0.6; None sums the terms as the released code does).
    """

    rank: bool = True
    ntp: bool = True
    dp: bool = True
    tau: float = 0.001
    alpha: float | None = 0.6
    max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS

    def __post_init__(self):
        if not (self.rank or self.ntp or self.dp):
            raise ValueError("SFTConfig switches every term off: nothing would train")
        if not self.tau > 0:
            raise ValueError(f"tau must be positive, got {self.tau!r}")
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] (or None to sum the terms), got {self.alpha!r}")


def sft_losses(model, reference, tokenizer, group: Group, config: SFTConfig = SFTConfig()) -> dict[str, torch.Tensor]:
    """Stage two's terms on one group: ``rank`` (eq. 3), ``ntp`` (eq. 2 on the positive), ``dp`` (eq. 4)
    and their ``total`` (eq. 5). ``reference`` is the frozen stage-one model (needed when ``config.dp``)."""
    rows = _rows(tokenizer, [(group.query, text) for text in group.candidates], config.max_passage_tokens, eos=False)
    pad = P.pad_token_id(tokenizer)
    logits, targets, mask = query_logits(model, rows, pad)
    log_probs = token_log_probs(logits, targets, mask)
    zero = logits.new_zeros(())
    terms = {"rank": zero, "ntp": zero, "dp": zero}
    if config.rank:  # the candidate's S: exp(mean log p), the released code's; the positive is column 0
        scores = reduce_query(log_probs, mask, "mean").exp()
        terms["rank"] = losses.infonce_loss(scores[None], 0, temperature=config.tau)
    if config.ntp:
        terms["ntp"] = -log_probs[0].sum() / mask[0].sum()
    if config.dp:
        if reference is None:
            raise ValueError("the differential penalty needs the frozen stage-one model (reference)")
        with torch.no_grad():
            ref_logits, _, _ = query_logits(reference, rows, pad)
        terms["dp"] = losses.differential_penalty(logits, ref_logits, mask)
    if config.alpha is None:
        terms["total"] = terms["rank"] + terms["ntp"] + terms["dp"]
    else:
        terms["total"] = losses.tsarankllm_objective(terms["rank"], terms["ntp"], terms["dp"], config.alpha)
    return terms


def _optimizer(model, top_layers: int, lr: float):
    train_top_layers(model, top_layers)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")


def continual_pretraining(model, tokenizer, pairs: Sequence[tuple[str, str]], steps: int, batch_size: int = 4,
                          lr: float = CPT_LR, top_layers: int = TOP_LAYERS, seed: int = 0,
                          max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS) -> list[float]:
    """Stage one: ``steps`` AdamW updates on batches of ``batch_size`` weak pairs (shuffled with ``seed``,
    cycling); the model is trained in place (top ``top_layers`` blocks) and left in eval mode.
    Returns the loss of every step."""
    _check_steps(steps)
    if not pairs:
        raise ValueError("continual_pretraining needs at least one (query, document) pair")
    torch.manual_seed(seed)
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    optimizer = _optimizer(model, top_layers, lr)
    model.train()
    history = []
    for step in range(steps):
        batch = [pairs[order[(step * batch_size + i) % len(order)]] for i in range(batch_size)]
        optimizer.zero_grad()
        loss = cpt_loss(model, tokenizer, batch, max_passage_tokens)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    model.eval()
    return history


def frozen_copy(model):
    """The stage-one model as the differential penalty's fixed reference: a copy without gradients."""
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def supervised_fine_tuning(model, tokenizer, groups: Sequence[Group], steps: int, config: SFTConfig = SFTConfig(),
                           reference=None, lr: float = SFT_LR, top_layers: int = TOP_LAYERS,
                           seed: int = 0) -> list[dict[str, float]]:
    """Stage two: ``steps`` AdamW updates, one group each (shuffled with ``seed``, cycling), in place.

    ``reference``: the frozen stage-one model for the differential penalty; by default a
    :func:`frozen_copy` of ``model`` as it is before this call. Returns every step's terms as floats.
    """
    _check_steps(steps)
    if not groups:
        raise ValueError("supervised_fine_tuning needs at least one group")
    if config.dp and reference is None:
        reference = frozen_copy(model)
    torch.manual_seed(seed)
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    optimizer = _optimizer(model, top_layers, lr)
    model.train()
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        terms = sft_losses(model, reference, tokenizer, groups[order[step % len(order)]], config)
        terms["total"].backward()
        optimizer.step()
        history.append({name: float(value.detach()) for name, value in terms.items()})
    model.eval()
    return history
