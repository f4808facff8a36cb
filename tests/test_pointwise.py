"""Chapter 8: query likelihood (TSARankLLM §2.1, eq. 1) on a tiny random-weight model."""
from __future__ import annotations

import pytest
import torch

from minirank import pointwise as Q
from minirank import prompts as P
from minirank.models import tiny_model
from minirank.rerank import Reranker
from minirank.retrieval import ranked

PASSAGES = ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany.",
            "Bananas are yellow when ripe, and a long passage makes the batch need padding on the left."]
QUERY = "capital of france"


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(len(tok), seed=3)


def by_hand(model, tok, query, passage):
    """Sum and mean of log p(q_j | prompt, q_<j), from one unpadded sequence and its full logits."""
    prompt = tok.encode(Q.QL_PROMPT.format(doc=passage))
    q = tok.encode(" " + query, add_special_tokens=False)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + q])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    # token q_j sits at position len(prompt) + j and is predicted by the logits one position earlier
    per_token = [logp[len(prompt) + j - 1, q[j]].item() for j in range(len(q))]
    return sum(per_token), sum(per_token) / len(per_token), per_token


def test_query_likelihood_matches_a_hand_computation(model, tok):
    rows = []
    for passage in PASSAGES:
        ids, state = Q.prompt_ids(tok, passage, 4, max_passage_tokens=None)
        assert state == "whole"
        rows.append((ids, Q.query_token_ids(tok, QUERY)))
    rows.append((rows[0][0], Q.query_token_ids(tok, "paris")))  # a shorter query in the same batch
    assert len({len(p) for p, _ in rows}) > 1, "the batch must need left padding"
    with torch.no_grad():
        logits, targets, mask = Q.query_logits(model, rows, P.pad_token_id(tok))
        log_probs = Q.token_log_probs(logits, targets, mask)
        sums, means = Q.reduce_query(log_probs, mask, "sum"), Q.reduce_query(log_probs, mask, "mean")
    for i, (passage, query) in enumerate([(p, QUERY) for p in PASSAGES] + [(PASSAGES[0], "paris")]):
        total, mean, per_token = by_hand(model, tok, query, passage)
        assert sums[i].item() == pytest.approx(total, abs=1e-4)
        assert means[i].item() == pytest.approx(mean, abs=1e-5)
        real = log_probs[i][mask[i]].tolist()
        assert real == pytest.approx(per_token, abs=1e-5)  # no off-by-one: the first query token too
        assert targets[i][mask[i]].tolist() == rows[i][1]


def test_left_padding_changes_nothing(model, tok):
    reranker = Q.QueryLikelihoodReranker(model, tok, batch_size=3)
    pairs = [(QUERY, p) for p in PASSAGES]
    batched = reranker.score_pairs(pairs)
    alone = [reranker.score_pairs([pair])[0] for pair in pairs]
    assert batched == pytest.approx(alone, abs=1e-5)


def test_sum_and_mean_give_the_same_order_within_a_query(model, tok):
    mean = Q.QueryLikelihoodReranker(model, tok).score_pairs([(QUERY, p) for p in PASSAGES])
    total = Q.QueryLikelihoodReranker(model, tok, reduction="sum").score_pairs([(QUERY, p) for p in PASSAGES])
    n = len(Q.query_token_ids(tok, QUERY))
    assert total == pytest.approx([m * n for m in mean], abs=1e-4)


def test_reranker_meets_the_protocol_and_counts_its_cost(model, tok, tiny_collection):
    from minirank.retrieval import BM25

    reranker = Q.QueryLikelihoodReranker(model, tok, batch_size=4)
    assert isinstance(reranker, Reranker)
    candidates = BM25(tiny_collection.passages).search(tiny_collection.queries, k=5)
    run = reranker.rerank(tiny_collection, candidates)
    assert {q: sorted(r) for q, r in run.items()} == {q: sorted(r) for q, r in candidates.items()}
    pairs = sum(len(r) for r in candidates.values())
    stats = reranker.stats
    assert stats["candidates"] == pairs and stats["model_calls"] == -(-pairs // 4)
    assert stats["windows"] == 0 and stats["tokens_generated"] == 0 and stats["tokens_processed"] > 0
    for qid, scores in reranker.last_scores.items():  # sorted by score, ties in first-stage order
        assert ranked(run[qid]) == sorted(scores, key=lambda p: (-scores[p], ranked(candidates[qid]).index(p)))


def test_a_candidate_list_of_one(model, tok, tiny_collection):
    reranker = Q.QueryLikelihoodReranker(model, tok)
    run = reranker.rerank(tiny_collection, {"q1": {"d1": 0.5}})
    assert run == {"q1": {"d1": 1.0}} and reranker.stats["model_calls"] == 1


def test_bad_input(model, tok, tiny_collection):
    reranker = Q.QueryLikelihoodReranker(model, tok)
    with pytest.raises(ValueError, match="tokenises to no tokens"):
        reranker.score_pairs([("   ", "a passage")])
    with pytest.raises(ValueError, match="query 'q2': query '' tokenises to no tokens"):
        reranker.rerank({"q1": "bread", "q2": ""}, {"q1": {"d1": 1.0}, "q2": {"d1": 1.0}}, tiny_collection.passages)
    assert reranker.stats["model_calls"] == 0  # refused before any model call
    with pytest.raises(ValueError, match="reduction"):
        Q.QueryLikelihoodReranker(model, tok, reduction="max")
    with pytest.raises(ValueError, match="no candidates"):
        reranker.rerank(tiny_collection, {})


def test_passages_longer_than_the_context_are_cut_and_counted(tok):
    short = tiny_model(len(tok), seed=1, max_position_embeddings=48)
    long_passage = " ".join(["The tower is tall and the river is wide."] * 30)
    reranker = Q.QueryLikelihoodReranker(short, tok, max_passage_tokens=None)
    score = reranker.score_pairs([(QUERY, long_passage), (QUERY, "Paris.")])
    assert len(score) == 2 and reranker.stats["passages_cut_to_fit"] == 1 and reranker.stats["passages_cut"] == 1
    q = Q.query_token_ids(tok, QUERY)
    ids, state = Q.prompt_ids(tok, long_passage, len(q), None, limit=48)
    assert state == "cut-to-fit" and len(ids) + len(q) <= 48
    assert tok.decode(ids).startswith("Document: The tower is tall") and tok.decode(ids).endswith(" Query:")
    cut, state = Q.prompt_ids(tok, long_passage, len(q), max_passage_tokens=8)  # the stated cut, no context limit
    assert state == "cut" and len(cut) <= 8 + len(tok.encode(Q.QL_PROMPT.format(doc="")))
    with pytest.raises(ValueError, match="does not fit the model's context"):
        Q.prompt_ids(tok, "x", 60, None, limit=48)


def test_cost_per_query_counts_sequences_and_windows(tok):
    passages = [f"Passage number {i} talks about a topic at some length." for i in range(30)]
    rows = {r["method"]: r for r in Q.cost_per_query(tok, QUERY, passages, window=20, stride=10, batch_size=16)}
    assert rows["query-likelihood"]["sequences"] == 30 and rows["query-likelihood"]["model_calls"] == 2
    assert rows["first"]["sequences"] == rows["first"]["model_calls"] == 2  # windows 10-30 and 0-20
    assert rows["listwise-gen"]["generated"] > 0
    assert rows["listwise-gen"]["model_calls"] == 2 + rows["listwise-gen"]["generated"]
    assert rows["query-likelihood"]["generated"] == 0 and rows["first"]["tokens"] > 0


def test_lesson_quotes_the_cost_table(tok):
    """Lesson 8.2's table is cost_per_query's for the course collection's first test query (no model needed)."""
    from pathlib import Path

    from minirank.data import load_course
    from minirank.evaluate import format_table
    from minirank.retrieval import BM25

    test = load_course("test")
    qid = next(iter(test.queries))
    passages = [test.passages[p] for p in ranked(BM25(test.passages).search({qid: test.queries[qid]}, 20)[qid])]
    table = format_table(Q.cost_per_query(tok, test.queries[qid], passages, window=20, stride=10,
                                          max_passage_tokens=64), markdown=True)
    lesson = (Path(__file__).parents[1] / "lessons" / "08_query_likelihood.md").read_text(encoding="utf-8")
    assert table in lesson, f"lessons/08_query_likelihood.md does not quote the cost table; paste:\n{table}"
