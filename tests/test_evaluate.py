"""Chapter 1: metrics by hand vs pytrec_eval, and the traps pytrec_eval sets."""
from __future__ import annotations

import math
import warnings

import pytest

from minirank import evaluate
from minirank.retrieval import from_rankings, ranked

QRELS = {"q1": {"a": 3, "b": 1, "c": 2, "d": 0}, "q2": {"x": 2, "y": 0}}


def test_ndcg_by_hand_matches_pytrec_eval():
    run = {"q1": {"a": 1.0, "b": 3.0, "c": 2.0, "d": 4.0}, "q2": {"y": 2.0, "x": 1.0}}
    per_query = evaluate.evaluate(run, QRELS, ["ndcg@10"])
    # q1 order d, b, c, a has gains 0, 1, 2, 3; the ideal order has 3, 2, 1.
    by_hand = (1 / math.log2(3) + 2 / math.log2(4) + 3 / math.log2(5)) / (3 + 2 / math.log2(3) + 1 / math.log2(4))
    assert per_query["q1"]["ndcg@10"] == pytest.approx(by_hand, abs=1e-9)
    for q in QRELS:
        assert evaluate.ndcg_at_k(ranked(run[q]), QRELS[q], 10) == pytest.approx(per_query[q]["ndcg@10"], abs=1e-9)


def test_binary_metrics_use_relevance_level_two():
    run = from_rankings({"q1": ["b", "c", "a", "d"], "q2": ["x", "y"]})
    per_query = evaluate.evaluate(run, QRELS, ["mrr@10", "recall@1"])
    assert per_query["q1"]["mrr@10"] == pytest.approx(0.5)  # "b" has grade 1: related, not relevant
    assert per_query["q1"]["recall@1"] == 0.0
    assert per_query["q2"]["recall@1"] == 1.0


def test_mrr_is_cut_at_depth():
    run = from_rankings({"q2": ["y"] + [f"n{i}" for i in range(10)] + ["x"]})
    assert evaluate.evaluate(run, {"q2": QRELS["q2"]}, ["mrr@10"])["q2"]["mrr@10"] == 0.0
    assert evaluate.evaluate(run, {"q2": QRELS["q2"]}, ["mrr@20"])["q2"]["mrr@20"] == pytest.approx(1 / 12)


def test_missing_query_counts_as_zero_with_warning():
    run = {"q1": {"a": 1.0}}
    with pytest.warns(UserWarning, match="score 0"):
        per_query = evaluate.evaluate(run, QRELS, ["ndcg@10"])
    assert per_query["q2"]["ndcg@10"] == 0.0
    assert evaluate.mean(per_query, "ndcg@10") == pytest.approx(per_query["q1"]["ndcg@10"] / 2)


def test_ties_broken_by_ascending_id_not_pytrec_evals_descending():
    run = {"q2": {"x": 1.0, "y": 1.0}}  # tie: we rank x first; pytrec_eval alone would rank y first
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        per_query = evaluate.evaluate(run, {"q2": QRELS["q2"]}, ["mrr@10"])
    assert per_query["q2"]["mrr@10"] == 1.0


def test_unknown_metric():
    with pytest.raises(ValueError, match="unknown metric 'map'"):
        evaluate.evaluate({}, QRELS, ["map"])


def test_paired_test_detects_a_consistent_difference():
    a = {f"q{i}": 0.5 + 0.01 * i for i in range(20)}
    b = {q: v - 0.1 - 0.001 * (i % 3) for i, (q, v) in enumerate(a.items())}
    result = evaluate.paired_test(a, b)
    assert result["mean_diff"] == pytest.approx(0.1 + 0.001 * 19 / 20, abs=1e-9)
    assert result["p_randomization"] < 0.001 and result["p_ttest"] < 0.001
    same = evaluate.paired_test(a, a)
    assert same["p_randomization"] == 1.0


def test_format_table_has_every_column():
    text = evaluate.format_table([{"method": "bm25", "ndcg@10": 0.5}, {"method": "dense", "ndcg@10": 0.25, "x": 1}])
    assert "0.500" in text and "0.250" in text and text.splitlines()[0].split() == ["method", "ndcg@10", "x"]


def test_format_table_as_markdown_has_the_same_cells():
    rows = [{"method": "a|b", "ndcg@10": 0.5, "p vs x": 0.0004}, {"method": "c", "ndcg@10": 0.25}]
    lines = evaluate.format_table(rows, markdown=True).splitlines()
    assert lines[0] == "| method | ndcg@10 | p vs x |" and lines[1] == "|---|---|---|"
    assert lines[2] == "| a\\|b | 0.500 | <0.001 |" and lines[3] == "| c | 0.250 |  |"
