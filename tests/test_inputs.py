"""Chapter 1: the inputs people bring (issue 12), one section per kind.

Each test names the input that went wrong and asserts the right value or the clear error: judgements on
another relevance scale, ids and grades of the types pandas and numpy give, tied scores, run files with
awkward tags and ids, queries with nothing relevant, and data files as editors and spreadsheets save them.
"""
from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minirank import data, evaluate, retrieval
from minirank.data import Collection, DataError
from minirank.prompts import truncate_passages
from minirank.retrieval import from_rankings, ranked


def quietly(fn, *args, **kwargs):
    """Call ``fn`` and return (its result, the messages of the warnings it raised)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught]


# ---------------------------------------------------------------- 1. the relevance level of the collection

def beir_like():
    """Five queries, each with one passage judged 1 (BEIR's scale), and a run that ranks it first."""
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(5)}
    run = {f"q{i}": {f"d{i}": 2.0, "other": 1.0} for i in range(5)}
    collection = Collection("beir-like", {f"d{i}": "text" for i in range(5)} | {"other": "text"},
                            {f"q{i}": "query" for i in range(5)}, qrels, relevance_level=1)
    return collection, run


def test_binary_metrics_use_the_collections_relevance_level():
    collection, run = beir_like()
    (row,), messages = quietly(evaluate.compare, {"bm25": run}, collection.qrels,
                               relevance_level=collection.relevance_level)
    assert row == {"method": "bm25", "ndcg@10": 1.0, "recall@20": 1.0, "mrr@10": 1.0}
    assert messages == []
    per_query = evaluate.evaluate(run, collection.qrels, relevance_level=collection.relevance_level)
    assert all(scores == {"ndcg@10": 1.0, "recall@20": 1.0, "mrr@10": 1.0} for scores in per_query.values())


def test_a_level_no_judgement_reaches_is_a_warning_not_a_silent_zero():
    collection, run = beir_like()
    with pytest.warns(UserWarning, match=r"5 judged queries have no judgement at or above relevance level 2.*"
                                         r"recall@20, mrr@10 are 0 for them by construction"):
        (row,) = evaluate.compare({"bm25": run}, collection.qrels)  # TREC DL's level on BEIR's scale
    assert row["recall@20"] == 0.0 and row["mrr@10"] == 0.0 and row["ndcg@10"] == 1.0
    # nDCG alone does not depend on the level: nothing to warn about
    assert quietly(evaluate.evaluate, run, collection.qrels, ["ndcg@10"])[1] == []


def test_collection_relevance_level_defaults_to_trec_dl_and_is_checked():
    assert Collection("x", {}, {}, {}).relevance_level == 2 == data.load_course("dev").relevance_level
    assert Collection("x", {}, {}, {}, relevance_level=np.int64(1)).relevance_level == 1
    for bad in (0, -1, 1.5, True, "2", None):
        with pytest.raises(ValueError, match="relevance_level must be a whole number >= 1"):
            Collection("x", {}, {}, {}, relevance_level=bad)
        with pytest.raises(ValueError, match="relevance_level must be a whole number >= 1"):
            evaluate.evaluate({}, {"q": {"d": 1}}, relevance_level=bad)


def test_relevance_level_from_what_ir_datasets_documents():
    """Offline: ir_datasets knows the metadata of registered datasets without downloading their data."""
    import ir_datasets

    level = lambda dataset_id: quietly(data.relevance_level_of, ir_datasets.load(dataset_id))
    assert level("msmarco-passage/trec-dl-2019/judged") == (2, [])  # official measures: RR(rel=2)
    assert level("msmarco-passage/trec-dl-2020/judged") == (2, [])
    assert level("beir/scifact/test") == (1, [])  # BEIR: every positive grade is relevant
    assert level("beir/trec-covid") == (1, [])  # graded 0-2, but BEIR's convention
    assert level("msmarco-passage/dev/small") == (1, [])  # binary: qrels_defs names grade 1 only
    value, messages = level("antique/test")  # graded 1-4 and no documented level
    assert value == 1 and len(messages) == 1 and "graded judgements [1, 2, 3, 4]" in messages[0]


def test_local_fixture_gets_its_level_from_its_grades(tmp_path, tiny_dir):
    import ir_datasets

    binary = tmp_path / "qrels.txt"
    binary.write_text("q1 0 d1 1\nq1 0 d4 0\nq2 0 d5 1\n")
    make = lambda qrels: ir_datasets.create_dataset(docs_tsv=str(tiny_dir / "passages.tsv"),
                                                    queries_tsv=str(tiny_dir / "queries.tsv"), qrels_trec=str(qrels))
    collection, messages = quietly(data.from_ir_dataset, make(binary), "binary")
    assert collection.relevance_level == 1 and messages == []
    graded = make(tiny_dir / "qrels.txt")  # grades 0-3 and no definitions: which level is meant?
    with pytest.warns(UserWarning, match=r"graded judgements \[0, 2, 3\] and no documented relevance level"):
        assert data.from_ir_dataset(graded, "tiny").relevance_level == 1
    collection, messages = quietly(data.from_ir_dataset, graded, "tiny", relevance_level=2)
    assert collection.relevance_level == 2 and messages == []
    per_query = evaluate.evaluate(from_rankings({"q1": ["d1"], "q2": ["d5"]}), collection.qrels, ["mrr@10"],
                                  relevance_level=collection.relevance_level)
    assert per_query == {"q1": {"mrr@10": 1.0}, "q2": {"mrr@10": 1.0}}


# ---------------------------------------------------------------- 2. ids and grades of the types people have

RUN = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 2.0, "y": 1.0}}
QRELS = {"q1": {"a": 2, "b": 0, "c": 3}, "q2": {"x": 0, "y": 2}}
METRICS = ["ndcg@10", "recall@20", "mrr@10"]


def reference():
    return evaluate.evaluate(RUN, QRELS, METRICS)


@pytest.mark.parametrize("grade", [np.int64, np.int32, np.uint8, float, np.float64, np.float32, lambda g: g])
def test_whole_number_grades_of_any_type(grade):
    qrels = {q: {p: grade(g) for p, g in judged.items()} for q, judged in QRELS.items()}
    assert quietly(evaluate.evaluate, RUN, qrels, METRICS) == (reference(), [])
    assert evaluate.ndcg_at_k(["c", "a", "b"], qrels["q1"], 10) == 1.0


def test_integer_ids_become_strings_in_qrels_and_run():
    qrels = {1: {10: 2, 11: 0}, np.int64(2): {np.int64(20): 3}}
    run = {np.int64(1): {10: 0.5, np.int32(11): 0.9}, 2: {20: np.float32(0.1)}}
    per_query, messages = quietly(evaluate.evaluate, run, qrels, ["ndcg@10", "mrr@10"])
    assert messages == []  # no "missing" or "ignored" query: 1 and np.int64(1) are the same id
    assert per_query["2"] == {"ndcg@10": 1.0, "mrr@10": 1.0}
    assert per_query["1"]["mrr@10"] == 0.5 and per_query["1"]["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert evaluate.ndcg_at_k([11, 10], qrels[1], 10) == pytest.approx(1 / math.log2(3))


def test_qrels_built_with_pandas():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"qid": [1, 1, 1, 2, 2], "pid": [7, 8, 9, 7, 5], "grade": [2, 0, 3, 0, 2]})
    run = {1: {7: 0.9, 8: 0.8, 9: 0.7}, 2: {5: 0.4, 7: 0.6}}
    expected = evaluate.evaluate({"1": {"7": 0.9, "8": 0.8, "9": 0.7}, "2": {"5": 0.4, "7": 0.6}},
                                 {"1": {"7": 2, "8": 0, "9": 3}, "2": {"7": 0, "5": 2}}, ["ndcg@10", "recall@20"])
    qrels: dict = {}
    for qid, pid, grade in zip(frame.qid.to_numpy(), frame.pid.to_numpy(), frame.grade.to_numpy()):
        qrels.setdefault(qid, {})[pid] = grade
    assert isinstance(next(iter(qrels)), np.int64)  # what numpy hands over
    assert quietly(evaluate.evaluate, run, qrels, ["ndcg@10", "recall@20"]) == (expected, [])
    table = frame.pivot(index="qid", columns="pid", values="grade")  # unjudged cells become NaN, grades floats
    with pytest.raises(DataError, match=r"grade nan \(float\) of passage '\d' for query '\d' is not a whole number"):
        evaluate.evaluate(run, table.to_dict("index"))
    judged = {q: {p: g for p, g in row.items() if g == g} for q, row in table.to_dict("index").items()}
    assert next(iter(judged[1].values())) == 2.0
    assert evaluate.evaluate(run, judged, ["ndcg@10", "recall@20"]) == expected


@pytest.mark.parametrize("grade", [2.5, "high", "2", None, float("nan"), True, np.bool_(True), [2]])
def test_a_grade_that_is_not_a_whole_number_is_one_clear_error(grade):
    qrels = {"q1": {"a": 2, "b": grade}}
    pattern = rf"grade .* \({type(grade).__name__}\) of passage 'b'( for query 'q1')? is not a whole number"
    for call in (lambda: evaluate.evaluate(RUN, qrels), lambda: evaluate.compare({"r": RUN}, qrels),
                 lambda: evaluate.ndcg_at_k(["a"], qrels["q1"])):
        with pytest.raises(DataError, match=pattern):
            call()
    with pytest.raises(DataError, match="for query 'q1'"):
        evaluate.evaluate(RUN, qrels)


@pytest.mark.parametrize("score", [float("nan"), np.float64("nan"), "0.5", None, True, [1.0]])
def test_a_score_that_is_not_a_number_is_one_clear_error(score):
    run = {"q1": {"a": 1.0, "b": score}}
    pattern = r"score .*of passage 'b' for query 'q1' is (NaN|not a number)"
    with pytest.raises(DataError, match=pattern):
        evaluate.evaluate(run, QRELS)
    with pytest.raises(DataError, match=pattern):
        evaluate.compare({"r": run}, QRELS)


def test_numpy_scores_are_numbers():
    run = {"q1": {"a": np.float32(3), "b": np.int64(2), "c": np.float16(1)}, "q2": {"x": 2, "y": np.uint8(1)}}
    assert quietly(evaluate.evaluate, run, QRELS, METRICS) == (reference(), [])


@pytest.mark.parametrize("where,bad,pattern", [
    ("qid", 1.0, r"qrels: query id 1\.0 \(float\): expected a string"),
    ("qid", None, r"qrels: query id None \(NoneType\)"),
    ("pid", float("nan"), r"qrels of query 'q1': passage id nan \(float\)"),
    ("pid", "", r"qrels of query 'q1': passage id '' is empty"),
    ("run-qid", 2.0, r"run: query id 2\.0 \(float\)"),
    ("run-pid", None, r"run for query 'q1': passage id None \(NoneType\)"),
])
def test_an_id_that_is_neither_string_nor_integer_is_a_clear_error(where, bad, pattern):
    qrels, run = dict(QRELS), dict(RUN)
    if where == "qid":
        qrels[bad] = {"a": 1}
    elif where == "pid":
        qrels["q1"] = {**QRELS["q1"], bad: 1}
    elif where == "run-qid":
        run[bad] = {"a": 1.0}
    else:
        run["q1"] = {**RUN["q1"], bad: 1.0}
    with pytest.raises(DataError, match=pattern):
        evaluate.evaluate(run, qrels)


def test_two_ids_that_mean_the_same_string_are_an_error():
    with pytest.raises(DataError, match=r"qrels: query ids 1 \(int\) and '1' \(str\) both mean '1'"):
        evaluate.evaluate({}, {1: {"a": 1}, "1": {"b": 2}})
    with pytest.raises(DataError, match=r"run for query 'q1': passage ids '7' \(str\) and .*7\)? \(int64\) both mean '7'"):
        data.normalise_run({"q1": {"a": 1.0, "7": 2.0, np.int64(7): 3.0}})


def test_a_ranking_given_as_a_list_points_to_from_rankings():
    with pytest.raises(DataError, match=r"run for query 'q1': expected \{pid: score\}, got list; .*from_rankings"):
        evaluate.evaluate({"q1": ["a", "b"]}, QRELS)
    with pytest.raises(DataError, match=r"qrels: expected a mapping \{qid: \{pid: grade\}\}, got list"):
        evaluate.evaluate(RUN, [("q1", "a", 2)])


# ---------------------------------------------------------------- 3. tied scores

def test_the_order_evaluated_is_ranked_across_tools():
    """A grade-0 and a grade-3 passage tied: each tool's own tie rule gives another nDCG@3; minirank
    evaluates the order of `ranked`, the one it shows, writes and hands a reranker."""
    import pytrec_eval

    qrels = {"q": {"a": 0, "b": 3, "c": 1}}
    run = {"q": {"b": 1.0, "a": 1.0, "c": 0.5}}  # "b" inserted first, "a" sorts first
    order = ranked(run["q"])
    assert order == ["a", "b", "c"]
    by_hand = evaluate.ndcg_at_k(order, qrels["q"], 3)
    assert by_hand == pytest.approx((3 / math.log2(3) + 1 / 2) / (3 + 1 / math.log2(3)))
    assert evaluate.evaluate(run, qrels, ["ndcg@3"])["q"]["ndcg@3"] == pytest.approx(by_hand, abs=1e-12)

    trec = lambda r: pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_3"}).evaluate(r)["q"]["ndcg_cut_3"]
    assert by_hand == pytest.approx(0.659, abs=5e-4)
    assert trec(run) == pytest.approx((3 + 1 / 2) / (3 + 1 / math.log2(3)))  # alone: ties by descending id, "b" first
    assert trec(run) == pytest.approx(0.964, abs=5e-4)
    assert trec(from_rankings({"q": order})) == pytest.approx(by_hand, abs=1e-12)


def test_the_order_evaluated_is_the_order_written_and_reranked(tmp_path, tok):
    from minirank.listwise import ListwiseReranker

    run = {"q": {"b": 1.0, "a": 1.0, "c": 0.5, "d": 1.0}}
    path = retrieval.write_run(run, tmp_path / "tied.run")
    assert [line.split()[2] for line in path.read_text().splitlines()] == ranked(run["q"]) == ["a", "b", "d", "c"]
    assert [line.split()[3] for line in path.read_text().splitlines()] == ["1", "2", "3", "4"]

    class Identity(ListwiseReranker):  # keeps every window as it is: the output is the order it received
        def order_windows(self, windows):
            return [list(range(w.size)) for w in windows]

    reranker = Identity(window=3, stride=1)
    out = reranker.rerank({"q": "query"}, run, passages={p: f"passage {p}" for p in run["q"]})
    assert ranked(out["q"]) == ranked(run["q"])


def test_ranx_agrees_on_the_order_of_ranked():
    ranx = pytest.importorskip("ranx")

    qrels = {"q": {"a": 0, "b": 3, "c": 1}}
    run = {"q": {"b": 1.0, "a": 1.0, "c": 0.5}}
    score = lambda r: float(ranx.evaluate(ranx.Qrels(qrels), ranx.Run(r), "ndcg@3"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-safety notes
        assert score(run) == pytest.approx(0.964, abs=5e-4)  # ranx alone: ties in insertion order, "b" first
        assert score(from_rankings({"q": ranked(run["q"])})) == pytest.approx(
            evaluate.evaluate(run, qrels, ["ndcg@3"])["q"]["ndcg@3"], abs=1e-12)


# ---------------------------------------------------------------- 4. run files: what minirank writes, it reads back

@pytest.mark.parametrize("tag", ["my run", "bm25\t1", "bm25\n", "", " ", "ü\u00a0x", 7])
def test_write_run_refuses_a_tag_it_could_not_read_back(tmp_path, tag):
    path = tmp_path / "r.run"
    with pytest.raises(DataError, match="run tag .*expected a non-empty string without whitespace"):
        retrieval.write_run({"q": {"a": 1.0}}, path, tag=tag)
    assert not path.exists()


@pytest.mark.parametrize("qid,pid", [("q 1", "a"), ("q1", "a b"), ("q1", "a\u3000b"), ("q1", "a\u2028")])
def test_write_run_refuses_an_id_with_whitespace(tmp_path, qid, pid):
    path = tmp_path / "r.run"
    with pytest.raises(DataError, match="contains whitespace, which a TREC run file cannot hold"):
        retrieval.write_run({qid: {pid: 1.0}}, path)
    assert not path.exists()


def test_run_round_trip_with_awkward_but_legal_ids(tmp_path):
    run = {"q.1": {"doc-1.2_3": 0.5, "Ärger": -1.5, "東京#7": 1e-300, "🙂": float("inf")},
           "ид-2": {"e\u0301": 2.0, "x/y:z": -0.0, '"quoted"': 1.0}}
    path = retrieval.write_run(run, tmp_path / "r.run", tag="run-v1.2")
    assert retrieval.read_run(path) == run
    assert [line.split()[2] for line in path.read_text(encoding="utf-8").splitlines()[:4]] == ranked(run["q.1"])


def test_run_with_integer_ids_reads_back_as_strings(tmp_path):
    path = retrieval.write_run({1: {10: 0.5, np.int64(11): np.float32(0.25)}}, tmp_path / "r.run")
    assert retrieval.read_run(path) == {"1": {"10": 0.5, "11": 0.25}}
    with pytest.raises(DataError, match="is NaN"):
        retrieval.write_run({"q": {"a": float("nan")}}, tmp_path / "nan.run")


_ID = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8).filter(
    lambda s: not any(ch.isspace() for ch in s))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=st.dictionaries(_ID, st.dictionaries(_ID, st.floats(allow_nan=False), min_size=1, max_size=4),
                           max_size=4), tag=_ID)
def test_run_round_trip_property(tmp_path_factory, run, tag):
    path = retrieval.write_run(run, tmp_path_factory.mktemp("runs") / "r.run", tag=tag)
    assert retrieval.read_run(path) == run


def test_read_run_refuses_a_passage_listed_twice(tmp_path):
    path = tmp_path / "dup.run"
    path.write_text("q1 Q0 a 1 2.0 t\nq1 Q0 b 2 1.0 t\nq1 Q0 a 3 0.5 t\n")
    with pytest.raises(DataError, match=r"dup.run:3: passage 'a' is listed twice for query 'q1' \(first on line 1\)"):
        retrieval.read_run(path)
    path.write_text("q1 Q0 a 1 nan t\n")
    with pytest.raises(DataError, match=r"dup.run:1: score 'nan' is not a number"):
        retrieval.read_run(path)


# ---------------------------------------------------------------- 5. queries with nothing relevant

def test_an_empty_set_of_judgements_is_left_out_as_trec_eval_does():
    import pytrec_eval

    qrels = {"q1": {}, "q2": {"x": 2}}
    run = {"q1": {"a": 1.0}, "q2": {"x": 1.0}}
    assert set(pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10"}).evaluate(run)) == {"q2"}
    per_query, messages = quietly(evaluate.evaluate, run, qrels, METRICS)
    assert len(messages) == 1  # not also "in the run but not judged"
    assert re.search(r"1 queries have an empty set of judgements and are left out.*\['q1'\]", messages[0])
    assert per_query == {"q2": {"ndcg@10": 1.0, "recall@20": 1.0, "mrr@10": 1.0}}
    assert evaluate.mean(per_query, "ndcg@10") == 1.0  # not 0.5: q1 cannot be judged


def test_a_query_judged_all_zero_is_kept_at_zero_as_trec_eval_does():
    import pytrec_eval

    qrels = {"q1": {"a": 0, "b": 0}, "q2": {"x": 2}}
    run = {"q1": {"a": 1.0, "b": 0.5}, "q2": {"x": 1.0}}
    raw = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recall_20", "recip_rank"}, relevance_level=2).evaluate(run)
    assert raw["q1"] == {"ndcg_cut_10": 0.0, "recall_20": 0.0, "recip_rank": 0.0}
    with pytest.warns(UserWarning, match=r"1 judged queries have no judgement at or above relevance level 2.*"
                                         r"ndcg@10, recall@20, mrr@10 are 0 for them by construction.*\['q1'\]"):
        per_query = evaluate.evaluate(run, qrels, METRICS)
    assert per_query["q1"] == {"ndcg@10": 0.0, "recall@20": 0.0, "mrr@10": 0.0}
    assert evaluate.mean(per_query, "ndcg@10") == 0.5
    assert evaluate.ndcg_at_k(["a", "b"], qrels["q1"]) == 0.0


# ---------------------------------------------------------------- 6. data files as editors, spreadsheets and scripts save them

def write(tmp_path, name, text, bom=False, newline="\n", end=True):
    raw = newline.join(text.split("\n"))
    path = tmp_path / name
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + raw.encode("utf-8") + (newline.encode() if end else b""))
    return path


@pytest.mark.parametrize("bom", [False, True])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("end", [True, False])
def test_bom_line_ends_and_a_missing_last_newline(tmp_path, bom, newline, end):
    passages = write(tmp_path, "p.tsv", "d1\tfirst passage\nd2\tsecond passage", bom, newline, end)
    assert data.read_tsv(passages) == {"d1": "first passage", "d2": "second passage"}
    qrels = write(tmp_path, "q.txt", "q1 0 d1 2\nq1 0 d2 0", bom, newline, end)
    assert data.read_qrels(qrels) == {"q1": {"d1": 2, "d2": 0}}
    run = write(tmp_path, "r.run", "q1 Q0 d1 1 2.5 t\nq1 Q0 d2 2 1.5 t", bom, newline, end)
    assert retrieval.read_run(run) == {"q1": {"d1": 2.5, "d2": 1.5}}


def test_trailing_tabs_are_an_empty_last_column(tmp_path):
    path = write(tmp_path, "p.tsv", "d1\tfirst passage\t\nd2\tsecond\t\t\nd3\t\t")
    with pytest.raises(DataError, match=r"p.tsv:3: empty text for id 'd3'"):
        data.read_tsv(path)
    path = write(tmp_path, "p.tsv", "d1\tfirst passage\t\nd2\tsecond\t\t")
    assert data.read_tsv(path) == {"d1": "first passage", "d2": "second"}


def test_a_tab_inside_a_text_says_there_is_no_quoting(tmp_path):
    path = write(tmp_path, "p.tsv", 'd1\tfine\nd2\t"a text\twith a tab"')
    with pytest.raises(DataError, match=r"p.tsv:2: expected 2 tab-separated fields .*found 3: minirank's TSV is "
                                        r"id<TAB>text with no quoting"):
        data.read_tsv(path)
    path = write(tmp_path, "p.tsv", "d1 fields separated by spaces")
    with pytest.raises(DataError, match=r"found 1 \(no tab on this line"):
        data.read_tsv(path)


def test_quotes_are_part_of_the_text_as_ir_datasets_reads_them(tmp_path):
    import ir_datasets

    text = 'd1\t"He said ""hi""", she wrote\nd2\t\'single\' and "double" quotes\n'
    path = write(tmp_path, "p.tsv", text.rstrip("\n"))
    ours = data.read_tsv(path)
    assert ours == {"d1": '"He said ""hi""", she wrote', "d2": '\'single\' and "double" quotes'}
    theirs = {d.doc_id: d.text for d in ir_datasets.create_dataset(docs_tsv=str(path)).docs_iter()}
    assert ours == theirs


@pytest.mark.parametrize("reader,line", [(data.read_tsv, "d2\tcaf\xe9 au lait"), (data.read_qrels, "q\xe9 0 d2 1"),
                                         (retrieval.read_run, "q1 Q0 d\xe9 2 1.0 t")])
def test_latin1_bytes_are_an_error_naming_file_and_line(tmp_path, reader, line):
    good = {data.read_tsv: "d1\tok", data.read_qrels: "q1 0 d1 1", retrieval.read_run: "q1 Q0 d1 1 2.0 t"}[reader]
    path = tmp_path / "latin1.txt"
    path.write_bytes((good + "\n" + line + "\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt:2: byte 0xe9 at column \d+ is not UTF-8.*re-save it as UTF-8"):
        reader(path)


def test_an_id_with_whitespace_in_a_tsv_could_not_be_judged(tmp_path):
    path = write(tmp_path, "p.tsv", "d1\tok\nd\u00a02\tnon-breaking space in the id")
    with pytest.raises(DataError, match=r"p.tsv:2: id 'd\\xa02' contains whitespace"):
        data.read_tsv(path)


def test_qrels_files_from_scripts(tmp_path):
    path = write(tmp_path, "q.txt", "q1 0 d1 2.0\nq1 0 d2 -1\nq2 Q0 d3 1")  # a float column; a "junk" grade
    assert data.read_qrels(path) == {"q1": {"d1": 2, "d2": -1}, "q2": {"d3": 1}}
    for bad in ("2.5", "nan", "high"):
        path = write(tmp_path, "q.txt", f"q1 0 d1 1\nq1 0 d2 {bad}")
        with pytest.raises(DataError, match=rf"q.txt:2: grade '{bad}' is not an integer"):
            data.read_qrels(path)
    path = write(tmp_path, "q.txt", "q1 0 d1 1\nq1 0 d1 2")
    with pytest.raises(DataError, match=r"q.txt:2: passage 'd1' is judged twice for query 'q1' \(first on line 1\)"):
        data.read_qrels(path)


SCRIPTS = {
    "cjk": "東京は日本の首都であり、世界最大の都市圏の一つです。北京は中国の首都です。",
    "arabic": "القاهرة هي عاصمة مصر وأكبر مدنها، وتقع على ضفاف نهر النيل",
    "emoji": "Pizza 🍕🍕 is great 👍🏽 and the 👨‍👩‍👧 family agrees 🎉",
    "combining": "Cafe\u0301 na\u0308ive re\u0301sume\u0301 zoe\u0308 nin\u0303o",
    "mixed": "Ünïcödé mixed 中文 text, עברית, हिन्दी and emoji 😀 at the end",
    "spaces": "non\u00a0breaking and ideographic\u3000spaces stay as written",
}

# a file whose very first character is U+FEFF reads as one with a BOM (every UTF-8 reader drops it): not generated
_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\t\n\r\ufeff"), min_size=1,
                max_size=40).filter(lambda s: s.strip())
_TSV_ID = _ID.filter(lambda s: "\ufeff" not in s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_TEXT, min_size=1, max_size=5), ids=st.lists(_TSV_ID, min_size=5, max_size=5, unique=True),
       bom=st.booleans(), newline=st.sampled_from(["\n", "\r\n"]), end=st.booleans())
def test_ids_and_texts_in_any_script_come_out_as_written(tmp_path_factory, texts, ids, bom, newline, end):
    written = dict(zip(ids, texts))
    lines = "\n".join(f"{pid}\t{text}" for pid, text in written.items())
    path = write(tmp_path_factory.mktemp("tsv"), "p.tsv", lines, bom, newline, end)
    assert data.read_tsv(path) == {pid: text.strip(" ") for pid, text in written.items()}


def test_scripts_reach_the_prompt_as_written(tmp_path, tok):
    path = write(tmp_path, "p.tsv", "\n".join(f"{k}\t{v}" for k, v in SCRIPTS.items()))
    passages = data.read_tsv(path)
    assert passages == SCRIPTS
    assert truncate_passages(list(passages.values()), tok, None) == [" ".join(t.split()) for t in SCRIPTS.values()]
    assert truncate_passages(list(passages.values()), tok, 10_000) == [" ".join(t.split()) for t in SCRIPTS.values()]


def test_a_cut_passage_is_a_prefix_within_the_budget(tok):
    texts = list(SCRIPTS.values())
    for budget in range(1, 16):
        for text, cut in zip(texts, truncate_passages(texts, tok, budget)):
            flat = " ".join(text.split())
            assert flat.startswith(cut), (budget, cut)
            assert len(tok.encode(cut, add_special_tokens=False)) <= budget, (budget, cut)
