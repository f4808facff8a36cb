"""Chapter 1: BM25, dense retrieval and TREC run files."""
from __future__ import annotations

import pytest

from minirank import retrieval


def test_bm25_finds_lexical_match(tiny_collection):
    run = retrieval.BM25(tiny_collection.passages).search(tiny_collection.queries, k=3)
    assert retrieval.ranked(run["q2"])[0] == "d5"
    assert set(run["q1"]) <= {"d1", "d3", "d4"}  # the passages that share words with the query


def test_dense_finds_paraphrase(tiny_collection):
    dense = retrieval.Dense(tiny_collection.passages)
    assert dense.embeddings.shape == (5, 384)
    run = dense.search({"q": "how do loaves get bigger in the oven"}, k=5)
    assert retrieval.ranked(run["q"])[0] in {"d3", "d1"}


def test_run_round_trip_and_no_silent_overwrite(tmp_path):
    run = {"q1": {"a": 2.0, "b": 2.0, "c": 5.0}, "q2": {"z": 1.0}}
    path = retrieval.write_run(run, tmp_path / "bm25.run", tag="bm25")
    assert path.read_text().splitlines()[0] == "q1 Q0 c 1 5.0 bm25"
    assert retrieval.read_run(path) == run
    retrieval.write_run(run, path, tag="bm25")  # the same content again is fine
    with pytest.raises(FileExistsError, match="holds a different run"):
        retrieval.write_run({"q1": {"a": 1.0}}, path)


def test_read_run_names_bad_line(tmp_path):
    path = tmp_path / "bad.run"
    path.write_text("q1 Q0 a 1 2.0 tag\nq1 Q0 b 2\n")
    with pytest.raises(ValueError, match=r"bad.run:2: expected 6 fields"):
        retrieval.read_run(path)


def test_ranked_breaks_ties_by_id():
    assert retrieval.ranked({"b": 1.0, "a": 1.0, "c": 2.0}) == ["c", "a", "b"]
    assert retrieval.ranked({"b": 1.0, "a": 1.0, "c": 2.0}, k=2) == ["c", "a"]


def test_ties_at_the_cut_are_broken_by_id():
    """bm25s picks arbitrarily among equal scores at rank k; minirank's cut must not."""
    passages = {f"d{i}": "apple banana" for i in range(5)} | {"d9": "apple apple banana cherry"}
    run = retrieval.BM25(passages).search({"q": "banana"}, k=2)
    assert retrieval.ranked(run["q"]) == ["d0", "d1"]
