"""The reranker interface (minirank.rerank), experiment(), and `minirank rerank` on a fixture."""
from __future__ import annotations

import pytest

from minirank import evaluate, retrieval
from minirank.first import FirstReranker
from minirank.listwise import GenerationReranker
from minirank.models import tiny_model
from minirank.rerank import Cascade, PointwiseReranker, Reranker, Retriever


class Length(PointwiseReranker):
    """Longer passages first: a deterministic pointwise scorer for the tests."""

    name = "length"

    def score_pairs(self, pairs):
        self.calls = getattr(self, "calls", 0) + 1
        return [float(len(text)) for _, text in pairs]


def test_every_ranker_meets_the_protocol(tiny_collection, tok):
    model = tiny_model(len(tok))
    assert isinstance(retrieval.BM25(tiny_collection.passages), Retriever)
    assert isinstance(retrieval.Dense(tiny_collection.passages), Retriever)
    for reranker in (FirstReranker(model, tok, window=3), GenerationReranker(model, tok, window=3), Length()):
        assert isinstance(reranker, Reranker), type(reranker).__name__
        assert {"windows", "model_calls", "tokens_processed", "tokens_generated", "repairs",
                "generations", "seconds"} <= set(reranker.stats)
    cascade = Cascade(retrieval.BM25(tiny_collection.passages), Length(), 3, tiny_collection.passages)
    assert isinstance(cascade, Retriever)


def test_pointwise_reranker_sorts_by_score_and_keeps_the_rest(tiny_collection):
    candidates = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0, "d4": 0.5}}
    length = Length(batch_size=3)
    run = length.rerank(tiny_collection.queries, candidates, tiny_collection.passages, k=3)
    texts = tiny_collection.passages
    head = sorted(["d1", "d2", "d3"], key=lambda p: -len(texts[p]))
    assert retrieval.ranked(run["q1"]) == head + ["d4"]
    assert length.calls == 1 and length.stats["candidates"] == 3
    assert length.last_scores["q1"]["d1"] == float(len(texts["d1"]))
    with pytest.raises(KeyError, match="passage 'nope'"):
        length.rerank(tiny_collection, {"q1": {"nope": 1.0}})
    with pytest.raises(ValueError, match="batch_size"):
        Length(batch_size=0)


def test_cascade_and_experiment(tiny_collection):
    bm25 = retrieval.BM25(tiny_collection.passages)
    cascade = Cascade(bm25, Length(), 3, tiny_collection.passages)
    run = cascade.search(tiny_collection.queries)
    first_stage = retrieval.top_k(bm25.search(tiny_collection.queries, 3), 3)
    assert {q: sorted(r) for q, r in run.items()} == {q: sorted(r) for q, r in first_stage.items()}
    result = evaluate.experiment({"bm25": bm25, "length": cascade}, tiny_collection, ["ndcg@10", "recall@20"],
                                 baseline="bm25")
    assert [row["method"] for row in result.rows] == ["bm25", "length"]
    row = result.rows[1]
    assert {"vs bm25", "95% CI", "p"} <= set(row) and 0.0 <= row["p"] <= 1.0
    assert result.per_query["bm25"] == evaluate.evaluate(result.runs["bm25"], tiny_collection.qrels, ["ndcg@10", "recall@20"])
    assert "length" in str(result)
    with pytest.raises(ValueError, match="baseline 'nope'"):
        evaluate.experiment({"bm25": bm25}, tiny_collection, baseline="nope")
    with pytest.raises(ValueError, match="depth"):
        Cascade(bm25, Length(), 0, tiny_collection.passages)


def test_paired_difference_is_the_exact_permutation_test():
    a = {f"q{i}": v for i, v in enumerate([0.9, 0.8, 0.7, 0.75, 0.6])}
    b = {f"q{i}": v for i, v in enumerate([0.5, 0.7, 0.72, 0.5, 0.55])}
    out = evaluate.paired_difference(a, b)
    diffs = [a[q] - b[q] for q in a]
    import itertools

    observed = abs(sum(diffs))
    extreme = sum(abs(sum(s * d for s, d in zip(signs, diffs))) >= observed - 1e-12
                  for signs in itertools.product((1, -1), repeat=len(diffs)))
    assert out["exact"] and out["p"] == pytest.approx(extreme / 2 ** len(diffs))
    assert out["ci_low"] < out["mean_diff"] < out["ci_high"]
    # the hand-written randomisation test of chapter 1 agrees with the library's exact one within its Monte Carlo error
    assert evaluate.paired_test(a, b, trials=20_000)["p_randomization"] == pytest.approx(out["p"], abs=0.02)


# ---------------------------------------------------------------- `minirank rerank`

@pytest.fixture
def rerank_files(tiny_dir, tmp_path, tiny_collection):
    run = retrieval.BM25(tiny_collection.passages).search(tiny_collection.queries, k=4)
    path = retrieval.write_run(run, tmp_path / "bm25.run", tag="bm25")
    return {"run": str(path), "queries": str(tiny_dir / "queries.tsv"), "passages": str(tiny_dir / "passages.tsv"),
            "out": str(tmp_path / "first.run")}, run


@pytest.fixture
def tiny_llm(monkeypatch, tok):
    from minirank import demo

    monkeypatch.setattr(demo.Context, "llm", property(lambda self: (tiny_model(len(tok)), tok)))
    monkeypatch.setattr("minirank.models.check_available", lambda name=None: "tiny")


def test_minirank_rerank_round_trips_a_trec_run(rerank_files, tiny_llm, capsys):
    from minirank.cli import main

    files, candidates = rerank_files
    argv = ["rerank", "--run", files["run"], "--queries", files["queries"], "--passages", files["passages"],
            "--method", "first", "--out", files["out"]]
    assert main(argv) == 0
    out = retrieval.read_run(files["out"])
    assert {q: sorted(r) for q, r in out.items()} == {q: sorted(r) for q, r in candidates.items()}
    assert "reranked 2 queries" in capsys.readouterr().out
    # never overwritten: the same command again is refused and the file is unchanged
    before = open(files["out"]).read()
    assert main(argv) == 2
    assert "exists" in capsys.readouterr().err and open(files["out"]).read() == before


def test_minirank_rerank_bad_input(rerank_files, tiny_llm, tmp_path, capsys):
    from minirank.cli import main

    files, _ = rerank_files
    base = ["--queries", files["queries"], "--passages", files["passages"], "--method", "first"]
    assert main(["rerank", "--run", str(tmp_path / "missing.run"), *base, "--out", str(tmp_path / "a.run")]) == 2
    assert "missing data file" in capsys.readouterr().err
    foreign = tmp_path / "foreign.run"
    foreign.write_text("q1 Q0 d1 1 2.0 x\nq1 Q0 zzz 2 1.0 x\n")
    assert main(["rerank", "--run", str(foreign), *base, "--out", str(tmp_path / "b.run")]) == 2
    assert "candidate passage 'zzz'" in capsys.readouterr().err
    foreign.write_text("q77 Q0 d1 1 2.0 x\n")
    assert main(["rerank", "--run", str(foreign), *base, "--out", str(tmp_path / "c.run")]) == 2
    assert "query 'q77'" in capsys.readouterr().err
    assert not any((tmp_path / n).exists() for n in ("a.run", "b.run", "c.run"))


def test_exact_sign_flip_matches_scipy_exact_permutation_test():
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(3)
    for n in (2, 5, 9, 12):
        x, y = rng.random(n), rng.random(n)
        if n == 9:
            y = x - np.round(rng.normal(0, 0.1, n), 2)  # ties among |differences|
        ours = evaluate.exact_sign_flip_p(x - y)
        theirs = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), vectorized=True,
                                        permutation_type="samples", n_resamples=np.inf).pvalue
        assert ours == pytest.approx(theirs, abs=1e-12), n
