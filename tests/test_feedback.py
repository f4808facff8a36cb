"""Chapter 9: relevance feedback on the dense retriever's query vector (FIRST §4.4)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from minirank import feedback as F
from minirank.rerank import PointwiseReranker, Retriever
from minirank.retrieval import Dense, ranked


class Length(PointwiseReranker):
    """Longer passages first: a deterministic teacher."""

    name = "length"

    def score_pairs(self, pairs):
        return [float(len(text)) for _, text in pairs]


class Shortest(PointwiseReranker):
    """Shorter passages first: a teacher that disagrees with Length (used for its order only)."""

    name = "shortest"

    def score_pairs(self, pairs):
        return [-float(len(text)) for _, text in pairs]


@pytest.fixture(scope="module")
def synthetic():
    g = np.random.default_rng(0)
    passages = g.normal(size=(20, 16)).astype(np.float32)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    query = passages[:5].mean(0)
    return query / np.linalg.norm(query), passages, g.normal(size=20).astype(np.float32), list(g.permutation(20))


def test_both_losses_decrease_over_their_steps(synthetic):
    query, passages, teacher, order = synthetic
    moved, history = F.fit_kl(query, passages, teacher)
    assert len(history) == F.KL_STEPS and history[-1] < 0.5 * history[0]
    assert np.all(np.diff(history[:10]) < 0)
    moved_rn, history_rn = F.fit_ranknet(query, passages, order)
    assert len(history_rn) == F.RANKNET_STEPS and history_rn[-1] < history_rn[0]
    assert np.all(np.diff(history_rn) < 0)
    # the fitted vector agrees better with the teacher than the one it started from
    assert np.corrcoef(passages @ moved, teacher)[0, 1] > np.corrcoef(passages @ query, teacher)[0, 1]


def test_the_losses_are_the_papers(synthetic):
    """KL(teacher || student) on one query, and weighted RankNet (1/(r_i + r_j), mean over pairs)."""
    query, passages, teacher, order = synthetic
    _, history = F.fit_kl(query, passages, teacher, steps=1)
    c = F.score_scale(torch.tensor(teacher), torch.tensor(passages @ query))
    student = torch.tensor(c / 2 * passages @ query)
    kl = torch.nn.KLDivLoss(reduction="batchmean", log_target=True)(
        torch.log_softmax(student, -1)[None], torch.log_softmax(torch.tensor(teacher), -1)[None])
    assert history[0] == pytest.approx(float(kl), rel=1e-5)
    _, history = F.fit_ranknet(query, passages, order, steps=1)
    ranks = {i: r + 1 for r, i in enumerate(order)}
    c = F.score_scale(torch.arange(20, 0, -1).float(), torch.tensor(passages @ query))
    s = c / 2 * passages @ query
    pairs = [(i, j) for i in range(20) for j in range(20) if ranks[i] < ranks[j]]
    by_hand = np.mean([np.log1p(np.exp(s[j] - s[i])) / (ranks[i] + ranks[j]) for i, j in pairs])
    assert history[0] == pytest.approx(by_hand, rel=1e-4)


def test_zero_steps_returns_the_original_run(tiny_collection):
    dense = Dense(tiny_collection.passages)
    queries = tiny_collection.queries
    original = dense.search(queries, k=4)
    for kwargs in ({}, {"pointwise": Length(), "kl_steps": 0}, {"listwise": Length(), "ranknet_steps": 0},
                   {"pointwise": Length(), "listwise": Length(), "kl_steps": 0, "ranknet_steps": 0}):
        feedback = F.RelevanceFeedback(dense, tiny_collection.passages, pointwise_depth=3, listwise_depth=3, **kwargs)
        assert isinstance(feedback, Retriever)
        assert feedback.search(queries, k=4) == original, kwargs


def test_feedback_moves_the_query_towards_its_teacher(tiny_collection):
    dense = Dense(tiny_collection.passages)
    queries = tiny_collection.queries
    both = F.RelevanceFeedback(dense, tiny_collection.passages, pointwise=Length(), listwise=Shortest(),
                               pointwise_depth=4, listwise_depth=4, kl_steps=30, kl_lr=0.05)
    run = both.search(queries, k=len(tiny_collection.passages))
    assert set(run) == set(queries) and all(len(r) == len(tiny_collection.passages) for r in run.values())
    for qid in queries:
        assert both.history[qid]["kl"][-1] < both.history[qid]["kl"][0]
        assert both.history[qid]["ranknet"][-1] <= both.history[qid]["ranknet"][0]
    assert both.stats["pointwise"]["candidates"] == 4 * len(queries)
    # with a strong KL fit alone, the longest of the first four candidates rises to the top
    kl = F.RelevanceFeedback(dense, tiny_collection.passages, pointwise=Length(), pointwise_depth=4,
                             kl_steps=100, kl_lr=0.05)
    moved = kl.search(queries, k=4)
    first = dense.search(queries, k=4)
    for qid in queries:
        longest = max(first[qid], key=lambda p: len(tiny_collection.passages[p]))
        assert ranked(moved[qid]).index(longest) <= ranked(first[qid]).index(longest)


def test_bad_input(tiny_collection, synthetic):
    query, passages, teacher, order = synthetic
    with pytest.raises(ValueError, match="permutation"):
        F.fit_ranknet(query, passages, [0, 0, 1])
    with pytest.raises(ValueError, match="teacher values"):
        F.fit_kl(query, passages, teacher[:3])
    with pytest.raises(ValueError, match="steps"):
        F.fit_kl(query, passages, teacher, steps=-1)
    with pytest.raises(TypeError, match="Dense"):
        F.RelevanceFeedback(object(), tiny_collection.passages)
    dense = Dense(tiny_collection.passages)
    with pytest.raises(TypeError, match="PointwiseReranker"):
        F.RelevanceFeedback(dense, tiny_collection.passages, pointwise=object())
    with pytest.raises(ValueError, match="listwise_depth"):
        F.RelevanceFeedback(dense, tiny_collection.passages, listwise_depth=0)
    with pytest.raises(ValueError, match="query vectors"):
        dense.search_vectors(["q1"], np.zeros((2, 384)), 3)


def test_remembered_reranks_once(tiny_collection):
    class Counting(Length):
        calls = 0

        def score_pairs(self, pairs):
            Counting.calls += 1
            return super().score_pairs(pairs)

    teacher = F.Remembered(Counting())
    candidates = {"q1": {"d1": 2.0, "d2": 1.0}}
    first = teacher.rerank(tiny_collection.queries, candidates, tiny_collection.passages)
    again = teacher.rerank(tiny_collection.queries, candidates, tiny_collection.passages)
    assert first == again and Counting.calls == 1 and teacher.last_scores["q1"]["d1"] == len(tiny_collection.passages["d1"])
    teacher.rerank(tiny_collection.queries, {"q1": {"d3": 1.0}}, tiny_collection.passages)
    assert Counting.calls == 2 and set(teacher.last_scores["q1"]) == {"d3"}


def test_demo_rows_query_likelihood_and_feedback(tiny_collection, monkeypatch, tok):
    from minirank import demo
    from minirank.models import tiny_model

    monkeypatch.setattr(demo.Context, "llm", property(lambda self: (tiny_model(len(tok)), tok)))
    monkeypatch.setattr("minirank.models.check_available", lambda name=None: "tiny")
    assert "query-likelihood" in demo.RERANKERS and "feedback" in demo.FEEDBACK and list(demo.METHODS)[-1] == "feedback"
    result = demo.run_demo(methods=["dense", "query-likelihood", "feedback"], collection=tiny_collection, depth=3,
                           echo=lambda s: None, progress=False)
    rows = {row["method"]: row for row in result["rows"]}
    assert set(rows) == {"dense", "query-likelihood", "feedback"}
    assert all(0.0 <= row["recall@20"] <= 1.0 for row in rows.values())


def numbers_of(line: str) -> list[str]:
    import re

    return re.findall(r"[-+]?\d+\.\d+|\b\d+/\d+/\d+\b", line)


def quoted_rows_agree(notebook: str, lesson: str, methods: list[str]) -> list[str]:
    """The lesson's table rows for ``methods`` hold the numbers the notebook's stored outputs print for them
    (the notebooks are kept true by strict nbval; this keeps the lessons true to the notebooks)."""
    import json
    from pathlib import Path

    root = Path(__file__).parents[1]
    cells = json.loads((root / "notebooks" / notebook).read_text(encoding="utf-8"))["cells"]
    printed = [line for c in cells if c["cell_type"] == "code" for o in c.get("outputs", [])
               for line in "".join(o.get("text", "")).splitlines()]
    text = (root / "lessons" / lesson).read_text(encoding="utf-8").splitlines()
    problems = []
    for method in methods:
        rows = [line for line in text if line.startswith(f"| {method} |")]
        outputs = [numbers_of(line) for line in printed if line.startswith(method + " ")]
        for row in rows:
            if not any(all(n in out for n in numbers_of(row)) for out in outputs):
                problems.append(f"{lesson}: {row!r} is not in {notebook}'s outputs for {method!r}")
        if not rows:
            problems.append(f"{lesson} quotes no row for {method!r}")
    return problems


def test_lessons_quote_the_notebooks_tables():
    assert quoted_rows_agree("09_relevance_feedback.ipynb", "09_relevance_feedback.md",
                             ["dense", "kl (query likelihood)", "ranknet (first)", "kl + ranknet"]) == []
    assert quoted_rows_agree("08_query_likelihood.ipynb", "08_query_likelihood.md", ["bm25", "query-likelihood"]) == []
