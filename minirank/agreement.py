"""Do first-token logits already know the whole ranking? FIRST's Figure 2 (FIRST §1, §3.2).

For each window, the model *generates* a ranking (§3.1) and, from the very same prompt, its logits
at the first answer position imply another one (§3.2). Figure 2 plots, for each rank position r,
the percentage of windows in which the passage generated at rank r is also the one with the r-th
largest logit. This module computes those numbers; the notebook draws them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from minirank.first import order_from_scores  # noqa: F401  (FIRST's order of a window; re-exported for the notebooks)
from minirank.retrieval import Run, ranked


def agreement_by_rank(first_orders: Sequence[Sequence[int]], generated_orders: Sequence[Sequence[int]],
                      m: int | None = None) -> dict[str, np.ndarray]:
    """Per rank position ``1..m``: the fraction of windows whose two rankings put the same passage there.

    Orders are permutations of a window (indices, best first); windows of different sizes count at
    the positions they have. Returns ``rank`` (1..m), ``agreement`` (0..1, nan where no window reaches
    that rank) and ``windows`` (how many windows count at each rank).
    """
    if len(first_orders) != len(generated_orders):
        raise ValueError(f"{len(first_orders)} FIRST rankings but {len(generated_orders)} generated ones")
    for a, b in zip(first_orders, generated_orders):
        if sorted(a) != sorted(b) or sorted(a) != list(range(len(a))):
            raise ValueError(f"rankings of one window must be permutations of the same passages: {list(a)} vs {list(b)}")
    if m is None:
        m = max((len(a) for a in first_orders), default=0)
    matches, counts = np.zeros(m), np.zeros(m, dtype=int)
    for a, b in zip(first_orders, generated_orders):
        for r in range(min(m, len(a))):
            counts[r] += 1
            matches[r] += a[r] == b[r]
    with np.errstate(invalid="ignore", divide="ignore"):
        agreement = np.where(counts > 0, matches / np.maximum(counts, 1), np.nan)
    return {"rank": np.arange(1, m + 1), "agreement": agreement, "windows": counts}


def compare_windows(first, generator, prompts: Sequence[str], sizes: Sequence[int]) -> dict[str, list]:
    """Rank the same windows both ways: ``first`` is a FirstReranker, ``generator`` a GenerationReranker.

    Returns ``first`` and ``generated`` orders, the raw ``scores`` and ``texts``, and per-window ``repairs``.
    """
    from minirank.listwise import parse_permutation

    scores = first.score_windows(prompts, list(sizes))
    texts = generator.generate_windows(prompts, list(sizes))
    generated, repairs = [], []
    for text, n in zip(texts, sizes):
        order, fixed = parse_permutation("[" + text, n, generator.style)
        generated.append(order)
        repairs.append(fixed)
    return {"first": [order_from_scores(s) for s in scores], "generated": generated, "scores": scores,
            "texts": texts, "repairs": repairs}


def first_windows(collection, candidates: Run, reranker, m: int | None = None,
                  max_queries: int | None = None) -> tuple[list[str], list[int]]:
    """One prompt per query over its top ``m`` candidates (default: the reranker's window), as the
    reranker would build it; returns ``(prompts, sizes)`` for :func:`compare_windows`."""
    m = reranker.window if m is None else m
    prompts, sizes = [], []
    for qid in sorted(candidates)[:max_queries]:
        top = ranked(candidates[qid], m)
        if len(top) < 2:
            continue
        prompts.append(reranker.prompt(collection.queries[qid], [collection.passages[p] for p in top]))
        sizes.append(len(top))
    return prompts, sizes


def plot_agreement(ax, result: dict[str, np.ndarray], label: str | None = None, **style):
    """Draw one curve of Figure 2 (% match against rank position) on a matplotlib ``ax``."""
    ax.plot(result["rank"], 100 * result["agreement"], marker="o", label=label, **style)
    ax.set_xlabel("Rank position")
    ax.set_ylabel("% match (generated vs first-token logits)")
    ax.set_ylim(0, 100)
    ax.set_xticks(result["rank"])
    if label is not None:
        ax.legend()
    return ax
