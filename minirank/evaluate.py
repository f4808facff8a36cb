"""Evaluation with pytrec_eval (trec_eval's own code), guarded against its traps.

The traps (the lesson of chapter 1 tells them):

* pytrec_eval silently drops a query that is missing from the run, which inflates the mean. Here a
  judged query with no ranking scores 0 on every metric, with a warning (trec_eval's ``-c``).
* pytrec_eval breaks score ties by descending document id. Here the run is first put in the order of
  :func:`minirank.retrieval.ranked` (ties by ascending id), and pytrec_eval is given strictly
  decreasing scores, so both agree on the order.
* Binary metrics (Recall, MRR, P) need a relevance level, the lowest grade counted as relevant, and it
  belongs to the collection: 2 on TREC DL's 0-3 scale, where 1 means "related, but does not answer"
  (the default, ``RELEVANCE_LEVEL``), 1 for BEIR (pass ``collection.relevance_level``). nDCG uses the
  graded gains. A query with nothing judged at or above the level gets a warning.
* pytrec_eval wants ``str`` ids and ``int`` grades; pandas and numpy give ``np.int64`` or ``2.0``.
  Here qrels and runs go through :func:`minirank.data.normalise_qrels` and
  :func:`minirank.data.normalise_run` first.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from minirank.data import (DEFAULT_RELEVANCE_LEVEL, check_relevance_level, normalise_grades, normalise_id,
                           normalise_qrels, normalise_run)
from minirank.retrieval import Run, ranked

RELEVANCE_LEVEL = DEFAULT_RELEVANCE_LEVEL
DEFAULT_METRICS = ("ndcg@10", "recall@20", "mrr@10")
BINARY = ("recall", "mrr", "p")  # the metrics that count a passage as relevant or not


def _trec_measure(metric: str) -> tuple[str, int]:
    name, _, cut = metric.partition("@")
    if name not in {"ndcg", *BINARY} or not cut.isdigit():
        raise ValueError(f"unknown metric {metric!r}: expected ndcg@k, recall@k, mrr@k or p@k")
    return name, int(cut)


def _sample(qids: Sequence[str]) -> str:
    return f"{sorted(qids)[:5]}" + (" ..." if len(qids) > 5 else "")


def _judged(qrels: Mapping, metrics: Sequence[str], relevance_level: int) -> tuple[dict[str, dict[str, int]], set[str]]:
    """Normalised qrels without the queries that have no judgements at all (returned apart), with a
    warning for those and for queries where some requested metric is 0 by construction."""
    judged = normalise_qrels(qrels)
    empty = [q for q, j in judged.items() if not j]
    if empty:
        warnings.warn(f"{len(empty)} queries have an empty set of judgements and are left out, as trec_eval "
                      f"leaves out queries with no relevance information: {_sample(empty)}", stacklevel=3)
    judged = {q: j for q, j in judged.items() if j}
    groups: dict[tuple[str, ...], list[str]] = {}
    for qid, grades in judged.items():
        top = max(grades.values())
        zero = tuple(m for m in metrics if (_trec_measure(m)[0] in BINARY and top < relevance_level)
                     or (_trec_measure(m)[0] == "ndcg" and top <= 0))
        if zero:
            groups.setdefault(zero, []).append(qid)
    for zero, qids in groups.items():
        warnings.warn(f"{len(qids)} judged queries have no judgement at or above relevance level "
                      f"{relevance_level} (their highest grade is below it), so {', '.join(zero)} are 0 for them "
                      f"by construction; if this collection counts lower grades as relevant (BEIR judges "
                      f"relevant passages 1), pass relevance_level=collection.relevance_level: {_sample(qids)}",
                      stacklevel=3)
    return judged, set(empty)


def _scores(run: Run, judged: Mapping[str, Mapping[str, int]], metrics: Sequence[str], relevance_level: int,
            left_out: set[str] = frozenset(), system: str = "") -> dict[str, dict[str, float]]:
    """Per-query scores of a normalised run against normalised, non-empty judgements (``left_out``: the
    queries with empty ones, already warned about)."""
    import pytrec_eval

    who = f"run {system!r}: " if system else ""
    missing = [q for q in judged if not run.get(q)]
    if missing:
        warnings.warn(f"{who}{len(missing)} judged queries have no ranking in the run and score 0 "
                      f"(pytrec_eval would silently drop them): {_sample(missing)}", stacklevel=3)
    extra = [q for q in run if q not in judged and q not in left_out]
    if extra:
        warnings.warn(f"{who}{len(extra)} queries in the run have no judgements and are ignored: {_sample(extra)}",
                      stacklevel=3)
    ordered = {q: ranked(run[q]) for q in judged if run.get(q)}
    per_query = {q: {m: 0.0 for m in metrics} for q in judged}
    needs: dict[tuple[str, int], set[str]] = {}
    for m in metrics:
        needs.setdefault(_trec_measure(m), set()).add(m)
    for (name, cut), names in needs.items():
        depth = cut if name == "mrr" else None  # trec_eval's recip_rank has no cut-off: truncate the run
        strict = {q: {pid: float(len(order) - i) for i, pid in enumerate(order[:depth])}
                  for q, order in ordered.items()}
        key = {"ndcg": f"ndcg_cut_{cut}", "recall": f"recall_{cut}", "mrr": "recip_rank", "p": f"P_{cut}"}[name]
        scores = pytrec_eval.RelevanceEvaluator(judged, {key}, relevance_level=relevance_level).evaluate(strict)
        for q, values in scores.items():
            for m in names:
                per_query[q][m] = float(values[key])
    return per_query


def evaluate(run: Run, qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[str] = DEFAULT_METRICS,
             relevance_level: int = RELEVANCE_LEVEL) -> dict[str, dict[str, float]]:
    """Per-query scores ``{qid: {metric: value}}`` (each in [0, 1]) of ``run`` against ``qrels``.

    ``metrics``: ``ndcg@k`` (linear gains, as trec_eval), ``recall@k``, ``mrr@k`` (reciprocal rank of
    the first relevant passage in the top k), ``p@k``. ``relevance_level``: the lowest grade the binary
    ones count as relevant; pass ``collection.relevance_level`` (2 on TREC DL's scale, 1 for BEIR).

    Which order is evaluated: the one :func:`minirank.retrieval.ranked` gives (decreasing score, ties
    by ascending passage id), which is the order minirank shows, writes to run files and hands a
    reranker. pytrec_eval gets scores n, n-1, ..., 1 in that order, so its own tie rule (descending
    id) never applies.

    Which queries: every query of ``qrels`` with at least one judgement, as trec_eval with ``-c``:

    * judged but missing from the run (or with an empty ranking): 0 on every metric, with a warning;
    * judged, but nothing at or above ``relevance_level``: kept, as trec_eval keeps it; its binary
      metrics are 0 by construction (and nDCG too if every grade is 0), with a warning;
    * an empty set of judgements (``{"q1": {}}``): left out, with a warning, as trec_eval leaves out a
      query with no relevance information (a qrels file cannot even write one);
    * in the run but not in ``qrels``: ignored, with a warning.

    Ids may be strings or integers and grades whole numbers of any type (see
    :func:`minirank.data.normalise_qrels` and :func:`minirank.data.normalise_run`); anything else is a
    :class:`minirank.data.DataError` naming the query, the passage and the value. An unknown metric or
    a ``relevance_level`` below 1 is a ValueError.
    """
    for m in metrics:
        _trec_measure(m)
    relevance_level = check_relevance_level(relevance_level)
    judged, left_out = _judged(qrels, metrics, relevance_level)
    return _scores(normalise_run(run), judged, metrics, relevance_level, left_out)


def mean(per_query: Mapping[str, Mapping[str, float]], metric: str) -> float:
    """The mean of one metric over all judged queries."""
    values = [scores[metric] for scores in per_query.values()]
    return float(np.mean(values)) if values else float("nan")


def dcg(gains: Sequence[float], k: int) -> float:
    """Discounted cumulative gain with trec_eval's linear gains: sum of g_i / log2(i + 1), i from 1."""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))


def ndcg_at_k(ranking: Sequence[str], judged: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k by hand (Järvelin & Kekäläinen 2002), as trec_eval computes it; the lesson derives it.

    ``ranking``: passage ids, best first; ``judged``: one query's ``{pid: grade}``. Ids and grades are
    normalised as in :func:`evaluate`. A query with no positive grade scores 0.
    """
    judged = normalise_grades(judged)
    ranking = [normalise_id(pid, "passage id in the ranking") for pid in ranking]
    ideal = dcg(sorted((g for g in judged.values() if g > 0), reverse=True), k)
    if ideal == 0:
        return 0.0
    return dcg([max(judged.get(pid, 0), 0) for pid in ranking], k) / ideal


def paired_test(a: Mapping[str, float], b: Mapping[str, float], trials: int = 10_000,
                seed: int = 0) -> dict[str, float]:
    """Is system ``a`` different from ``b`` on the same queries? Paired t-test and a paired randomisation
    (sign-flip) test, two-sided. Returns the mean difference and both p-values."""
    from scipy import stats

    common = sorted(set(a) & set(b))
    if len(common) < 2:
        raise ValueError(f"a paired test needs at least 2 queries scored by both systems, got {len(common)}")
    diff = np.array([a[q] - b[q] for q in common])
    if np.allclose(diff, 0):
        return {"mean_diff": 0.0, "p_ttest": 1.0, "p_randomization": 1.0, "queries": len(common)}
    p_t = float(stats.ttest_rel([a[q] for q in common], [b[q] for q in common]).pvalue)
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(trials, len(diff)))
    observed = abs(diff.mean())
    p_r = float((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).mean())
    return {"mean_diff": float(diff.mean()), "p_ttest": p_t, "p_randomization": p_r, "queries": len(common)}


def compare(runs: Mapping[str, Run], qrels: Mapping[str, Mapping[str, int]],
            metrics: Sequence[str] = DEFAULT_METRICS, baseline: str | None = None,
            relevance_level: int = RELEVANCE_LEVEL) -> list[dict]:
    """One row per system with mean metrics; with a ``baseline``, the p-value of each system's
    first metric against it (paired randomisation test). Queries, order and ``relevance_level`` (pass
    ``collection.relevance_level``) as in :func:`evaluate`; warnings about the qrels come once."""
    for m in metrics:
        _trec_measure(m)
    relevance_level = check_relevance_level(relevance_level)
    judged, left_out = _judged(qrels, metrics, relevance_level)
    scored = {name: _scores(normalise_run(run), judged, metrics, relevance_level, left_out, system=name)
              for name, run in runs.items()}
    rows = []
    for name, per_query in scored.items():
        row = {"method": name, **{m: mean(per_query, m) for m in metrics}}
        if baseline and name != baseline:
            first = metrics[0]
            test = paired_test({q: s[first] for q, s in per_query.items()},
                               {q: s[first] for q, s in scored[baseline].items()})
            row[f"p vs {baseline}"] = test["p_randomization"]
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, object]], markdown: bool = False) -> str:
    """A plain-text table (numbers to 3 decimals) for terminals and notebook outputs; with ``markdown=True``
    the same cells as a pipe table, which is how the lessons quote a stored benchmark."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(c for row in rows for c in row))
    cells = [[_fmt(row.get(c, ""), p_value=(c == "p" or c.startswith("p "))) for c in columns] for row in rows]
    if markdown:
        pipe = lambda values: "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"
        return "\n".join([pipe(columns), "|" + "---|" * len(columns), *map(pipe, cells)])
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return "\n".join([line(columns), line(["-" * w for w in widths]), *map(line, cells)])


def _fmt(value: object, p_value: bool = False) -> str:
    if p_value and isinstance(value, float):
        return "<0.001" if value < 0.001 else f"{value:.3f}"
    if isinstance(value, float):
        return f"{value:.3f}" if not math.isnan(value) else "nan"
    return str(value)


# ---------------------------------------------------------------- comparing systems (PyTerrier's Experiment)

def paired_difference(a: Mapping[str, float], b: Mapping[str, float], confidence: float = 0.95,
                      exact_up_to: int = 20, resamples: int = 100_000, seed: int = 0) -> dict[str, float]:
    """How much better is ``a`` than ``b`` on the same queries, and could it be chance?

    Returns ``mean_diff`` (a - b, mean over the queries both score), its ``confidence`` interval from
    the paired t distribution (``ci_low``, ``ci_high``), and the two-sided p-value of the paired
    permutation (sign-flip) test: **exact** over all ``2^n`` sign patterns for up to ``exact_up_to``
    queries (:func:`exact_sign_flip_p`, enumerated with numpy; the tests hold it equal to
    :func:`scipy.stats.permutation_test`'s exact mode, which takes minutes at n = 20), else Monte Carlo
    with ``resamples`` patterns from :func:`scipy.stats.permutation_test` (``exact`` says which). A
    p-value above 0.05 says the data cannot tell the systems apart; the interval says how large a
    difference they still allow. :func:`paired_test` is the same test by hand (chapter 1's lesson).
    """
    from scipy import stats

    common = sorted(set(a) & set(b))
    n = len(common)
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 queries scored by both systems, got {n}")
    x = np.array([a[q] for q in common], dtype=float)
    y = np.array([b[q] for q in common], dtype=float)
    diff = x - y
    out = {"mean_diff": float(diff.mean()), "queries": n, "exact": n <= exact_up_to}
    if np.allclose(diff, 0):
        return {**out, "ci_low": 0.0, "ci_high": 0.0, "p": 1.0}
    ci = stats.ttest_rel(x, y).confidence_interval(confidence)
    if n <= exact_up_to:
        p = exact_sign_flip_p(diff)
    else:
        p = float(stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                         permutation_type="samples", alternative="two-sided",
                                         n_resamples=resamples, rng=np.random.default_rng(seed)).pvalue)
    return {**out, "ci_low": float(ci.low), "ci_high": float(ci.high), "p": p}


def exact_sign_flip_p(diff: Sequence[float], block: int = 1 << 15) -> float:
    """Two-sided p-value of the paired sign-flip test over all ``2^n`` patterns (n <= 24).

    Under the null hypothesis each per-query difference is as likely to have either sign, so the
    p-value is the share of the ``2^n`` sign patterns whose mean difference is at least as far from 0
    as the observed one (ties within a relative 1e-9 count as "as far", as in scipy).
    """
    d = np.asarray(diff, dtype=float)
    n = d.size
    if n > 24:
        raise ValueError(f"exact enumeration of 2^{n} sign patterns is too large; use the Monte Carlo test")
    observed = abs(d.sum())
    bits = np.arange(n)
    hits = 0
    for start in range(0, 1 << n, block):
        codes = np.arange(start, min(1 << n, start + block))[:, None]
        signs = 1.0 - 2.0 * ((codes >> bits) & 1)
        hits += int((np.abs(signs @ d) >= observed * (1 - 1e-9) - 1e-12).sum())
    return hits / float(1 << n)


@dataclass
class Experiment:
    """What :func:`experiment` measured: one row per system (``rows``, what :func:`format_table`
    prints), each system's run and per-query scores, and each reranker's counters."""

    rows: list[dict]
    runs: dict[str, Run]
    per_query: dict[str, dict[str, dict[str, float]]]
    stats: dict[str, dict]

    def __str__(self) -> str:
        return format_table(self.rows)


#: Reranker counters shown as table columns (all counters are in ``Experiment.stats``).
SHOWN_COUNTERS = {"windows": "windows", "repaired_windows": "repairs"}


def experiment(systems: Mapping[str, object], collection, metrics: Sequence[str] = ("ndcg@10", "recall@20"),
               baseline: str | None = None, k: int = 100, relevance_level: int | None = None,
               progress: bool = False, echo=None) -> Experiment:
    """Run every system on ``collection``'s queries and compare them in one table (PyTerrier's ``Experiment``).

    ``systems``: ``{name: system}``, each a retriever (``search(queries, k)``) or a
    :class:`minirank.rerank.Cascade`. Cascades that share a retriever object and depth share one
    first-stage run, and are timed on their reranking alone; retrievers are timed on their search
    (their index was built when they were made). Each row: the mean of every metric over the judged
    queries, ``seconds``, the reranker's counters (:data:`SHOWN_COUNTERS`) and, against ``baseline``,
    the paired difference in the first metric with its 95% interval and permutation p-value
    (:func:`paired_difference`). Binary metrics count grades >= ``relevance_level`` as relevant
    (default: the collection's own level, else 2). ``echo`` receives one progress line per system.
    """
    import time

    from minirank.retrieval import top_k

    if baseline is not None and baseline not in systems:
        raise ValueError(f"baseline {baseline!r} is not one of the systems {list(systems)}")
    if not systems:
        raise ValueError("experiment() needs at least one system")
    level = relevance_level if relevance_level is not None else getattr(collection, "relevance_level", RELEVANCE_LEVEL)
    queries = collection.queries
    shared: dict[tuple[int, int], Run] = {}
    runs, per_query, counters, seconds = {}, {}, {}, {}
    for name, system in systems.items():
        if hasattr(system, "rerank_candidates") and hasattr(system, "candidates"):
            key = (id(system.retriever), system.depth)
            if key not in shared:
                shared[key] = system.candidates(queries)
            start = time.perf_counter()
            run = system.rerank_candidates(queries, shared[key], progress=progress)
            seconds[name] = time.perf_counter() - start
            counters[name] = dict(getattr(system.reranker, "stats", {}) or {})
            seconds[name] = counters[name].get("seconds") or seconds[name]
        elif hasattr(system, "search"):
            start = time.perf_counter()
            run = top_k(system.search(queries, k), k)
            seconds[name] = time.perf_counter() - start
            counters[name] = {}
        else:
            raise TypeError(f"system {name!r} ({type(system).__name__}) has neither search(queries, k) nor "
                            f"is a Cascade; see minirank.rerank")
        runs[name] = run
        per_query[name] = evaluate(run, collection.qrels, metrics, relevance_level=level)
        if echo is not None:
            echo(f"  {name}: done in {seconds[name]:.1f} s")
    first = metrics[0]
    rows = []
    for name in systems:
        row = {"method": name, **{m: mean(per_query[name], m) for m in metrics}, "seconds": seconds[name]}
        for key, column in SHOWN_COUNTERS.items():
            if counters[name].get(key):
                row[column] = counters[name][key]
        if baseline is not None and name != baseline:
            test = paired_difference({q: s[first] for q, s in per_query[name].items()},
                                     {q: s[first] for q, s in per_query[baseline].items()})
            row[f"vs {baseline}"] = f"{test['mean_diff']:+.3f}"
            row["95% CI"] = f"[{test['ci_low']:+.3f}, {test['ci_high']:+.3f}]"
            row["p"] = test["p"]
        rows.append(row)
    return Experiment(rows=rows, runs=runs, per_query=per_query, stats=counters)
