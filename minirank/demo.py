"""``minirank demo``: the book's main job on the embedded defaults, as one table.

First-stage retrieval (BM25, dense) on the course collection's test split, then the rerankers the
chapters have built so far, each reranking the same BM25 candidates, compared by
:func:`minirank.evaluate.experiment`. Each row: nDCG@10, Recall@20, wall-clock seconds (the search,
or the reranking of the shared candidates, without building indexes or loading models) and the
method's own counters (windows, repaired generations) and, against BM25, the mean paired difference in nDCG@10
with its 95% interval and exact sign-flip p-value.

The demo is the roof of the house: it imports the chapters, they never import it. Adding a reranker
to it is a class in its chapter, one line in :data:`METHODS`, and a test.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from minirank import data, evaluate, retrieval
from minirank.records import refuse_existing, write_json
from minirank.rerank import Cascade


class Context:
    """What the rows share, built on first use: the collection's indexes and the LLM."""

    def __init__(self, collection: data.Collection | None, model: str | None = None, depth: int = 20):
        self.collection, self.model_name, self.depth = collection, model, depth

    @functools.cached_property
    def bm25(self) -> retrieval.BM25:
        return retrieval.BM25(self.collection.passages)

    @functools.cached_property
    def dense(self) -> retrieval.Dense:
        return retrieval.Dense(self.collection.passages)

    @functools.cached_property
    def llm(self):
        """``(model, tokenizer)``, loaded once and shared by the LLM rows."""
        from minirank.models import load

        return load(self.model_name)

    def rerank_bm25(self, reranker) -> Cascade:
        """BM25's top ``depth``, reranked: the rerankers' rows all start from the same candidates."""
        return Cascade(self.bm25, reranker, self.depth, self.collection.passages)


def _generation(ctx: Context):
    from minirank.listwise import GenerationReranker

    return GenerationReranker(*ctx.llm)


def _first(ctx: Context):
    from minirank.first import FirstReranker

    return FirstReranker(*ctx.llm)


def _first_lora(ctx: Context):
    """FIRST with the adapter shipped in data/adapters (chapter 5), on the window and passage cut it was
    trained with (stride half the window), on a fresh copy of its base model (peft changes what it wraps)."""
    from minirank.first import FirstReranker
    from minirank.adapters import SHIPPED_ADAPTER, load_with_adapter

    model, tokenizer, meta = load_with_adapter(SHIPPED_ADAPTER)
    cfg = meta["config"]
    reranker = FirstReranker(model, tokenizer, window=cfg["window"], max_passage_tokens=cfg["max_passage_tokens"])
    reranker.name = "first-lora"
    return reranker


def _perank(ctx: Context):
    """PE-Rank with the projector and adapter shipped in data/adapters (chapter 7), on a fresh copy of its
    base model, ranking windows of the size it was trained on (``minirank train pe-rank`` made it)."""
    from minirank import perank

    return perank.load_perank(perank.SHIPPED_PERANK)


def _query_likelihood(ctx: Context):
    from minirank.pointwise import QueryLikelihoodReranker

    return QueryLikelihoodReranker(*ctx.llm)


def _ql_two_stage(ctx: Context):
    """Query likelihood with the two-stage adapters shipped in data/adapters (chapter 8: continual pre-training, then
    fine-tuning; ``minirank train query-likelihood`` made them), on a fresh copy of their base model, reading the
    passage cut they were trained with."""
    from minirank import tsarank
    from minirank.pointwise import QueryLikelihoodReranker

    model, tokenizer, meta = tsarank.load_tsarank(tsarank.SHIPPED_TSARANK)
    reranker = QueryLikelihoodReranker(model, tokenizer, max_passage_tokens=meta["passage_tokens"])
    reranker.name = "ql-two-stage"
    return reranker


def _feedback(ctx: Context):
    """Dense retrieval moved by both teachers of FIRST §4.4 (query likelihood's scores, then FIRST's
    order) on the dense top ``depth``, then dense retrieval again (chapter 9)."""
    from minirank.feedback import RelevanceFeedback
    from minirank.first import FirstReranker
    from minirank.pointwise import QueryLikelihoodReranker

    depth = min(ctx.depth, FEEDBACK_DEPTH)
    return RelevanceFeedback(ctx.dense, ctx.collection.passages, pointwise=QueryLikelihoodReranker(*ctx.llm),
                             listwise=FirstReranker(*ctx.llm), pointwise_depth=depth, listwise_depth=depth)


#: The feedback row's teachers judge the dense top 10 (notebook 09's setting): at 20 the row alone took
#: about 2.5 minutes on a 2-core CPU and the demo ran past its 8-minute budget.
FEEDBACK_DEPTH = 10


#: First-stage retrievers: name -> factory(context) -> a retriever over the collection.
RETRIEVERS: dict[str, Callable[[Context], object]] = {
    "bm25": lambda ctx: ctx.bm25,             # chapter 1
    "dense": lambda ctx: ctx.dense,           # chapter 1
}

#: Retrievers that learn from an LLM reranker (listed after the rerankers they use).
FEEDBACK: dict[str, Callable[[Context], object]] = {
    "feedback": _feedback,                    # chapter 9
}

#: Rerankers: name -> factory(context) -> a reranker (``minirank rerank --method`` uses the same table).
RERANKERS: dict[str, Callable[[Context], object]] = {
    "listwise-gen": _generation,              # chapter 2
    "first": _first,                          # chapter 3
    "first-lora": _first_lora,                # chapter 5
    "pe-rank": _perank,                       # chapter 7
    "query-likelihood": _query_likelihood,    # chapter 8, zero-shot
    "ql-two-stage": _ql_two_stage,            # chapter 8, the shipped two-stage adapters
}

#: Every row of the demo, in order: retrievers as they are, rerankers on BM25's top ``depth``.
METHODS: dict[str, Callable[[Context], object]] = {
    **RETRIEVERS,
    **{name: (lambda ctx, make=make: ctx.rerank_bm25(make(ctx))) for name, make in RERANKERS.items()},
    **FEEDBACK,
}


#: Rows that ``minirank demo`` leaves out unless asked (``--methods``), to keep the default run under its budget of
#: 8 minutes on a 2-core CPU. ``listwise-gen`` (chapter 2's generated permutation) is the slowest row there and the
#: most variable (2 to 3.5 minutes, its decode steps are memory-bound), and on the default model every one of its
#: answers needs repair, so it returns BM25's order: chapter 3's ``first`` row, one forward pass a window, is the
#: listwise row of the default run. Zero-shot ``query-likelihood`` (about a minute) is chapter 8's baseline;
#: ``ql-two-stage``, the same scorer with the shipped adapters, is the chapter's row (lesson 8.7 compares the two).
OPTIONAL = ("listwise-gen", "query-likelihood")


#: Rows made from shipped trained artefacts, and the lesson section that shows their training curves.
TRAINED = {"first-lora": "lesson 5.7", "pe-rank": "lesson 7.11", "ql-two-stage": "lesson 8.7"}


def trained_row_notes(rows: Sequence[dict], baseline: str = "bm25") -> list[str]:
    """One line per trained row (:data:`TRAINED`) that is not shown to beat ``baseline`` (paired p >= 0.05, or a
    difference that is not positive): the table must not read as if the training had worked."""
    notes = []
    for row in rows:
        lesson, diff = TRAINED.get(row["method"]), row.get(f"vs {baseline}")
        if lesson is None or diff in (None, ""):
            continue
        if float(diff) <= 0 or row.get("p", 1.0) >= 0.05:
            verdict = "is below" if float(diff) < 0 and row.get("p", 1.0) < 0.05 else "is not shown to beat"
            notes.append(f"{row['method']}: a shipped trained model that {verdict} {baseline} on this split; "
                         f"{lesson} shows its training curve and what limits it at this scale.")
    return notes


def available_methods() -> list[str]:
    return list(METHODS)


def default_methods() -> list[str]:
    """The rows of a plain ``minirank demo``: every method but :data:`OPTIONAL`, in :data:`METHODS` order."""
    return [m for m in METHODS if m not in OPTIONAL]


def run_demo(split: str = "test", methods: Sequence[str] | None = None, model: str | None = None,
             depth: int = 20, json_path: str | Path | None = None, force: bool = False,
             collection: data.Collection | None = None, echo: Callable[[str], None] = print,
             progress: bool = True) -> dict:
    """Run each method on ``split`` and return ``{"split", "model", "rows", ...}``; print the table.

    Errors come before any work: an unknown method, a depth below 1, a ``json_path`` that exists
    (unless ``force``), a model that cannot be found.
    """
    from minirank.models import DEFAULT_MODEL

    if json_path is not None:
        refuse_existing(json_path, "--json file", force=force)
    methods = list(methods) if methods else default_methods()
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: expected some of {available_methods()}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"--depth must be a positive integer (how many BM25 candidates are reranked), got {depth!r}")
    if any(m not in RETRIEVERS for m in methods):  # every other row runs the LLM
        from minirank.models import check_available

        check_available(model)  # a missing model fails now, not after the first rows have run
    collection = collection or data.load_course(split)
    echo(f"minirank demo: {collection!r}")
    ctx = Context(collection, model, depth)
    systems = {name: METHODS[name](ctx) for name in methods}
    baseline = "bm25" if "bm25" in systems and len(systems) > 1 else None
    result = evaluate.experiment(systems, collection, ("ndcg@10", "recall@20"), baseline=baseline,
                                 progress=progress, echo=echo)
    rows = result.rows
    out = {"split": split, "model": str(model or DEFAULT_MODEL), "rerank_depth": depth,
           "collection": collection.name, "queries": len(collection.qrels), "rows": rows}
    echo(evaluate.format_table(rows))
    if baseline:
        echo(f"vs bm25: the mean paired difference in nDCG@10 over the {len(collection.qrels)} queries, its 95% "
             f"interval and the exact sign-flip p-value; an interval that spans 0 shows no difference, not equality.")
    if baseline:
        for line in trained_row_notes(rows, baseline):
            echo(line)
    if json_path is not None:
        write_json(json_path, out, force=force)
        echo(f"wrote {json_path}")
    return out
