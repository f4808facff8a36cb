"""Query likelihood: rank a passage by how likely the model finds the query after it (chapter 8).

TSARankLLM (Zhang et al., 2023, §2.1, eq. 1) scores a candidate ``d`` for a query ``q`` by the
probability that the language model writes ``q`` after the prompt ``'Document: {d} Query:'``::

    score(q, d) = prod_j p(q_j | P(d), q_<j)        (eq. 1; a sum of log-probabilities here)

Each candidate is read on its own (pointwise), so a query with ``n`` candidates costs ``n`` sequences
through the model, where a listwise reranker (chapters 2-3) reads one window of 20 at a time:
:func:`cost_per_query` counts both.

Two details decide whether the scores of one query's candidates are comparable:

* the query's tokens must not depend on the passage. :func:`query_token_ids` tokenises the query on
  its own (``' ' + query``: the word after ``Query:`` is spaced, as in ordinary text) and the ids are
  appended to the prompt's ids, so every candidate scores exactly the same tokens. Then the sum
  (the paper's product) and the mean (the released code's ``eval.py``) give the same order within a
  query; they differ only when scores are compared across queries, or trained on (chapter 8's SFT).
* the log-probability of query token ``j`` is read from the logits at the position *before* it: the
  first query token is predicted by the prompt's last token (``Query:``). :func:`query_logits`
  gathers exactly those positions, from a left-padded batch, with position ids that ignore the padding.

The book ranks by the **mean** (as the released code does; ``reduction="sum"`` gives the paper's
product): it is the quantity chapter 8's fine-tuning puts its temperature on.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from minirank import prompts as P
from minirank.forward import context_length, device_of, last_logits_kwargs, positions
from minirank.listwise import window_schedule
from minirank.rerank import PointwiseReranker, queries_and_passages

#: TSARankLLM's prompt (§2.1, and ``eval.py`` of Alibaba-NLP/RankingGPT); the query's ids follow ``Query:``.
QL_PROMPT = "Document: {doc} Query:"
REDUCTIONS = ("mean", "sum")


def query_token_ids(tokenizer, query: str, eos: bool = False) -> list[int]:
    """The ids the model must write after ``Query:``: ``' ' + query`` (whitespace folded), no special
    tokens; with ``eos=True`` the tokenizer's end-of-sequence id is appended (continual pre-training
    puts its loss on it, TSARankLLM's ``pretrain.py``). A ValueError if the query tokenises to nothing."""
    text = " ".join(str(query).split())
    ids = tokenizer.encode(" " + text, add_special_tokens=False) if text else []
    if not ids:
        raise ValueError(f"query {query!r} tokenises to no tokens: query likelihood needs at least one query "
                         f"token to score (an empty or whitespace-only query?)")
    if eos:
        if tokenizer.eos_token_id is None:
            raise ValueError("eos=True, but the tokenizer has no eos_token_id")
        ids = ids + [int(tokenizer.eos_token_id)]
    return ids


def prompt_ids(tokenizer, passage: str, query_length: int, max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS,
               limit: int | None = None) -> tuple[list[int], str]:
    """The ids of ``'Document: {passage} Query:'`` and what happened to the passage: ``'whole'``,
    ``'cut'`` (to ``max_passage_tokens``) or ``'cut-to-fit'`` (to fit the context ``limit`` together
    with ``query_length`` query tokens).

    The rule: the passage is cut to a prefix of at most ``max_passage_tokens`` tokens
    (:func:`minirank.prompts.truncate_passages`); if the prompt and the query are then still longer
    than ``limit``, the passage is cut further, to the tokens that fit (possibly none). The query is
    never cut: a query that cannot fit even after an empty passage is a ValueError.
    """
    folded = " ".join(str(passage).split())
    text = P.truncate_passages([folded], tokenizer, max_passage_tokens)[0]
    state = "whole" if text == folded else "cut"
    ids = tokenizer.encode(QL_PROMPT.format(doc=text), add_special_tokens=True)
    if limit is None or len(ids) + query_length <= limit:
        return ids, state
    empty = len(tokenizer.encode(QL_PROMPT.format(doc=""), add_special_tokens=True))
    if empty + query_length > limit:
        raise ValueError(f"a query of {query_length} tokens does not fit the model's context of {limit} tokens "
                         f"even with an empty passage (the prompt alone is {empty} tokens)")
    budget = limit - query_length - empty  # tokens left for the passage
    while True:
        text = P.truncate_passages([text], tokenizer, budget)[0] if budget > 0 else ""
        ids = tokenizer.encode(QL_PROMPT.format(doc=text), add_special_tokens=True)
        over = len(ids) + query_length - limit
        if over <= 0:
            break
        budget -= over  # the cut re-encoded longer (tokens merge at its edges): shrink by the overflow
    return ids, "cut-to-fit"


def query_logits(model, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int):
    """One forward pass over ``rows`` of ``(prompt ids, query ids)``, left-padded into one batch.

    Returns ``(logits, targets, mask)``: ``logits`` ``(batch, Q, vocabulary)`` float32, the model's
    next-token logits at the position *before* each query token (the first query token is predicted
    from the prompt's last token); ``targets`` ``(batch, Q)`` the query ids; ``mask`` ``(batch, Q)``
    True at real query tokens. ``Q`` is the longest query of the batch; shorter queries are
    right-aligned (their first columns are masked). Differentiable (training calls it under grad);
    wrap in ``torch.no_grad()`` to score. Only the last ``Q + 1`` positions' logits are computed when
    the model supports ``logits_to_keep``.
    """
    if not rows:
        raise ValueError("query_logits needs at least one (prompt ids, query ids) row")
    for prompt, query in rows:
        if len(prompt) == 0 or len(query) == 0:
            raise ValueError("every row needs a non-empty prompt (it predicts the first query token) and query")
    sequences = [list(p) + list(q) for p, q in rows]
    width = max(len(s) for s in sequences)
    longest = max(len(q) for _, q in rows)
    device = device_of(model)
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in sequences], dtype=torch.long, device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], dtype=torch.long, device=device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False,
                **last_logits_kwargs(model, longest + 1))
    # positions width-Q-1 .. width-2 predict the tokens at width-Q .. width-1
    logits = out.logits[:, -(longest + 1):-1, :].float()
    targets = ids[:, width - longest:]
    lengths = torch.tensor([len(q) for _, q in rows], device=device)
    columns = torch.arange(longest, device=device)
    query_mask = columns[None, :] >= (longest - lengths)[:, None]
    return logits, targets, query_mask


def token_log_probs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``log p(q_j | P(d), q_<j)`` ``(batch, Q)`` from :func:`query_logits`' output; 0 where masked."""
    chosen = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    return torch.where(mask, chosen, torch.zeros_like(chosen))


def reduce_query(log_probs: torch.Tensor, mask: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Per-row score ``(batch,)``: the sum of the query tokens' log-probabilities (eq. 1's product, in
    logs) or their mean (the released code's ``eval.py``)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    total = (log_probs * mask).sum(-1)
    return total if reduction == "sum" else total / mask.sum(-1).clamp(min=1)


class QueryLikelihoodReranker(PointwiseReranker):
    """TSARankLLM's pointwise scorer (§2.1, eq. 1): ``log p(query | 'Document: {d} Query:')``.

    ``reduction``: ``"mean"`` (the book's choice and the released code's) or ``"sum"`` (the paper's
    product); the same order within a query. ``max_passage_tokens``: the cut of every passage (default
    the listwise rerankers', so both read the same text); a passage that still does not fit the
    model's context with the query is cut to fit (:func:`prompt_ids`). Counters (``stats``):
    ``model_calls`` (one per batch of ``batch_size`` pairs), ``tokens_processed`` (prompt + query
    tokens, padding excluded), ``passages_cut`` and ``passages_cut_to_fit``.
    """

    name = "query-likelihood"

    def __init__(self, model, tokenizer, reduction: str = "mean",
                 max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS, batch_size: int = 16):
        super().__init__(batch_size)
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.model, self.tokenizer, self.reduction = model, tokenizer, reduction
        self.max_passage_tokens = max_passage_tokens

    def rerank(self, queries, candidates, passages=None, *, k=None, progress=False):
        texts, _ = queries_and_passages(queries, passages)
        for qid in candidates:  # a query without tokens fails before any model call, naming it
            if qid in texts:
                try:
                    query_token_ids(self.tokenizer, texts[qid])
                except ValueError as err:
                    raise ValueError(f"query {qid!r}: {err}") from None
        run = super().rerank(queries, candidates, passages, k=k, progress=progress)
        self._counters()  # present even when nothing was scored (k=0)
        return run

    def _counters(self) -> None:
        for key in ("passages_cut", "passages_cut_to_fit"):
            self.stats.setdefault(key, 0)

    @torch.no_grad()
    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        self._counters()
        limit = context_length(self.model)
        known: dict[str, list[int]] = {}
        rows = []
        for query, passage in pairs:
            q = known.get(query) or known.setdefault(query, query_token_ids(self.tokenizer, query))
            ids, state = prompt_ids(self.tokenizer, passage, len(q), self.max_passage_tokens, limit)
            self.stats["passages_cut"] += state != "whole"
            self.stats["passages_cut_to_fit"] += state == "cut-to-fit"
            rows.append((ids, q))
        logits, targets, mask = query_logits(self.model, rows, P.pad_token_id(self.tokenizer))
        self.stats["model_calls"] += 1
        self.stats["tokens_processed"] += sum(len(p) + len(q) for p, q in rows)
        return reduce_query(token_log_probs(logits, targets, mask), mask, self.reduction).cpu().tolist()


def prompt_tokens(tokenizer, query: str, passages: Sequence[str],
                  max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS) -> int:
    """Tokens query likelihood reads for ``query`` over ``passages``: every prompt and the query's ids."""
    q = query_token_ids(tokenizer, query)
    return sum(len(prompt_ids(tokenizer, p, len(q), max_passage_tokens)[0]) + len(q) for p in passages)


def cost_per_query(tokenizer, query: str, passages: Sequence[str], window: int = 20, stride: int = 10,
                   max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS, batch_size: int = 16) -> list[dict]:
    """What reranking ``passages`` for ``query`` costs each kind of reranker, counted from the real
    prompts (no model is run): one row per method with ``sequences`` (rows the model reads),
    ``model_calls`` (forward passes: batches for query likelihood, one per window for FIRST, one per
    window and generated token for generation, at one window per call) and ``tokens`` (prompt tokens
    processed). Listwise windows follow :func:`minirank.listwise.window_schedule` over the first-stage
    order; generation adds the tokens of a complete answer per window.
    """
    if not passages:
        raise ValueError("cost_per_query needs at least one passage")
    ql_tokens = prompt_tokens(tokenizer, query, passages, max_passage_tokens)
    schedule = window_schedule(len(passages), window, stride) or [(0, len(passages))]
    listwise_tokens = sum(len(P.encode(tokenizer, [P.build_prompt(query, passages[s:e], tokenizer,
                                                                  max_passage_tokens=max_passage_tokens)])[0][0])
                          for s, e in schedule)
    answers = sum(len(tokenizer.encode(P.ideal_answer(e - s), add_special_tokens=False)) for s, e in schedule)
    n = len(passages)
    return [
        {"method": "query-likelihood", "sequences": n, "model_calls": -(-n // batch_size), "tokens": ql_tokens,
         "generated": 0},
        {"method": "first", "sequences": len(schedule), "model_calls": len(schedule), "tokens": listwise_tokens,
         "generated": 0},
        {"method": "listwise-gen", "sequences": len(schedule), "model_calls": len(schedule) + answers,
         "tokens": listwise_tokens, "generated": answers},
    ]
