"""Test collections: the course collection shipped in ``data/course`` and real benchmarks via ir_datasets.

A :class:`Collection` is what every later chapter consumes: passages, queries and graded judgements
(TREC DL's 0-3 scale) for one split, plus an optional first-stage run that came with the benchmark.
Files use the standard formats (passages TSV ``pid<TAB>text``, queries TSV ``qid<TAB>text``, qrels
TREC ``qid 0 pid grade``), so ``ir_datasets.create_dataset`` reads them as well.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SPLITS = ("train", "dev", "test")
#: The course collection ships in the repository's data/ folder (set MINIRANK_DATA to point elsewhere).
#: The repository's data folder: what the project makes and ships (collection, adapter, stored benchmarks).
DATA_DIR = Path(__file__).resolve().parent.parent / "data"
COURSE_DIR = Path(os.environ.get("MINIRANK_DATA", DATA_DIR / "course"))
#: Stored benchmark outputs that the lessons quote (data/README.md says which command made each).
BENCH_DIR = DATA_DIR / "bench"

#: Short names for real benchmarks (ir_datasets ids). TREC DL ships BM25's official top-1000 run.
BENCHMARKS = {
    "dl19": "msmarco-passage/trec-dl-2019/judged",
    "dl20": "msmarco-passage/trec-dl-2020/judged",
    "scifact": "beir/scifact/test",
    "nfcorpus": "beir/nfcorpus/test",
    "trec-covid": "beir/trec-covid",
}


class DataError(ValueError):
    """A data file is malformed; the message names the file, the line and what was expected."""


@dataclass
class Collection:
    """Passages, queries and graded judgements for one split of one test collection."""

    name: str
    passages: Mapping[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    first_stage: dict[str, dict[str, float]] | None = field(default=None, repr=False)

    def query(self, qid: str) -> str:
        """The text of query ``qid``; a clear error for an id this collection does not have."""
        try:
            return self.queries[qid]
        except KeyError:
            sample = ", ".join(sorted(self.queries)[:3])
            raise KeyError(f"unknown query id {qid!r} in {self.name} ({self.split}); "
                           f"expected one of its {len(self.queries)} ids, e.g. {sample}") from None

    def passage(self, pid: str) -> str:
        try:
            return self.passages[pid]
        except KeyError:
            raise KeyError(f"unknown passage id {pid!r} in {self.name}") from None

    def __repr__(self) -> str:
        judged = sum(len(v) for v in self.qrels.values())
        return (f"Collection({self.name!r}, split={self.split!r}, {len(self.passages)} passages, "
                f"{len(self.queries)} queries, {judged} judgements)")


# ---------------------------------------------------------------- reading files, with clear errors

def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}: expected {what}")
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\n").rstrip("\r")
            if line.strip():
                yield number, line


def read_tsv(path: str | Path, what: str = "id<TAB>text") -> dict[str, str]:
    """Read an ``id<TAB>text`` file (passages or queries); empty texts and repeated ids are errors."""
    out: dict[str, str] = {}
    for number, line in _lines(Path(path), f"lines of {what}"):
        parts = line.split("\t")
        if len(parts) != 2:
            raise DataError(f"{path}:{number}: expected 2 tab-separated fields ({what}), found {len(parts)}")
        key, text = parts[0].strip(), parts[1].strip()
        if not key:
            raise DataError(f"{path}:{number}: empty id (expected {what})")
        if not text:
            raise DataError(f"{path}:{number}: empty text for id {key!r} (expected {what})")
        if key in out:
            raise DataError(f"{path}:{number}: id {key!r} appears twice")
        out[key] = text
    return out


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read TREC qrels (``qid iteration pid grade``) into ``{qid: {pid: grade}}``."""
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(Path(path), "TREC qrels lines 'qid 0 pid grade'"):
        parts = line.split()
        if len(parts) != 4:
            raise DataError(f"{path}:{number}: expected 4 fields 'qid 0 pid grade', found {len(parts)}: {line!r}")
        qid, _, pid, grade = parts
        try:
            qrels.setdefault(qid, {})[pid] = int(grade)
        except ValueError:
            raise DataError(f"{path}:{number}: grade {grade!r} is not an integer (expected 0-3)") from None
    return qrels


def check_consistency(queries: dict[str, str], qrels: dict[str, dict[str, int]], passages: Mapping[str, str],
                      where: str) -> None:
    """Every judged query must exist, and every judged passage must be in the corpus."""
    for qid, judged in qrels.items():
        if qid not in queries:
            raise DataError(f"{where}: qrels name unknown query id {qid!r} (not in the queries file)")
        for pid in judged:
            if pid not in passages:
                raise DataError(f"{where}: qrels for query {qid!r} name unknown passage id {pid!r}")


# ---------------------------------------------------------------- the course collection

def course_paths(split: str, root: str | Path | None = None) -> dict[str, Path]:
    """The three files of one split of the course collection (what ``ir_datasets.create_dataset`` takes)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: expected one of {SPLITS}")
    root = Path(root) if root is not None else COURSE_DIR
    if not root.is_dir():
        raise FileNotFoundError(f"course collection folder {root} not found: it ships in the repository's data/ "
                                f"folder (a pip install from git does not include it), so clone the repository "
                                f"or set MINIRANK_DATA to its data/course folder")
    return {"docs_tsv": root / "passages.tsv", "queries_tsv": root / f"queries.{split}.tsv",
            "qrels_trec": root / f"qrels.{split}.txt"}


_PASSAGE_CACHE: dict[Path, dict[str, str]] = {}


def load_course(split: str = "test", root: str | Path | None = None) -> Collection:
    """The course collection (``data/course``, see its datasheet ``data/README.md``) for one split."""
    paths = course_paths(split, root)
    key = paths["docs_tsv"].resolve()
    if key not in _PASSAGE_CACHE:
        _PASSAGE_CACHE[key] = read_tsv(paths["docs_tsv"], "pid<TAB>passage text")
    passages = _PASSAGE_CACHE[key]
    queries = read_tsv(paths["queries_tsv"], "qid<TAB>query text")
    qrels = read_qrels(paths["qrels_trec"])
    check_consistency(queries, qrels, passages, str(paths["qrels_trec"]))
    return Collection("minirank-course", passages, queries, qrels, split)


# ---------------------------------------------------------------- real benchmarks through ir_datasets

class _DocstoreMapping(Mapping):
    """Passages of a large ir_datasets corpus, fetched lazily by id instead of read into memory."""

    def __init__(self, dataset):
        self._dataset = dataset
        self._store = dataset.docs_store()

    def __getitem__(self, pid: str) -> str:
        doc = self._store.get(pid)
        return " ".join(x for x in (getattr(doc, "title", ""), getattr(doc, "text", "")) if x).strip()

    def __iter__(self):
        return (doc.doc_id for doc in self._dataset.docs_iter())

    def __len__(self) -> int:
        return self._dataset.docs_count()


def from_ir_dataset(dataset, name: str, split: str = "test", lazy_docs: bool | None = None) -> Collection:
    """Wrap an ``ir_datasets`` dataset (a registered one, or a local ``create_dataset`` fixture)."""
    queries = {q.query_id: q.text for q in dataset.queries_iter()}
    qrels: dict[str, dict[str, int]] = {}
    for row in dataset.qrels_iter():
        qrels.setdefault(row.query_id, {})[row.doc_id] = int(row.relevance)
    qrels = {qid: judged for qid, judged in qrels.items() if qid in queries}
    count = dataset.docs_count() if hasattr(dataset, "docs_count") else None
    lazy = lazy_docs if lazy_docs is not None else bool(count and count > 200_000)
    if lazy:
        passages: Mapping[str, str] = _DocstoreMapping(dataset)
    else:
        passages = {d.doc_id: " ".join(x for x in (getattr(d, "title", ""), d.text) if x).strip()
                    for d in dataset.docs_iter()}
    first_stage = None
    if dataset.has_scoreddocs():
        first_stage = {}
        for row in dataset.scoreddocs_iter():
            if row.query_id in qrels:
                first_stage.setdefault(row.query_id, {})[row.doc_id] = float(row.score)
    return Collection(name, passages, {q: queries[q] for q in qrels}, qrels, split, first_stage)


def load_benchmark(name: str) -> Collection:
    """A real benchmark by short name (``dl19``, ``dl20``, ``scifact``, ``nfcorpus``, ``trec-covid``) or
    any ir_datasets id. Needs the network the first time (ir_datasets downloads and caches the data)."""
    import ir_datasets

    dataset_id = BENCHMARKS.get(name, name)
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}: expected one of {sorted(BENCHMARKS)} "
                         f"or an ir_datasets id") from None
    try:
        return from_ir_dataset(dataset, name)
    except Exception as err:  # ir_datasets raises many kinds of error when a download fails
        raise ConnectionError(
            f"could not load benchmark {name!r} ({dataset_id}): {err.__class__.__name__}: {err}. "
            f"ir_datasets downloads its data the first time, so this needs internet access (e.g. Colab); "
            f"offline, use minirank.data.load_course().") from err
