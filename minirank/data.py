"""Test collections: the course collection shipped in ``data/course`` and real benchmarks via ir_datasets.

A :class:`Collection` is what every later chapter consumes: passages, queries and graded judgements
for one split, the collection's relevance level (the lowest grade that binary metrics count as
relevant), plus an optional first-stage run that came with the benchmark. Files use the standard
formats (passages TSV ``pid<TAB>text``, queries TSV ``qid<TAB>text``, qrels TREC ``qid 0 pid grade``),
so ``ir_datasets.create_dataset`` reads them as well.

Judgements and runs that people build themselves (with pandas, numpy, a script) go through
:func:`normalise_qrels` and :func:`normalise_run` before anything scores them: ids become strings,
whole-number grades become ints, and anything else is a :class:`DataError` that names the query, the
passage, the value and its type.
"""
from __future__ import annotations

import math
import numbers
import os
import re
import warnings
from collections.abc import Iterable, Mapping
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


#: The course collection judges on TREC DL's 0-3 scale, where binary metrics count grades 2 and 3.
DEFAULT_RELEVANCE_LEVEL = 2


class DataError(ValueError):
    """Input data is malformed: a file (the message names the file, the line and what was expected) or
    judgements and runs built in memory (it names the query, the passage, the value and its type)."""


@dataclass
class Collection:
    """Passages, queries and graded judgements for one split of one test collection.

    ``relevance_level`` is the lowest grade that binary metrics (Recall, MRR, P) count as relevant.
    It belongs to the collection's judging scale: 2 on TREC DL's 0-3 scale, where 1 means "related,
    but does not answer" (the course collection, ``dl19``, ``dl20``); 1 for BEIR's collections, which
    judge relevant passages 1 (``scifact``). nDCG uses the grades themselves and ignores it.
    """

    name: str
    passages: Mapping[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    first_stage: dict[str, dict[str, float]] | None = field(default=None, repr=False)
    relevance_level: int = DEFAULT_RELEVANCE_LEVEL

    def __post_init__(self) -> None:
        self.relevance_level = check_relevance_level(self.relevance_level)

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

_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # how errors="surrogateescape" keeps bytes that are not UTF-8


def _lines(path: Path, what: str) -> Iterator[tuple[int, str]]:
    """The non-blank lines of a text file with their numbers (from 1), line ends removed.

    UTF-8 with or without a BOM; LF, CRLF or CR line ends; the last line may lack one. A byte that is
    not UTF-8 (a file saved as Latin-1 or Windows-1252) is a :class:`DataError` naming file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing data file {path}: expected {what}")
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            bad = _NOT_UTF8.search(line)
            if bad:
                raise DataError(f"{path}:{number}: byte 0x{ord(bad.group()) - 0xDC00:02x} at column {bad.start() + 1} "
                                f"is not UTF-8 (expected {what}, encoded as UTF-8); the file looks saved as "
                                f"Latin-1 or Windows-1252: re-save it as UTF-8")
            if line.strip():
                yield number, line


def _has_whitespace(text: str) -> bool:
    """Whether ``text`` holds a character that ``str.split()`` splits on (so TREC files cannot hold it)."""
    return any(ch.isspace() for ch in text)


def read_tsv(path: str | Path, what: str = "id<TAB>text") -> dict[str, str]:
    """Read an ``id<TAB>text`` file (passages or queries) into ``{id: text}``.

    The format is MS MARCO's: one ``id<TAB>text`` per line, no header and **no quoting** (a quote is
    part of the text, as ``ir_datasets`` reads it too), so a text cannot hold a tab or a line break.
    What editors and spreadsheets add is accepted: a BOM, CRLF or CR line ends, no line end after the
    last line, tabs at the end of a line (an empty last column) and spaces around a field. Everything
    else, in any script, comes out exactly as written. A :class:`DataError` naming file and line for:
    bytes that are not UTF-8, a line without exactly 2 fields, an empty id or text, an id containing
    whitespace (TREC qrels and run files, which split on whitespace, could not name it), a repeated id.
    """
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in _lines(Path(path), f"lines of {what}"):
        parts = line.split("\t")
        while len(parts) > 2 and not parts[-1].strip(" "):
            parts.pop()  # tabs at the end of the line: a spreadsheet's empty last column
        if len(parts) != 2:
            if len(parts) > 2:
                hint = (": minirank's TSV is id<TAB>text with no quoting, so a text cannot contain a tab (a "
                        "spreadsheet that put quotes around a field with a tab in it wrote such a line); "
                        "replace the tabs inside texts with spaces")
            else:
                hint = " (no tab on this line: are its fields separated by spaces?)" if " " in line.strip() else ""
            raise DataError(f"{path}:{number}: expected 2 tab-separated fields ({what}), found {len(parts)}{hint}")
        key, text = parts[0].strip(" "), parts[1].strip(" ")
        if not key:
            raise DataError(f"{path}:{number}: empty id (expected {what})")
        if _has_whitespace(key):
            raise DataError(f"{path}:{number}: id {key!r} contains whitespace (expected {what}): TREC qrels and "
                            f"run files separate their fields by whitespace, so none could name this id")
        if not text.strip():
            raise DataError(f"{path}:{number}: empty text for id {key!r} (expected {what})")
        if key in out:
            raise DataError(f"{path}:{number}: id {key!r} appears twice (first on line {first_line[key]})")
        out[key], first_line[key] = text, number
    return out


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read TREC qrels (``qid iteration pid grade``, separated by whitespace) into ``{qid: {pid: grade}}``.

    File conventions as in :func:`read_tsv` (UTF-8 with or without a BOM, any line ends). A grade is an
    integer; a whole-number decimal such as ``2.0`` (how a script saves a float column) is read as one.
    A :class:`DataError` naming file and line for: a line without 4 fields, a grade that is not a whole
    number, a passage judged twice for the same query (trec_eval refuses that too).
    """
    qrels: dict[str, dict[str, int]] = {}
    first_line: dict[tuple[str, str], int] = {}
    for number, line in _lines(Path(path), "TREC qrels lines 'qid 0 pid grade'"):
        parts = line.split()
        if len(parts) != 4:
            raise DataError(f"{path}:{number}: expected 4 fields 'qid 0 pid grade', found {len(parts)}: {line!r}")
        qid, _, pid, grade = parts
        value = _whole(_number(grade))
        if value is None:
            raise DataError(f"{path}:{number}: grade {grade!r} is not an integer (expected a whole number, "
                            f"e.g. 0-3 on TREC DL's scale)")
        if (qid, pid) in first_line:
            raise DataError(f"{path}:{number}: passage {pid!r} is judged twice for query {qid!r} "
                            f"(first on line {first_line[qid, pid]})")
        qrels.setdefault(qid, {})[pid] = value
        first_line[qid, pid] = number
    return qrels


def _number(text: str) -> float | int | None:
    """The number a file's field spells (``'2'``, ``'2.0'``, ``'-1'``, ``'0.25'``), or None."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def check_consistency(queries: dict[str, str], qrels: dict[str, dict[str, int]], passages: Mapping[str, str],
                      where: str) -> None:
    """Every judged query must exist, and every judged passage must be in the corpus."""
    for qid, judged in qrels.items():
        if qid not in queries:
            raise DataError(f"{where}: qrels name unknown query id {qid!r} (not in the queries file)")
        for pid in judged:
            if pid not in passages:
                raise DataError(f"{where}: qrels for query {qid!r} name unknown passage id {pid!r}")


# ---------------------------------------------------------------- judgements and runs built in memory

def _whole(value: object) -> int | None:
    """``value`` as an int if it is a whole number (an int, a numpy int, ``2.0``, ``np.float64(2.0)``), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)) and float(value).is_integer():
        return int(value)
    return None


def check_relevance_level(level: object) -> int:
    """``level`` as an int if it is a whole number >= 1; otherwise a ValueError saying what it is for."""
    value = _whole(level)
    if value is None or value < 1:
        raise ValueError(f"relevance_level must be a whole number >= 1, the lowest grade that binary metrics "
                         f"count as relevant (2 on TREC DL's 0-3 scale, 1 for BEIR); got {level!r} "
                         f"({type(level).__name__})")
    return value


def normalise_id(value: object, what: str = "id") -> str:
    """A query or passage id as a ``str``: strings as they are, integers (numpy's too) in decimal.

    Anything else is a :class:`DataError` naming ``what``, the value and its type: an empty string, a
    float (pandas turns an integer column with a gap into floats, so ``1.0`` is not taken to mean
    ``'1'``), None, NaN.
    """
    if isinstance(value, str):
        if value:
            return str(value)  # numpy's str_ becomes a plain str
        raise DataError(f"{what} '' is empty: expected a non-empty string")
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    raise DataError(f"{what} {value!r} ({type(value).__name__}): expected a string (or an integer, which "
                    f"becomes its decimal string)")


def _by_id(mapping: object, what: str, key_name: str, shape: str, value) -> dict:
    """``{normalise_id(key): value(key, item)}``; two keys that become the same string are an error."""
    if not isinstance(mapping, Mapping):
        raise DataError(f"{what}: expected a mapping {shape}, got {type(mapping).__name__}")
    out: dict = {}
    original: dict[str, object] = {}
    for raw, item in mapping.items():
        key = normalise_id(raw, f"{what}: {key_name}")
        if key in out:
            raise DataError(f"{what}: {key_name}s {original[key]!r} ({type(original[key]).__name__}) and {raw!r} "
                            f"({type(raw).__name__}) both mean {key!r}")
        original[key] = raw
        out[key] = value(key, item)
    return out


def normalise_grades(judged: Mapping, qid: str | None = None) -> dict[str, int]:
    """One query's judgements ``{pid: grade}`` with ``str`` ids and ``int`` grades.

    A grade must be a whole number: an int, a numpy int, or a float such as ``2.0``. Anything else
    (``2.5``, ``"high"``, ``"2"``, None, NaN, True) is a :class:`DataError` naming the query, the
    passage, the value and its type; so is an id that :func:`normalise_id` refuses.
    """
    query = "" if qid is None else f" for query {qid!r}"

    def grade(pid: str, value: object) -> int:
        whole = _whole(value)
        if whole is None:
            raise DataError(f"qrels: grade {value!r} ({type(value).__name__}) of passage {pid!r}{query} is not "
                            f"a whole number: expected an integer grade (e.g. 0-3 on TREC DL's scale)")
        return whole

    return _by_id(judged, "judgements" if qid is None else f"qrels of query {qid!r}", "passage id", "{pid: grade}",
                  grade)


def normalise_qrels(qrels: Mapping) -> dict[str, dict[str, int]]:
    """Judgements ``{qid: {pid: grade}}`` as ``str`` ids and ``int`` grades, however they were built
    (pandas and numpy give ``np.int64`` ids and grades, or ``2.0``); errors as in :func:`normalise_grades`."""
    return _by_id(qrels, "qrels", "query id", "{qid: {pid: grade}}", lambda qid, judged: normalise_grades(judged, qid))


def normalise_run(run: Mapping) -> dict[str, dict[str, float]]:
    """A run ``{qid: {pid: score}}`` as ``str`` ids and ``float`` scores.

    A score is any real number (numpy's floats and ints too; infinities order fine). NaN, which orders
    nothing, and anything that is not a number (a string, None, a tensor: call ``.item()``) are a
    :class:`DataError` naming the query, the passage, the value and its type. A query whose ranking is
    a list instead of ``{pid: score}`` is an error that points to :func:`minirank.retrieval.from_rankings`.
    """
    def scores(qid: str, ranking: object) -> dict[str, float]:
        if not isinstance(ranking, Mapping):
            raise DataError(f"run for query {qid!r}: expected {{pid: score}}, got {type(ranking).__name__}; "
                            f"minirank.retrieval.from_rankings turns ordered lists of ids into a run")
        if all(type(p) is str and p for p in ranking) and all(type(v) is float and v == v for v in ranking.values()):
            return dict(ranking)  # the common case, already clean: skip the checks one by one

        def score(pid: str, value: object) -> float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise DataError(f"run: score {value!r} ({type(value).__name__}) of passage {pid!r} for query "
                                f"{qid!r} is not a number: expected an int or a float")
            if math.isnan(value):
                raise DataError(f"run: score of passage {pid!r} for query {qid!r} is NaN, which cannot be "
                                f"ordered: expected a number")
            return float(value)

        return _by_id(ranking, f"run for query {qid!r}", "passage id", "{pid: score}", score)

    return _by_id(run, "run", "query id", "{qid: {pid: score}}", scores)


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


#: BEIR scores all its collections with pytrec_eval's default relevance level, 1 (the evaluation code
#: of Thakur et al. 2021), and ir_datasets documents no other level for them.
_LEVEL_BY_ID_PREFIX = {"beir/": 1}


def relevance_level_of(dataset, grades: Iterable[int] = ()) -> int:
    """The relevance level of an ``ir_datasets`` dataset, from what ir_datasets says about it, in order:

    1. the ``rel=N`` of its documented official measures (TREC DL 2019/2020: ``RR(rel=2)``);
    2. 1 for BEIR's collections (``beir/...``), as BEIR's own evaluation counts every positive grade;
    3. 1 (trec_eval's default) for a binary scale: neither the qrels definitions
       (``dataset.qrels_defs()``) nor ``grades`` (the grades actually given) go above 1;
    4. otherwise a graded scale with no documented level: 1 as well, with a warning naming the
       grades, since the lowest grade may mean "related, not relevant" (TREC DL's 1) or "out of
       context" (ANTIQUE's 1 on its 1-4 scale). Pass ``relevance_level`` to :func:`from_ir_dataset`.
    """
    documentation = getattr(dataset, "documentation", None)  # local create_dataset fixtures have none
    measures = (documentation() if documentation else {}).get("official_measures") or []
    levels = {int(n) for n in re.findall(r"\brel=(\d+)", " ".join(measures))}
    if len(levels) == 1:
        return levels.pop()
    dataset_id = str(dataset.dataset_id()) if hasattr(dataset, "dataset_id") else ""
    for prefix, level in _LEVEL_BY_ID_PREFIX.items():
        if dataset_id.startswith(prefix):
            return level
    qrels_defs = getattr(dataset, "qrels_defs", None)
    scale = sorted(set(qrels_defs() if qrels_defs else {}) | set(grades))
    if max(scale, default=0) > 1:
        warnings.warn(f"graded judgements {scale} and no documented relevance level: binary metrics will count "
                      f"grades >= 1 as relevant (trec_eval's default); pass relevance_level= to choose "
                      f"(TREC DL's 0-3 scale: 2)", stacklevel=3)
    return 1


def from_ir_dataset(dataset, name: str, split: str = "test", lazy_docs: bool | None = None,
                    relevance_level: int | None = None) -> Collection:
    """Wrap an ``ir_datasets`` dataset (a registered one, or a local ``create_dataset`` fixture).

    ``relevance_level`` (None: :func:`relevance_level_of` the dataset) becomes the collection's.
    """
    queries = {q.query_id: q.text for q in dataset.queries_iter()}
    qrels: dict[str, dict[str, int]] = {}
    for row in dataset.qrels_iter():
        qrels.setdefault(row.query_id, {})[row.doc_id] = int(row.relevance)
    qrels = {qid: judged for qid, judged in qrels.items() if qid in queries}
    if relevance_level is None:
        relevance_level = relevance_level_of(dataset, {g for judged in qrels.values() for g in judged.values()})
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
    return Collection(name, passages, {q: queries[q] for q in qrels}, qrels, split, first_stage,
                      relevance_level)


def load_benchmark(name: str, relevance_level: int | None = None) -> Collection:
    """A real benchmark by short name (``dl19``, ``dl20``, ``scifact``, ``nfcorpus``, ``trec-covid``) or
    any ir_datasets id. Needs the network the first time (ir_datasets downloads and caches the data).
    ``relevance_level``: as in :func:`from_ir_dataset` (None: what ir_datasets documents)."""
    import ir_datasets

    if relevance_level is not None:
        relevance_level = check_relevance_level(relevance_level)  # before a download, not inside one
    dataset_id = BENCHMARKS.get(name, name)
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}: expected one of {sorted(BENCHMARKS)} "
                         f"or an ir_datasets id") from None
    try:
        return from_ir_dataset(dataset, name, relevance_level=relevance_level)
    except Exception as err:  # ir_datasets raises many kinds of error when a download fails
        raise ConnectionError(
            f"could not load benchmark {name!r} ({dataset_id}): {err.__class__.__name__}: {err}. "
            f"ir_datasets downloads its data the first time, so this needs internet access (e.g. Colab); "
            f"offline, use minirank.data.load_course().") from err
