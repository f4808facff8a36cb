"""The training set of chapter 5: windows, their token ids and loss positions, as a ``datasets.Dataset``.

A training *window* (:class:`Window`) is what FIRST (Reddy et al., 2024, §3.2, §4.1) trains on: a query, ``m``
passages in the order the model sees them, and the teacher's ordering. :func:`teacher_windows` draws them from a
first-stage run with the graded qrels (or a stronger reranker's run) as the teacher; :func:`make_example` turns
one into token ids with the loss positions marked, exactly as the reranker's prompt is built at inference;
:func:`examples_dataset` does it for all of them with ``datasets`` (``map``, cached on disk, saved and read back),
and :func:`collate` pads a batch for the trainer (:mod:`minirank.train`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from minirank import prompts as P
from minirank.retrieval import Run, ranked

# ====================================================================== 1. training windows

@dataclass(frozen=True)
class Window:
    """One training window: a query, ``m`` passages in the order the model sees them (identifiers
    A, B, ...), the teacher's ordering (indices into the window, best first) and graded labels.

    ``labels`` are the qrels grades (0-3) when the teacher is the qrels; for a teacher run they are
    ``m - rank`` (strict). Pairs with equal labels carry no preference: RankNet skips them.
    """

    qid: str
    query: str
    pids: tuple[str, ...]
    texts: tuple[str, ...]
    order: tuple[int, ...]
    labels: tuple[float, ...]


def check_permutation(order: Sequence, n: int, what: str = "teacher ordering") -> list[int]:
    """``order`` as a list of ints if it is a permutation of ``0..n-1``; else a ValueError saying what is wrong."""
    try:
        values = [int(i) for i in order]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {list(order)!r} must hold integer positions 0..{n - 1}") from None
    seen: set[int] = set()
    duplicates = sorted({i for i in values if i in seen or seen.add(i)})
    outside = sorted(i for i in set(values) if not 0 <= i < n)
    missing = sorted(set(range(n)) - set(values))
    if duplicates or outside or missing or len(values) != n:
        problems = []
        if duplicates:
            problems.append(f"repeats {duplicates}")
        if outside:
            problems.append(f"has positions outside 0..{n - 1}: {outside}")
        if missing:
            problems.append(f"misses {missing}")
        raise ValueError(f"{what} {values} is not a permutation of the {n} window positions 0..{n - 1}: "
                         f"it {', '.join(problems)}. Each passage must appear exactly once.")
    return values


def make_window(qid: str, query: str, pids: Sequence[str], texts: Sequence[str], order: Sequence[int],
                labels: Sequence[float] | None = None) -> Window:
    """A checked :class:`Window`; ``order`` must be a permutation of the window's positions."""
    if len(pids) != len(texts):
        raise ValueError(f"query {qid!r}: {len(pids)} passage ids but {len(texts)} texts")
    if len(pids) < 2:
        raise ValueError(f"query {qid!r}: a training window needs at least 2 passages, got {len(pids)}")
    P.identifiers(len(pids))  # more passages than identifiers A..Z: fails here, with the reason
    order = check_permutation(order, len(pids), f"query {qid!r}: teacher ordering")
    if labels is None:
        rank = {i: r for r, i in enumerate(order)}
        labels = [float(len(pids) - rank[i]) for i in range(len(pids))]
    if len(labels) != len(pids):
        raise ValueError(f"query {qid!r}: {len(labels)} labels for {len(pids)} passages")
    return Window(qid, query, tuple(pids), tuple(texts), tuple(order), tuple(float(x) for x in labels))


def teacher_windows(collection, candidates: Run, window: int = 10, windows_per_query: int = 1,
                    teacher: Run | None = None, seed: int = 0, shuffle: bool = False) -> list[Window]:
    """Training windows over each query's first-stage candidates, with the teacher's ordering.

    Window 0 of a query is its top ``window`` candidates in first-stage order (what the reranker sees first
    at test time); windows 1.. are random subsets of all its candidates (seeded by ``seed``, query and window),
    shown in first-stage order, or with ``shuffle`` in a random order: RankZephyr's augmentation against
    position bias (Pradeep et al., 2023b; FIRST §4.1 fine-tunes on RankZephyr's data, and PE-Rank's
    implementation section follows it "by randomly shuffling document order"), so that the model cannot
    learn "keep the first stage's order" as the answer. The teacher is the collection's graded qrels (ties between
    equal grades kept in first-stage order; unjudged passages count as 0) or, when given, a stronger
    reranker's ``teacher`` run over the same candidates. Windows whose passages all share one grade
    teach no order and are skipped.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 passages, got {window}")
    if windows_per_query < 1:
        raise ValueError(f"windows_per_query must be >= 1, got {windows_per_query}")
    out: list[Window] = []
    for qid in sorted(candidates):
        pool = ranked(candidates[qid])
        if len(pool) < 2:
            continue
        if teacher is None and qid not in collection.qrels:
            raise KeyError(f"query {qid!r} has candidates but no judgements in {collection.name} "
                           f"({collection.split}); pass a teacher run or use a judged split")
        seen: set[tuple[str, ...]] = set()
        for w in range(windows_per_query):
            if w == 0:
                chosen = pool[:window]
            else:
                rng = random.Random(f"{seed}:{qid}:{w}")
                picked = sorted(rng.sample(range(len(pool)), min(window, len(pool))))
                if shuffle:
                    rng.shuffle(picked)
                chosen = [pool[i] for i in picked]
            key = tuple(chosen)
            if key in seen:
                continue
            seen.add(key)
            if teacher is None:
                grades = [float(max(collection.qrels[qid].get(p, 0), 0)) for p in chosen]
                if len(set(grades)) < 2:
                    continue
                order = sorted(range(len(chosen)), key=lambda i: -grades[i])  # stable: ties by first stage
                labels = grades
            else:
                scores = teacher.get(qid, {})
                absent = [p for p in chosen if p not in scores]
                if absent:
                    raise KeyError(f"teacher run has no score for query {qid!r}, passages {absent[:3]}: "
                                   f"the teacher must rerank the same candidates")
                position = {p: i for i, p in enumerate(ranked({p: scores[p] for p in chosen}))}
                order = sorted(range(len(chosen)), key=lambda i: position[chosen[i]])
                labels = None
            out.append(make_window(qid, collection.queries[qid], chosen,
                                   [collection.passages[p] for p in chosen], order, labels))
    if not out:
        raise ValueError("no training windows: every window had passages of a single grade (or no candidates)")
    return out


# ====================================================================== 2. windows -> token ids

def make_example(window: Window, tokenizer, max_passage_tokens: int | None = 32,
                 max_length: int | None = None, style: str = "alpha") -> dict:
    """Token ids and loss positions of one window.

    * ``input_ids``: the prompt of :func:`minirank.prompts.build_prompt` (ending with ``[``), tokenized
      exactly as at inference, followed by the target permutation and the end-of-turn token;
    * ``labels``: -100 on the prompt (no loss), the target's own ids on the target: eq. 1 covers the
      permutation only;
    * ``rank_position``: the prompt's last position (the ``[``). Its logits predict the first
      identifier; FIRST reads them at inference, and eq. 2 trains them;
    * ``identifier_ids``, ``target_ranks`` (1 = best), ``grades``: one entry per passage, in window order.

    ``max_length`` (the model's context): a longer example is a ValueError, never silently cut.
    """
    m = len(window.pids)
    prompt = P.build_prompt(window.query, list(window.texts), tokenizer, style, max_passage_tokens)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=not P.has_chat_template(tokenizer))
    target = P.answer_text(window.order, style)  # 'B] > [A] > [C]': what follows the prompt's '['
    target_ids = tokenizer.encode(target, add_special_tokens=False)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        target_ids = target_ids + [int(eos)]  # learn to stop, as RankZephyr's training does
    identifier_ids = P.identifier_token_ids(tokenizer, P.identifiers(m, style))
    if target_ids[0] != identifier_ids[window.order[0]]:
        raise ValueError(f"query {window.qid!r}: the target {target[:20]!r} does not start with the single "
                         f"token of identifier {P.identifiers(m, style)[window.order[0]]!r} for this tokenizer")
    total = len(prompt_ids) + len(target_ids)
    if max_length is not None and total > max_length:
        raise ValueError(f"query {window.qid!r}: a window of {m} passages takes {len(prompt_ids)} prompt + "
                         f"{len(target_ids)} target = {total} tokens, longer than the model's context of "
                         f"{max_length}; use fewer passages per window or a smaller max_passage_tokens")
    ranks = [0] * m
    for r, i in enumerate(window.order, start=1):
        ranks[i] = r
    return {"qid": window.qid, "prompt": prompt, "target": target,
            "input_ids": prompt_ids + target_ids, "labels": [-100] * len(prompt_ids) + target_ids,
            "rank_position": len(prompt_ids) - 1, "identifier_ids": identifier_ids,
            "target_ranks": ranks, "grades": list(window.labels)}


def build_examples(windows: Sequence[Window], tokenizer, max_passage_tokens: int | None = 32,
                   max_length: int | None = None, style: str = "alpha") -> list[dict]:
    return [make_example(w, tokenizer, max_passage_tokens, max_length, style) for w in windows]


#: The columns a training example holds for the model (the rest, qid/prompt/target, are for people reading it).
EXAMPLE_COLUMNS = ("input_ids", "labels", "rank_position", "identifier_ids", "target_ranks", "grades")


def data_hash(examples) -> str:
    """SHA-256 of what the model is trained on (token ids, loss positions, targets): same hash, same data.
    ``examples``: a list of :func:`make_example` dicts or the ``datasets.Dataset`` of :func:`examples_dataset`
    (the same rows hash the same either way)."""
    digest = hashlib.sha256()
    for ex in examples:
        row = {k: ex[k] for k in EXAMPLE_COLUMNS}
        row["grades"] = [float(g) for g in row["grades"]]
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()


# ====================================================================== 2b. the training set as a datasets.Dataset

@contextlib.contextmanager
def quiet_datasets():
    """``datasets`` without its progress bars (notebooks store their outputs; a progress bar is not one)."""
    from datasets import disable_progress_bars, enable_progress_bars, is_progress_bar_enabled

    shown = is_progress_bar_enabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if shown:
            enable_progress_bars()


def windows_dataset(windows: Sequence[Window]):
    """The windows as a ``datasets.Dataset``: one row per window, columns ``qid, query, pids, texts, order,
    labels`` (the fields of :class:`Window`)."""
    from datasets import Dataset

    return Dataset.from_list([dataclasses.asdict(w) for w in windows])


def _tokenize_row(row: Mapping, tokenizer, max_passage_tokens, max_length, style) -> dict:
    window = Window(row["qid"], row["query"], tuple(row["pids"]), tuple(row["texts"]), tuple(row["order"]),
                    tuple(row["labels"]))
    return make_example(window, tokenizer, max_passage_tokens, max_length, style)


def _example_features():
    """The column types of a training example (stated, not inferred: the windows' float ``labels`` (grades) would
    otherwise make the examples' token ``labels`` floats)."""
    from datasets import Features, List, Value

    ints = List(Value("int64"))
    return Features({"qid": Value("string"), "prompt": Value("string"), "target": Value("string"),
                     "input_ids": ints, "labels": ints, "rank_position": Value("int64"), "identifier_ids": ints,
                     "target_ranks": ints, "grades": List(Value("float64"))})


def examples_dataset(windows, tokenizer, max_passage_tokens: int | None = 32, max_length: int | None = None,
                     style: str = "alpha", cache_dir: str | Path | None = None):
    """The training set as a ``datasets.Dataset``: :func:`windows_dataset` (or a Dataset of window rows) mapped
    through :func:`make_example`, one row per window with the columns of :data:`EXAMPLE_COLUMNS` plus ``qid``,
    ``prompt`` and ``target``. ``cache_dir``: where ``datasets`` keeps the tokenized rows (a second call with
    the same windows and tokenizer reads them back instead of tokenizing again); by default in memory.
    Errors of :func:`make_example` (a window too long for the context, an identifier that is not one token)
    name the query."""
    from datasets import Dataset

    rows = windows if isinstance(windows, Dataset) else windows_dataset(windows)
    if cache_dir is not None:  # a Dataset on disk: map() then caches its output next to it
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        source = Path(cache_dir) / f"windows-{_rows_hash(rows)[:16]}"  # other windows: another folder
        with quiet_datasets():
            if not source.exists():
                rows.save_to_disk(str(source))
            rows = load_from_disk(source)
    with quiet_datasets():
        return rows.map(_tokenize_row, remove_columns=rows.column_names, features=_example_features(),
                        fn_kwargs={"tokenizer": tokenizer, "max_passage_tokens": max_passage_tokens,
                                   "max_length": max_length, "style": style})


def _rows_hash(rows) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()


#: The sub-folder of a run's checkpoint folder that keeps its training rows (``datasets.Dataset.save_to_disk``).
DATASET_FOLDER = "dataset"


def load_from_disk(path: str | Path):
    """A Dataset saved with ``Dataset.save_to_disk`` (by :func:`examples_dataset` or by ``minirank.train.train``),
    read back."""
    from datasets import load_from_disk as load

    return load(str(path))


def as_dataset(examples):
    """``examples`` as a ``datasets.Dataset`` (a list of :func:`make_example` dicts is converted; a Dataset is
    returned as it is). What the trainer reads."""
    from datasets import Dataset

    if isinstance(examples, Dataset):
        return examples
    return Dataset.from_list([dict(ex) for ex in examples])


def collate(examples: Sequence[Mapping], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch (training positions start at 0 on every row, so no position ids are needed)."""
    width = max(len(ex["input_ids"]) for ex in examples)
    m = max(len(ex["identifier_ids"]) for ex in examples)
    def pad(rows, value, size):
        return torch.tensor([list(r) + [value] * (size - len(r)) for r in rows])
    return {
        "input_ids": pad([ex["input_ids"] for ex in examples], pad_id, width),
        "attention_mask": pad([[1] * len(ex["input_ids"]) for ex in examples], 0, width),
        "labels": pad([ex["labels"] for ex in examples], -100, width),
        "rank_position": torch.tensor([ex["rank_position"] for ex in examples]),
        "identifier_ids": pad([ex["identifier_ids"] for ex in examples], 0, m),
        "candidate_mask": pad([[True] * len(ex["identifier_ids"]) for ex in examples], False, m),
        "target_ranks": pad([ex["target_ranks"] for ex in examples], 0, m),
        "grades": pad([[float(g) for g in ex["grades"]] for ex in examples], 0.0, m).float(),
    }
