"""The course collection meets its datasheet: sizes, splits, grades, and judged pools."""
from __future__ import annotations

import csv
from collections import Counter

import pytest

from minirank import data, retrieval


@pytest.fixture(scope="module")
def splits():
    return {name: data.load_course(name) for name in data.SPLITS}


def test_sizes_and_splits(splits):
    queries = {q for c in splits.values() for q in c.queries}
    assert len(queries) >= 60
    assert len(splits["test"].queries) >= 16
    assert len(splits["test"].passages) >= 1200
    assert not set(splits["train"].queries) & set(splits["test"].queries)
    assert not set(splits["dev"].queries) & set(splits["test"].queries)


def test_domains():
    with open(data.COURSE_DIR / "passages.meta.tsv", encoding="utf-8") as handle:
        domains = Counter(row["domain"] for row in csv.DictReader(handle, delimiter="\t"))
    assert len(domains) >= 8


def test_every_query_has_twenty_graded_judgements(splits):
    for collection in splits.values():
        for qid, judged in collection.qrels.items():
            assert len(judged) >= 20, qid
            assert set(judged.values()) <= {0, 1, 2, 3}
            assert max(judged.values()) >= 2, f"{qid} has no relevant passage"


def test_pools_leave_no_holes(splits):
    """Every passage in the top 20 of BM25 and of the dense retriever is judged (TREC-style pooling)."""
    everything = {q: t for c in splits.values() for q, t in c.queries.items()}
    qrels = {q: j for c in splits.values() for q, j in c.qrels.items()}
    passages = splits["test"].passages
    for system in (retrieval.BM25(passages), retrieval.Dense(passages)):
        run = system.search(everything, 20)
        holes = [(q, p) for q in everything for p in retrieval.ranked(run[q], 20) if p not in qrels[q]]
        assert not holes, f"{type(system).__name__}: {len(holes)} unjudged pairs, e.g. {holes[:3]}"


def test_files_load_through_ir_datasets():
    import ir_datasets

    paths = data.course_paths("dev")
    dataset = ir_datasets.create_dataset(**{k: str(v) for k, v in paths.items()})
    collection = data.from_ir_dataset(dataset, "course-dev", split="dev", relevance_level=2)
    assert collection.qrels == data.load_course("dev").qrels
