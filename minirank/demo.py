"""``minirank demo``: the book's main job on the embedded defaults, as one table.

First-stage retrieval (BM25, dense) on the course collection's test split, then every reranker the
chapters have built so far, each reranking the same BM25 candidates. Each row: nDCG@10, Recall@20,
wall-clock seconds, and the method's own counters (e.g. repaired generations).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from minirank import data, evaluate, retrieval

FIRST_STAGE = ("bm25", "dense")
#: Rerankers register here as the chapters build them: name -> function(collection, candidates, model) -> (run, extra)
RERANKERS: dict[str, Callable] = {}


def first_stage(collection: data.Collection, method: str, k: int = 100) -> retrieval.Run:
    if method == "bm25":
        return retrieval.BM25(collection.passages).search(collection.queries, k)
    if method == "dense":
        return retrieval.Dense(collection.passages).search(collection.queries, k)
    raise ValueError(f"unknown first-stage method {method!r}: expected one of {FIRST_STAGE}")


def available_methods() -> list[str]:
    _register_rerankers()
    return [*FIRST_STAGE, *RERANKERS]


def _register_rerankers() -> None:
    """Import the chapters' modules that add rows (kept lazy: the demo's first rows need no LLM)."""
    import importlib

    for module in ("minirank.listwise", "minirank.train"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def run_demo(split: str = "test", methods: Sequence[str] | None = None, model: str | None = None,
             depth: int = 20, json_path: str | Path | None = None, force: bool = False,
             collection: data.Collection | None = None, echo: Callable[[str], None] = print) -> dict:
    """Run each method on ``split`` and return ``{"split", "model", "rows"}``; print the table."""
    from minirank.models import DEFAULT_MODEL

    if json_path is not None and Path(json_path).exists() and not force:
        raise FileExistsError(f"{json_path} exists; minirank does not overwrite results: choose another "
                              f"path or pass --force")
    methods = list(methods) if methods else available_methods()
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: expected some of {available_methods()}")
    collection = collection or data.load_course(split)
    echo(f"minirank demo: {collection!r}")
    rows, candidates = [], None
    for method in methods:
        start = time.perf_counter()
        extra: dict = {}
        if method in FIRST_STAGE:
            run = first_stage(collection, method)
        else:
            if candidates is None:
                candidates = retrieval.top_k(first_stage(collection, "bm25"), depth)
                start = time.perf_counter()  # rerankers are timed without the first stage they share
            run, extra = RERANKERS[method](collection, candidates, model)
        seconds = time.perf_counter() - start
        seconds = extra.pop("seconds", seconds)  # a reranker may time itself without its one-time set-up
        per_query = evaluate.evaluate(run, collection.qrels, ("ndcg@10", "recall@20"))
        rows.append({"method": method, "ndcg@10": evaluate.mean(per_query, "ndcg@10"),
                     "recall@20": evaluate.mean(per_query, "recall@20"), "seconds": seconds, **extra})
        echo(f"  {method}: done in {seconds:.1f} s")
    result = {"split": split, "model": str(model or DEFAULT_MODEL), "rerank_depth": depth,
              "collection": collection.name, "queries": len(collection.qrels), "rows": rows}
    echo(evaluate.format_table(rows))
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        echo(f"wrote {json_path}")
    return result
