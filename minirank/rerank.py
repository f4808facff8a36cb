"""The interface every ranker in the book meets, and how rankers compose (chapters 2-9).

Two kinds of object, in the spirit of PyTerrier (where ``bm25 % 20 >> reranker`` is a pipeline):

* a **retriever** ranks a whole collection: ``search(queries, k) -> Run`` (:class:`Retriever`;
  :class:`minirank.retrieval.BM25` and :class:`minirank.retrieval.Dense` are two);
* a **reranker** reorders candidates it is given: ``rerank(queries, candidates, passages) -> Run``
  (:class:`Reranker`), and keeps counters of what it cost in ``stats`` (:func:`new_stats`).

:class:`Cascade` joins them: retrieve, cut at ``depth``, rerank; it is itself a retriever, so
:func:`minirank.evaluate.experiment` compares BM25, dense retrieval and every reranker in one table.

Two bases save a new method the bookkeeping: :class:`minirank.listwise.ListwiseReranker` (a sliding
window over the candidates; subclasses order one window: generation, FIRST, PE-Rank) and
:class:`PointwiseReranker` here (one score per candidate, batched; query likelihood is one).
A new reranker is any class with ``name``, ``stats`` and ``rerank``; lesson 03 plugs in a ten-line one.
"""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from tqdm.auto import tqdm

from minirank.retrieval import Run, from_rankings, ranked, top_k

#: The ways a generated permutation is repaired (see :func:`minirank.listwise.parse_permutation`).
REPAIR_KINDS = ("duplicates", "out_of_range", "missing", "no_identifiers")


@runtime_checkable
class Retriever(Protocol):
    """Anything that ranks the collection it was built on: ``search(queries, k) -> Run``.

    ``queries``: ``{qid: text}``; the run holds at most ``k`` passages per query.
    """

    def search(self, queries: Mapping[str, str], k: int = 100) -> Run: ...


@runtime_checkable
class Reranker(Protocol):
    """Anything that reorders given candidates: ``rerank(queries, candidates, passages) -> Run``.

    ``candidates`` is a run (``{qid: {pid: score}}``, read in :func:`minirank.retrieval.ranked`
    order); ``passages`` maps every candidate id to its text. The returned run holds the same
    passages for the same queries. ``stats`` holds the counters of the last call (:func:`new_stats`).
    """

    name: str
    stats: dict

    def rerank(self, queries: Mapping[str, str], candidates: Run, passages: Mapping[str, str] | None = None) -> Run: ...


def new_stats(method: str) -> dict:
    """Zeroed counters of one ``rerank`` call.

    ``windows`` (listwise windows ordered), ``model_calls`` (forward passes, one per batch and decode
    step), ``tokens_processed`` (prompt tokens fed to the model, padding excluded),
    ``tokens_generated``, ``repairs`` (by kind) and ``repaired_windows`` (windows whose generated
    answer needed any repair), ``prompts_refused``, ``seconds`` (wall clock of the call) and
    ``generations``: every raw generated answer of the call, as ``{"qid", "start", "end", "text"}``.
    """
    return {"method": method, "queries": 0, "candidates": 0, "windows": 0, "model_calls": 0,
            "tokens_processed": 0, "tokens_generated": 0, "repairs": dict.fromkeys(REPAIR_KINDS, 0),
            "repaired_windows": 0, "seconds": 0.0, "generations": []}


def queries_and_passages(source, passages: Mapping[str, str] | None = None):
    """``(queries, passages)`` from a :class:`minirank.data.Collection` or from a ``{qid: text}`` mapping
    plus ``passages``; a TypeError/ValueError saying what was expected otherwise."""
    if hasattr(source, "queries") and hasattr(source, "passages"):
        return source.queries, (passages if passages is not None else source.passages)
    if isinstance(source, Mapping):
        if passages is None:
            raise ValueError("rerank() got a mapping of queries but no passages: pass passages={pid: text} "
                             "or a Collection")
        return source, passages
    raise TypeError(f"rerank() needs a Collection or a {{qid: query}} mapping, got {type(source).__name__}")


def check_depth(k) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
        raise ValueError(f"k must be a non-negative integer (the rerank depth) or None, got {k!r}")


def candidate_orders(queries: Mapping[str, str], candidates: Run, passages: Mapping[str, str]) -> dict[str, list[str]]:
    """Each query's candidates in :func:`~minirank.retrieval.ranked` order, after checking that every
    query and every candidate passage is known (KeyError naming the first unknown id otherwise)."""
    if not candidates:
        raise ValueError("no candidates to rerank: the candidate run is empty")
    orders: dict[str, list[str]] = {}
    for qid, scores in candidates.items():
        if qid not in queries:
            raise KeyError(f"candidates name query {qid!r}, which is not among the {len(queries)} queries")
        unknown = [pid for pid in scores if pid not in passages]
        if unknown:
            raise KeyError(f"query {qid!r}: candidate passage {unknown[0]!r} is not among the {len(passages)} "
                           f"passages ({len(unknown)} unknown candidate(s) for this query)")
        orders[qid] = ranked(scores)
    return orders


class PointwiseReranker:
    """Score every candidate on its own, then sort (a base class; query likelihood is one).

    Subclasses implement :meth:`score_pairs`: one float per ``(query, passage text)`` pair, higher is
    better. :meth:`rerank` scores the top ``k`` candidates of every query (default: all) in batches of
    ``batch_size`` pairs across queries; ties keep the first-stage order; candidates below ``k`` keep
    their first-stage order underneath. The returned run's scores are ``n, n-1, ..., 1`` (the order is
    what counts; the raw scores of the last call are in ``self.last_scores``).
    """

    name = "pointwise"

    def __init__(self, batch_size: int = 16):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.stats = new_stats(self.name)
        self.last_scores: dict[str, dict[str, float]] = {}

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One relevance score per ``(query text, passage text)`` pair (at most ``batch_size`` pairs)."""
        raise NotImplementedError

    def rerank(self, queries, candidates: Run, passages: Mapping[str, str] | None = None, *, k: int | None = None,
               progress: bool = False) -> Run:
        queries, texts = queries_and_passages(queries, passages)
        check_depth(k)
        orders = candidate_orders(queries, candidates, texts)
        self.stats = new_stats(self.name)
        self.stats["queries"] = len(orders)
        jobs = [(qid, pid) for qid, order in orders.items() for pid in (order if k is None else order[:k])]
        self.stats["candidates"] = len(jobs)
        scores: dict[str, dict[str, float]] = {qid: {} for qid in orders}
        start = time.perf_counter()
        with tqdm(total=len(jobs), desc=self.name, unit="passage", disable=not progress, leave=False) as bar:
            for at in range(0, len(jobs), self.batch_size):
                part = jobs[at:at + self.batch_size]
                values = self.score_pairs([(queries[qid], texts[pid]) for qid, pid in part])
                if len(values) != len(part):
                    raise RuntimeError(f"{type(self).__name__}.score_pairs returned {len(values)} scores "
                                       f"for {len(part)} pairs")
                for (qid, pid), value in zip(part, values):
                    scores[qid][pid] = float(value)
                bar.update(len(part))
        self.stats["seconds"] = time.perf_counter() - start
        self.last_scores = scores
        reordered = {}
        for qid, order in orders.items():
            head = order if k is None else order[:k]
            position = {pid: i for i, pid in enumerate(head)}
            head = sorted(head, key=lambda pid: (-scores[qid][pid], position[pid]))
            reordered[qid] = head + order[len(head):]
        return from_rankings(reordered)


class Cascade:
    """Retrieve with ``retriever``, keep the top ``depth``, rerank them with ``reranker``.

    PyTerrier writes this ``retriever % depth >> reranker``. A cascade is a retriever itself:
    ``search(queries, k)`` returns the reranked top ``depth`` (cut to ``k`` if ``k`` is smaller).
    ``passages`` are the texts the reranker reads (the collection's passages). :meth:`candidates`
    is the first stage alone, which :func:`minirank.evaluate.experiment` computes once for every
    cascade that shares a retriever and depth.
    """

    def __init__(self, retriever: Retriever, reranker: Reranker, depth: int, passages: Mapping[str, str]):
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth (how many first-stage candidates are reranked) must be a positive "
                             f"integer, got {depth!r}")
        if not hasattr(retriever, "search"):
            raise TypeError(f"retriever must have search(queries, k), got {type(retriever).__name__}")
        if not hasattr(reranker, "rerank"):
            raise TypeError(f"reranker must have rerank(queries, candidates, passages), got {type(reranker).__name__}")
        self.retriever, self.reranker, self.depth, self.passages = retriever, reranker, depth, passages

    @property
    def name(self) -> str:
        return getattr(self.reranker, "name", type(self.reranker).__name__)

    def candidates(self, queries: Mapping[str, str]) -> Run:
        return top_k(self.retriever.search(queries, self.depth), self.depth)

    def rerank_candidates(self, queries: Mapping[str, str], candidates: Run, progress: bool = False) -> Run:
        try:
            return self.reranker.rerank(queries, candidates, self.passages, progress=progress)
        except TypeError as err:  # a reranker without a progress option (the protocol does not require one)
            if "progress" not in str(err):
                raise
            return self.reranker.rerank(queries, candidates, self.passages)

    def search(self, queries: Mapping[str, str], k: int | None = None) -> Run:
        run = self.rerank_candidates(queries, self.candidates(queries))
        return run if k is None or k >= self.depth else top_k(run, k)

    def __repr__(self) -> str:
        return f"Cascade({type(self.retriever).__name__} top {self.depth} >> {self.name})"
