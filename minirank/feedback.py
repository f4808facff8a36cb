"""Relevance feedback from rerankers: move the dense retriever's query vector, search again (chapter 9).

FIRST (Reddy et al., 2024, §4.4 and Table 4), following Reddy et al. (2023), improves a dense
retriever's *recall* at test time: retrieve, let a reranker judge the retrieved passages, then fit the
query's vector so that the retriever's own scores agree with the reranker, and retrieve again over the
whole collection with the moved vector. Only the query vector is a parameter; the passage vectors and
the encoder stay as they are.

The retriever's scores are a scaled dot product, ``s_i = (c / 2) q . p_i``, with ``c`` chosen once per
query so that the initial scores span the teacher's range (:func:`score_scale`; the ``/ 2`` is the
released code's, ``scripts/distill.py`` of gangiswag/llm-reranker, whose learning rates were tuned with
it). Two teachers, two losses (§4.4):

* a **pointwise** scorer's floats (a cross-encoder in the paper; query likelihood, chapter 8, here):
  KL(teacher || retriever) between the softmax distributions over the candidates ("batchmean"),
  Adam, learning rate 0.005, 100 steps (:func:`fit_kl`);
* a **listwise** reranker's order (FIRST): the weighted RankNet of FIRST eq. 2 (weight
  ``1 / (r_i + r_j)``, 1-based ranks, mean over pairs as the released code's ``BCEWithLogitsLoss``),
  Adam, learning rate 0.001, 20 steps (:func:`fit_ranknet`), starting from the pointwise fit's vector
  when both are used ("CE + LLM" in Table 4).

:class:`RelevanceFeedback` puts it together as a retriever (``search(queries, k)``), so
:func:`minirank.evaluate.experiment` compares it with the dense retriever it starts from.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from minirank import losses
from minirank.retrieval import Run, ranked, top_k

#: FIRST §4.4: the pointwise (KL) fit and the listwise (weighted RankNet) fit.
KL_STEPS, KL_LR = 100, 0.005
RANKNET_STEPS, RANKNET_LR = 20, 0.001


def score_scale(teacher: torch.Tensor, initial: torch.Tensor) -> float:
    """``c`` with ``c * (max - min of initial dot products) == max - min of teacher scores`` (the released
    code's ``scaler``); 1.0 when either range is zero (one candidate, or ties everywhere)."""
    spread_t = float(teacher.max() - teacher.min())
    spread_i = float(initial.max() - initial.min())
    return spread_t / spread_i if spread_t > 0 and spread_i > 0 else 1.0


def _fit(query_vector, passage_vectors, target: torch.Tensor, loss_of, steps: int, lr: float):
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got {lr!r}")
    start = torch.as_tensor(np.asarray(query_vector), dtype=torch.float32)
    passages = torch.as_tensor(np.asarray(passage_vectors), dtype=torch.float32)
    if start.dim() != 1 or passages.dim() != 2 or passages.shape[1] != start.shape[0]:
        raise ValueError(f"query_vector must be (dim,) and passage_vectors (n, dim); got {tuple(start.shape)} "
                         f"and {tuple(passages.shape)}")
    if passages.shape[0] != target.shape[0]:
        raise ValueError(f"{passages.shape[0]} passage vectors but {target.shape[0]} teacher values")
    scale = score_scale(target.float(), passages @ start)
    query = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([query], lr=lr)
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_of((scale / 2) * (passages @ query))
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return query.detach().numpy(), history


def fit_kl(query_vector, passage_vectors, teacher_scores: Sequence[float], steps: int = KL_STEPS,
           lr: float = KL_LR) -> tuple[np.ndarray, list[float]]:
    """Fit the query vector ``(dim,)`` to a pointwise teacher's scores ``(n,)`` over passages ``(n, dim)``.

    Loss: KL(softmax(teacher) || softmax(scaled dot products)), :func:`minirank.losses.kl_distillation_loss`
    on one query (= PyTorch's ``KLDivLoss(reduction="batchmean")`` of the released code). Adam, ``lr``,
    ``steps`` updates (FIRST §4.4: 0.005, 100). Returns the new vector and the loss before each update.
    """
    teacher = torch.as_tensor(np.asarray(teacher_scores, dtype=np.float32))
    return _fit(query_vector, passage_vectors, teacher,
                lambda student: losses.kl_distillation_loss(student[None], teacher[None]), steps, lr)


def fit_ranknet(query_vector, passage_vectors, order: Sequence[int], steps: int = RANKNET_STEPS,
                lr: float = RANKNET_LR) -> tuple[np.ndarray, list[float]]:
    """Fit the query vector to a reranker's ``order`` (indices into the passages ``(n, dim)``, best first).

    Loss: FIRST eq. 2's weighted RankNet, weight ``1 / (r_i + r_j)`` with 1-based ranks, averaged over
    the pairs (:func:`minirank.losses.weighted_ranknet_loss`, ``pair_reduction="mean"``). The scale of
    the scores is fitted to the teacher scores ``n, n-1, ..., 1`` of the order. Adam, ``lr``, ``steps``
    updates (FIRST §4.4: 0.001, 20). Returns the new vector and the loss before each update.
    """
    n = len(order)
    if sorted(order) != list(range(n)):
        raise ValueError(f"order must be a permutation of 0..{n - 1} (indices into the passages), got {list(order)}")
    ranks = torch.empty(n, dtype=torch.long)
    ranks[torch.as_tensor(list(order), dtype=torch.long)] = torch.arange(1, n + 1)
    as_scores = (n - ranks + 1).float()
    return _fit(query_vector, passage_vectors, as_scores,
                lambda student: losses.weighted_ranknet_loss(student[None], ranks[None], pair_reduction="mean"),
                steps, lr)


class Remembered:
    """A reranker that reranks the same queries and candidates only once (its first answer is kept).

    Chapter 9 fits three feedback variants on the same teachers' judgements; wrapping the teachers
    saves recomputing them. ``stats`` and ``last_scores`` are those of the remembered call.
    """

    def __init__(self, reranker):
        if not hasattr(reranker, "rerank"):
            raise TypeError(f"Remembered needs a reranker (rerank(queries, candidates, passages)), got "
                            f"{type(reranker).__name__}")
        self.reranker, self.name = reranker, getattr(reranker, "name", type(reranker).__name__)
        self.stats, self.last_scores = {}, {}
        self._memo: dict[tuple, tuple] = {}

    def rerank(self, queries, candidates: Run, passages: Mapping[str, str] | None = None, **options) -> Run:
        key = (tuple((qid, queries[qid], tuple(ranked(scores))) for qid, scores in sorted(candidates.items())),
               tuple(sorted(options.items())))
        if key not in self._memo:
            run = self.reranker.rerank(queries, candidates, passages, **options)
            self._memo[key] = (run, copy.deepcopy(getattr(self.reranker, "last_scores", {})),
                               copy.deepcopy(getattr(self.reranker, "stats", {})))
        run, self.last_scores, self.stats = copy.deepcopy(self._memo[key])
        return run


class RelevanceFeedback:
    """Dense retrieval, reranker feedback on the query vector, dense retrieval again (FIRST §4.4).

    ``dense``: a :class:`minirank.retrieval.Dense` (its passage vectors and encoder); ``passages``: the
    texts the rerankers read. ``pointwise``: a :class:`minirank.rerank.PointwiseReranker` whose scores of
    the top ``pointwise_depth`` candidates are the KL teacher; ``listwise``: any reranker whose *order*
    of the top ``listwise_depth`` is the RankNet teacher (run after the pointwise fit when both are
    given). Both rerank the same first-stage dense candidates, as in the released code. With neither,
    or zero steps, the result is the dense retriever's own run. ``search`` re-retrieves over the whole
    collection; ``history[qid]`` keeps each fit's losses and ``stats`` the rerankers' counters.
    """

    def __init__(self, dense, passages: Mapping[str, str], pointwise=None, listwise=None, pointwise_depth: int = 100,
                 listwise_depth: int = 20, kl_steps: int = KL_STEPS, kl_lr: float = KL_LR,
                 ranknet_steps: int = RANKNET_STEPS, ranknet_lr: float = RANKNET_LR, name: str = "feedback"):
        if not hasattr(dense, "search_vectors") or not hasattr(dense, "encode"):
            raise TypeError(f"dense must be a minirank.retrieval.Dense (encode, search_vectors), got {type(dense).__name__}")
        if pointwise is not None and not hasattr(pointwise, "last_scores"):
            raise TypeError(f"pointwise must be a PointwiseReranker (its scores are the KL teacher), got "
                            f"{type(pointwise).__name__}")
        for what, depth in (("pointwise_depth", pointwise_depth), ("listwise_depth", listwise_depth)):
            if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
                raise ValueError(f"{what} must be a positive integer, got {depth!r}")
        self.dense, self.passages, self.pointwise, self.listwise = dense, passages, pointwise, listwise
        self.pointwise_depth, self.listwise_depth = pointwise_depth, listwise_depth
        self.kl_steps, self.kl_lr, self.ranknet_steps, self.ranknet_lr = kl_steps, kl_lr, ranknet_steps, ranknet_lr
        self.name = name
        self.history: dict[str, dict[str, list[float]]] = {}
        self.stats: dict[str, dict] = {}
        self._row = {pid: i for i, pid in enumerate(dense.pids)}

    def feedback_vectors(self, queries: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
        """``(qids, vectors)``: each query's vector after the feedback fits (the encoder's when none run)."""
        qids = list(queries)
        vectors = np.array(self.dense.encode([queries[q] for q in qids]), dtype=np.float32).reshape(len(qids), -1)
        use_kl = self.pointwise is not None and self.kl_steps > 0
        use_rn = self.listwise is not None and self.ranknet_steps > 0
        self.history = {qid: {} for qid in qids}
        self.stats = {}
        if not qids or not (use_kl or use_rn):
            return qids, vectors
        depth = max(self.pointwise_depth if use_kl else 0, self.listwise_depth if use_rn else 0)
        first = self.dense.search_vectors(qids, vectors, depth)
        if use_kl:
            candidates = top_k(first, self.pointwise_depth)
            self.pointwise.rerank(queries, candidates, self.passages)
            self.stats["pointwise"] = dict(self.pointwise.stats)
            for i, qid in enumerate(qids):
                pids = ranked(candidates[qid])
                teacher = [self.pointwise.last_scores[qid][p] for p in pids]
                vectors[i], self.history[qid]["kl"] = fit_kl(vectors[i], self._vectors(pids), teacher,
                                                             self.kl_steps, self.kl_lr)
        if use_rn:
            candidates = top_k(first, self.listwise_depth)
            run = self.listwise.rerank(queries, candidates, self.passages)
            self.stats["listwise"] = dict(getattr(self.listwise, "stats", {}) or {})
            for i, qid in enumerate(qids):
                pids = ranked(candidates[qid])
                position = {p: j for j, p in enumerate(pids)}
                order = [position[p] for p in ranked(run[qid])]
                vectors[i], self.history[qid]["ranknet"] = fit_ranknet(vectors[i], self._vectors(pids), order,
                                                                       self.ranknet_steps, self.ranknet_lr)
        return qids, vectors

    def _vectors(self, pids: Sequence[str]) -> np.ndarray:
        return self.dense.embeddings[[self._row[p] for p in pids]]

    def search(self, queries: Mapping[str, str], k: int = 100) -> Run:
        """The top ``k`` of the whole collection for each query's fitted vector."""
        qids, vectors = self.feedback_vectors(queries)
        return self.dense.search_vectors(qids, vectors, k) if qids else {}

    def __repr__(self) -> str:
        parts = [f"KL x{self.kl_steps} on {getattr(self.pointwise, 'name', '?')}@{self.pointwise_depth}"
                 if self.pointwise is not None else "",
                 f"RankNet x{self.ranknet_steps} on {getattr(self.listwise, 'name', '?')}@{self.listwise_depth}"
                 if self.listwise is not None else ""]
        return f"RelevanceFeedback(dense, {', then '.join(p for p in parts if p) or 'no feedback'})"
