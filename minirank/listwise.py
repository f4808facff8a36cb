"""Listwise reranking with an LLM: sliding windows, generated permutations, and FIRST (chapters 2 and 3).

Both rerankers here share everything except the one step that differs (FIRST §3.1-3.2):

* :class:`GenerationReranker` greedily *writes* the permutation ``[B] > [A] > [C]`` for each window
  and parses it (repairing malformed answers and counting the repairs);
* :class:`FirstReranker` runs *one* forward pass per window and sorts the window's passages by the
  logits of their identifier tokens at the first answer position.

Same candidates, same prompt (:func:`minirank.prompts.build_prompt`), same windows
(:func:`window_schedule`), same batching: the comparison of chapter 3 (FIRST §4.3) is fair by
construction. Importing this module adds the rows ``listwise-gen`` and ``first`` to ``minirank demo``.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence

import torch
from tqdm.auto import tqdm

from minirank import prompts as P
from minirank.device import synchronize
from minirank.forward import cache_kwargs, device_of, last_logits_kwargs, positions, returned_cache
from minirank.retrieval import Run, from_rankings, ranked

REPAIR_KINDS = ("duplicates", "out_of_range", "missing", "no_identifiers")


# ---------------------------------------------------------------- the sliding window (FIRST §3.1)

def _check_window(window: int, stride: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        raise ValueError(f"window must be a positive integer, got {window!r}")
    if isinstance(stride, bool) or not isinstance(stride, int) or stride <= 0:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would skip positions between windows; "
                         f"use stride <= window (RankGPT uses window 20, stride 10)")


def window_schedule(k: int, window: int = 20, stride: int = 10) -> list[tuple[int, int]]:
    """The ``(start, end)`` windows over the top ``k``, from the back of the list to the front (§3.1).

    The first window is the last ``window`` positions; each next one moves ``stride`` positions up.
    Unlike RankGPT's loop, the last window always starts at 0 (full width where the list allows), so
    the top of the list is compared even when ``k - window`` is not a multiple of ``stride``; a list
    no longer than ``window`` gets one window over everything; ``k`` of 0 or 1 gets no windows.
    """
    _check_window(window, stride)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    if k <= 1:
        return []
    schedule = []
    end = k
    while end - window > 0:
        schedule.append((end - window, end))
        end -= stride
    schedule.append((0, min(window, k)))
    return schedule


# ---------------------------------------------------------------- reading a generated permutation

def parse_permutation(text: str, n: int, style: str = "alpha") -> tuple[list[int], dict[str, int]]:
    """Turn generated text such as ``'[B] > [A] > [C]'`` into a permutation of ``range(n)``.

    Keeps the first mention of each valid identifier, in order; drops repeats, identifiers outside
    the window and any free text; appends the identifiers never mentioned in input order (so a bad
    answer degrades to the first-stage order). ``repairs`` counts each kind of fix.
    """
    if style not in P.STYLES:
        raise ValueError(f"unknown identifier style {style!r}: expected one of {P.STYLES}")
    labels = P.identifiers(n, style)
    index = {label: i for i, label in enumerate(labels)}
    repairs = dict.fromkeys(REPAIR_KINDS, 0)
    order: list[int] = []
    seen: set[int] = set()
    found = P.IDENTIFIER_PATTERNS[style].findall(text or "")
    for label in found:
        if style == "numeric":
            label = str(int(label))  # '[01]' means [1]
        i = index.get(label)
        if i is None:
            repairs["out_of_range"] += 1
        elif i in seen:
            repairs["duplicates"] += 1
        else:
            seen.add(i)
            order.append(i)
    missing = [i for i in range(n) if i not in seen]
    repairs["missing"] = len(missing)
    repairs["no_identifiers"] = int(not found and n > 0)
    return order + missing, repairs


# ---------------------------------------------------------------- the shared reranking loop

class ListwiseReranker:
    """Sliding-window listwise reranking (FIRST §3.1); subclasses say how one window is ordered.

    ``stride`` defaults to half the window (RankGPT's 20 / 10).
    """

    method = "listwise"

    def __init__(self, model, tokenizer, window: int = 20, stride: int | None = None, style: str = "alpha",
                 max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS, batch_size: int = 8):
        stride = max(1, window // 2) if stride is None and isinstance(window, int) else stride
        _check_window(window, stride)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.labels = P.identifiers(window, style)  # a window wider than the style allows fails here
        self.model, self.tokenizer = model, tokenizer
        self.window, self.stride, self.style = window, stride, style
        self.max_passage_tokens, self.batch_size = max_passage_tokens, batch_size
        self.reset_stats()

    def reset_stats(self) -> None:
        """Zero the counters in ``self.stats`` (windows, repairs, generated tokens, seconds)."""
        self.stats = {"method": self.method, "queries": 0, "windows": 0, "repairs": dict.fromkeys(REPAIR_KINDS, 0),
                      "repaired_windows": 0, "generated_tokens": 0, "seconds": 0.0}

    def prompt(self, query: str, texts: Sequence[str]) -> str:
        return P.build_prompt(query, texts, self.tokenizer, self.style, self.max_passage_tokens)

    def order_windows(self, prompts: Sequence[str], sizes: Sequence[int]) -> list[list[int]]:
        """One permutation (indices into the window, best first) per prompt."""
        raise NotImplementedError

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))

    def rerank(self, collection_or_queries, candidates: Run, k: int | None = None,
               passages: Mapping[str, str] | None = None, progress: bool = False) -> Run:
        """Rerank the top ``k`` (default: all) candidates of every query; returns a run whose scores
        (n, n-1, ..., 1) reproduce the new order, the rest keeping their first-stage order below.

        ``collection_or_queries``: a :class:`minirank.data.Collection` (or anything with ``.queries``
        and ``.passages``), or a ``{qid: query text}`` mapping together with ``passages``.
        Windows of every query are batched together step by step (window i of all queries, then
        window i+1), since each window of a query depends on the one before. Counters: ``self.stats``;
        ``progress=True`` shows a progress bar over windows.
        """
        queries, texts = _queries_and_passages(collection_or_queries, passages)
        if not candidates:
            raise ValueError("no candidates to rerank: the candidate run is empty")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise ValueError(f"k must be a non-negative integer or None, got {k!r}")
        orders: dict[str, list[str]] = {}
        schedules: dict[str, list[tuple[int, int]]] = {}
        for qid, scores in candidates.items():
            if qid not in queries:
                raise KeyError(f"candidates name query {qid!r}, which is not among the {len(queries)} queries")
            orders[qid] = ranked(scores)
            depth = len(orders[qid]) if k is None else min(k, len(orders[qid]))
            schedules[qid] = [(s, e) for s, e in window_schedule(depth, self.window, self.stride) if e - s > 1]
        self.reset_stats()
        self.stats["queries"] = len(orders)
        bar = tqdm(total=sum(len(w) for w in schedules.values()), desc=self.method, unit="window",
                   disable=not progress, leave=False)
        start = time.perf_counter()
        step = 0
        while True:
            jobs = [(qid, schedules[qid][step]) for qid in orders if step < len(schedules[qid])]
            if not jobs:
                break
            window_texts = []
            for qid, (s, e) in jobs:
                try:
                    window_texts.append([texts[pid] for pid in orders[qid][s:e]])
                except KeyError as err:
                    raise KeyError(f"query {qid!r}: candidate passage {err.args[0]!r} is not in the "
                                   f"collection's passages") from None
            prompts = [self.prompt(queries[qid], w) for (qid, _), w in zip(jobs, window_texts)]
            sizes = [e - s for _, (s, e) in jobs]
            permutations = []
            for part in self._batches(len(prompts)):
                permutations += self.order_windows(prompts[part], sizes[part])
                bar.update(part.stop - part.start)
            for (qid, (s, e)), perm in zip(jobs, permutations):
                window = orders[qid][s:e]
                orders[qid][s:e] = [window[i] for i in perm]
            self.stats["windows"] += len(jobs)
            step += 1
        synchronize(device_of(self.model))  # GPU timings must wait for queued work
        self.stats["seconds"] = time.perf_counter() - start
        bar.close()
        return from_rankings(orders)


def _queries_and_passages(source, passages):
    if hasattr(source, "queries") and hasattr(source, "passages"):
        return source.queries, (passages if passages is not None else source.passages)
    if isinstance(source, Mapping):
        if passages is None:
            raise ValueError("rerank() got a mapping of queries but no passages: pass passages={pid: text} "
                             "or a Collection")
        return source, passages
    raise TypeError(f"rerank() needs a Collection or a {{qid: query}} mapping, got {type(source).__name__}")


# ---------------------------------------------------------------- FIRST: one forward pass per window

class FirstReranker(ListwiseReranker):
    """FIRST (§3.2): rank a window by the logits of its identifier tokens at the first answer token.

    One forward pass per window; no decoding. Ties keep the input order.
    """

    method = "first"

    def __init__(self, model, tokenizer, window: int = 20, stride: int | None = None, style: str = "alpha",
                 max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS, batch_size: int = 8):
        super().__init__(model, tokenizer, window, stride, style, max_passage_tokens, batch_size)
        # fail at construction, not mid-run, when an identifier is not one token ('[10]')
        self.token_ids = P.identifier_token_ids(tokenizer, self.labels)

    @torch.inference_mode()
    def score_windows(self, prompts: Sequence[str], n_per_prompt: Sequence[int] | int) -> list[list[float]]:
        """For each prompt, the logits of its first ``n`` identifiers at the last prompt position."""
        if isinstance(n_per_prompt, int):
            n_per_prompt = [n_per_prompt] * len(prompts)
        if len(n_per_prompt) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(n_per_prompt)} window sizes")
        for n in n_per_prompt:
            if n < 1 or n > len(self.token_ids):
                raise ValueError(f"a window of {n} passages: expected 1..{len(self.token_ids)} (window={self.window})")
        device = device_of(self.model)
        extra = last_logits_kwargs(self.model)
        scores: list[list[float]] = []
        for part in self._batches(len(prompts)):
            ids, mask = P.encode(self.tokenizer, prompts[part], device)
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=False, **extra)
            last = out.logits[:, -1, :].float()
            chosen = last[:, self.token_ids].cpu()
            scores.extend(row[:n].tolist() for row, n in zip(chosen, n_per_prompt[part]))
        return scores

    def order_windows(self, prompts, sizes):
        orders = []
        for row in self.score_windows(prompts, sizes):
            orders.append(sorted(range(len(row)), key=lambda i: -row[i]))  # stable: ties keep input order
        return orders


# ---------------------------------------------------------------- generation: write the permutation

class GenerationReranker(ListwiseReranker):
    """Listwise reranking by generation (§3.1): greedily decode ``B] > [A] > ...`` and parse it.

    ``max_new_tokens`` defaults to the length of a complete answer for the window plus a margin.
    Answers are repaired by :func:`parse_permutation`; ``stats['repairs']`` sums the repairs.
    """

    method = "listwise-gen"

    def __init__(self, model, tokenizer, window: int = 20, stride: int | None = None, style: str = "alpha",
                 max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS,
                 max_new_tokens: int | None = None, batch_size: int = 8):
        super().__init__(model, tokenizer, window, stride, style, max_passage_tokens, batch_size)
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (or None), got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.last_texts: list[str] = []

    def answer_budget(self, n: int) -> int:
        """Tokens a complete answer for ``n`` passages takes (after the prompt's ``[``), plus a margin."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        ideal = " > ".join(P.bracket(x) for x in P.identifiers(n, self.style))[1:]
        return len(self.tokenizer.encode(ideal, add_special_tokens=False)) + 4

    def _stop_ids(self) -> set[int]:
        stop = set()
        for source in (self.tokenizer, getattr(self.model, "generation_config", None)):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                stop.add(value)
            elif isinstance(value, (list, tuple)):
                stop.update(int(v) for v in value)
        return stop

    @torch.inference_mode()
    def generate_windows(self, prompts: Sequence[str], n_per_prompt: Sequence[int] | int) -> list[str]:
        """Greedy continuations of ``prompts`` (the text after the prompt's ``[``), batched, left-padded."""
        if isinstance(n_per_prompt, int):
            n_per_prompt = [n_per_prompt] * len(prompts)
        texts: list[str] = []
        for part in self._batches(len(prompts)):
            budget = max(self.answer_budget(n) for n in n_per_prompt[part])
            texts.extend(self._greedy(prompts[part], budget))
        self.last_texts = texts
        return texts

    def _greedy(self, batch: Sequence[str], max_new_tokens: int) -> list[str]:
        device = device_of(self.model)
        ids, mask = P.encode(self.tokenizer, batch, device)
        stop, pad = self._stop_ids(), P.pad_token_id(self.tokenizer)
        extra = last_logits_kwargs(self.model)
        generated: list[list[int]] = [[] for _ in batch]
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)
        step_ids, step_pos, past = ids, positions(mask), None
        for _ in range(max_new_tokens):
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                             **cache_kwargs(self.model, past), **extra)
            nxt = out.logits[:, -1, :].argmax(-1)
            for row, token in enumerate(nxt.tolist()):
                if done[row]:
                    continue
                if token in stop:
                    done[row] = True
                else:
                    generated[row].append(token)
                    self.stats["generated_tokens"] += 1
            if bool(done.all()):
                break
            nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            past = returned_cache(out)
            if past is None:  # a model without a cache sees the whole sequence again
                step_ids, step_pos = ids, positions(mask)
            else:
                step_ids, step_pos = nxt[:, None], mask.sum(-1, keepdim=True) - 1
        return [self.tokenizer.decode(g, skip_special_tokens=True) for g in generated]

    def order_windows(self, prompts, sizes):
        orders = []
        for text, n in zip(self.generate_windows(prompts, sizes), sizes):
            order, repairs = parse_permutation("[" + text, n, self.style)  # the prompt holds the '['
            for kind, count in repairs.items():
                self.stats["repairs"][kind] += count
            if any(repairs.values()):
                self.stats["repaired_windows"] += 1
            orders.append(order)
        return orders


# ---------------------------------------------------------------- rows of `minirank demo`

@functools.lru_cache(maxsize=2)
def shared_model(name: str | None = None):
    """``(model, tokenizer)`` loaded once per process and shared by the demo's rows."""
    from minirank.models import load

    return load(name)


#: Passages are cut to this many tokens in the demo's rows: a 20-passage window is then about 1,400
#: tokens, which keeps `minirank demo` to a few minutes on a laptop CPU.
DEMO_PASSAGE_TOKENS = 64


def _demo_row(cls):
    def rerank(collection, candidates: Run, model_name: str | None):
        model, tokenizer = shared_model(model_name)
        reranker = cls(model, tokenizer, max_passage_tokens=DEMO_PASSAGE_TOKENS)
        run = reranker.rerank(collection, candidates, progress=True)
        # `seconds` is the reranking alone, without the one-time model load that the first LLM row would pay
        extra = {"seconds": reranker.stats["seconds"], "windows": reranker.stats["windows"],
                 "repairs": reranker.stats["repaired_windows"]}
        return run, extra

    rerank.__name__ = f"demo_{cls.method.replace('-', '_')}"
    return rerank


def _register() -> None:
    from minirank.demo import RERANKERS

    RERANKERS.setdefault("listwise-gen", _demo_row(GenerationReranker))
    RERANKERS.setdefault("first", _demo_row(FirstReranker))


_register()
