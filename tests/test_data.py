"""Chapter 1: loading collections, and clear errors for bad files."""
from __future__ import annotations

import pytest

from minirank import data


def test_tiny_fixture_loads(tiny_collection):
    assert len(tiny_collection.passages) == 5
    assert tiny_collection.qrels["q1"] == {"d1": 3, "d3": 2, "d4": 0}
    assert tiny_collection.query("q2") == "how does a telescope work"


def test_unknown_query_id_is_named(tiny_collection):
    with pytest.raises(KeyError, match="unknown query id 'q9'"):
        tiny_collection.query("q9")


def test_qrels_line_with_three_fields(tmp_path):
    bad = tmp_path / "qrels.txt"
    bad.write_text("q1 0 d1 3\nq1 d2 1\n")
    with pytest.raises(data.DataError, match=r"qrels.txt:2: expected 4 fields 'qid 0 pid grade', found 3"):
        data.read_qrels(bad)


def test_qrels_grade_not_integer(tmp_path):
    bad = tmp_path / "qrels.txt"
    bad.write_text("q1 0 d1 high\n")
    with pytest.raises(data.DataError, match="grade 'high' is not an integer"):
        data.read_qrels(bad)


def test_empty_passage(tmp_path):
    bad = tmp_path / "passages.tsv"
    bad.write_text("d1\tsome text\nd2\t   \n")
    with pytest.raises(data.DataError, match=r"passages.tsv:2: empty text for id 'd2'"):
        data.read_tsv(bad)


def test_missing_file_names_path_and_expectation(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing data file .*nothing.tsv: expected"):
        data.read_tsv(tmp_path / "nothing.tsv")


def test_qrels_naming_unknown_query_or_passage(tiny_collection):
    with pytest.raises(data.DataError, match="unknown query id 'q7'"):
        data.check_consistency(tiny_collection.queries, {"q7": {"d1": 1}}, tiny_collection.passages, "x")
    with pytest.raises(data.DataError, match="unknown passage id 'd99'"):
        data.check_consistency(tiny_collection.queries, {"q1": {"d99": 1}}, tiny_collection.passages, "x")


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'validation'"):
        data.load_course("validation")


def test_local_fixture_through_ir_datasets(tiny_dir):
    """The loader for real benchmarks, run on a local fixture in the same formats."""
    import ir_datasets

    dataset = ir_datasets.create_dataset(docs_tsv=str(tiny_dir / "passages.tsv"),
                                         queries_tsv=str(tiny_dir / "queries.tsv"),
                                         qrels_trec=str(tiny_dir / "qrels.txt"))
    collection = data.from_ir_dataset(dataset, "tiny", relevance_level=2)  # TREC DL's scale, undocumented here
    assert collection.passages["d3"].startswith("Gluten strands")
    assert collection.qrels == data.read_qrels(tiny_dir / "qrels.txt")
    assert collection.first_stage is None and collection.relevance_level == 2


def test_benchmark_offline_message(monkeypatch):
    import ir_datasets

    class Broken:
        def queries_iter(self):
            raise OSError("network unreachable")

    monkeypatch.setattr(ir_datasets, "load", lambda dataset_id: Broken())
    with pytest.raises(ConnectionError, match="needs internet access"):
        data.load_benchmark("dl19")


def test_benchmark_names_map_to_ir_datasets_ids(monkeypatch, tiny_dir):
    import ir_datasets

    seen = []
    fixture = ir_datasets.create_dataset(docs_tsv=str(tiny_dir / "passages.tsv"),
                                         queries_tsv=str(tiny_dir / "queries.tsv"),
                                         qrels_trec=str(tiny_dir / "qrels.txt"))
    monkeypatch.setattr(ir_datasets, "load", lambda dataset_id: seen.append(dataset_id) or fixture)
    for name in ("dl19", "dl20", "scifact", "nfcorpus", "trec-covid"):
        assert data.load_benchmark(name, relevance_level=2).name == name
    assert seen == [data.BENCHMARKS[n] for n in ("dl19", "dl20", "scifact", "nfcorpus", "trec-covid")]


def test_bad_relevance_level_fails_before_any_download(monkeypatch):
    import ir_datasets

    monkeypatch.setattr(ir_datasets, "load", lambda dataset_id: pytest.fail("no download for a bad argument"))
    with pytest.raises(ValueError, match="relevance_level must be a whole number >= 1"):
        data.load_benchmark("scifact", relevance_level=0)


def test_unknown_benchmark_name():
    with pytest.raises(ValueError, match="unknown benchmark 'dl99'"):
        data.load_benchmark("dl99")
