"""Listwise reranking with an LLM: sliding windows and generated permutations (chapter 2).

:class:`ListwiseReranker` is the sliding-window loop of FIRST §3.1 (RankGPT's): windows of ``window``
candidates from the bottom of the list to the top, ``stride`` positions apart. It hands each method
:class:`Window` records (the query, the window's passage ids and texts, and their positions in the
list) and asks for one permutation per window; it never sees a prompt. So a method that speaks text
and one that speaks passage embeddings (PE-Rank, chapter 7) share the same loop.

:class:`TextListwiseReranker` adds the prompt (:func:`minirank.prompts.build_prompt`), shared by

* :class:`GenerationReranker` here, which greedily *writes* the permutation ``[B] > [A] > [C]`` and
  parses it (repairing malformed answers and counting the repairs), and
* :class:`minirank.first.FirstReranker` (chapter 3), which reads the logits of the identifier tokens
  at the first answer position from one forward pass.

Same candidates, same prompt, same windows, same batching: the comparison of chapter 3 (FIRST §4.3)
is fair by construction.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from minirank import prompts as P
from minirank.device import pick_batch_size, synchronize
from minirank.forward import cache_kwargs, context_length, device_of, last_logits_kwargs, positions, returned_cache
from minirank.rerank import REPAIR_KINDS, candidate_orders, check_depth, new_stats, queries_and_passages
from minirank.retrieval import Run, from_rankings

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

@dataclass(frozen=True)
class Window:
    """One window of one query, as the loop hands it to a method: positions ``start:end`` of the
    query's current list, best first; ``pids`` and ``texts`` in that order (identifiers A, B, ...)."""

    qid: str
    query: str
    pids: tuple[str, ...]
    texts: tuple[str, ...]
    start: int
    end: int

    @property
    def size(self) -> int:
        return len(self.pids)


class ListwiseReranker:
    """Sliding-window listwise reranking (FIRST §3.1); subclasses order one window (:meth:`order_windows`).

    ``stride`` defaults to half the window (RankGPT's 20 / 10); ``stride == window`` makes windows
    that never overlap, so a passage below the first window can never reach the top: it is allowed
    (an exercise uses it) with a warning. ``batch_size`` windows go to the model at once (default:
    :func:`minirank.device.pick_batch_size` for the model's device: 1 on a CPU, 8 on a GPU).
    """

    name = "listwise"

    def __init__(self, window: int = 20, stride: int | None = None, batch_size: int | None = None):
        stride = max(1, window // 2) if stride is None and isinstance(window, int) else stride
        _check_window(window, stride)
        if stride == window and window > 1:
            warnings.warn(f"stride {stride} == window {window}: windows do not overlap, so a passage "
                          f"below the first window can never move above it; use stride < window "
                          f"(RankGPT: window 20, stride 10)", UserWarning, stacklevel=3)
        if batch_size is None:
            model = getattr(self, "model", None)
            batch_size = pick_batch_size(device_of(model) if model is not None else "cpu")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.window, self.stride, self.batch_size = window, stride, batch_size
        self.stats = new_stats(self.name)

    def order_windows(self, windows: Sequence[Window]) -> list[list[int]]:
        """One permutation (indices into the window, best first) per window, in the same order."""
        raise NotImplementedError

    def _batches(self, n: int):
        for start in range(0, n, self.batch_size):
            yield slice(start, min(n, start + self.batch_size))

    def rerank(self, queries, candidates: Run, passages: Mapping[str, str] | None = None, *,
               k: int | None = None, progress: bool = False) -> Run:
        """Rerank the top ``k`` (default: all) candidates of every query; returns a run whose scores
        (n, n-1, ..., 1) reproduce the new order, the rest keeping their first-stage order below.

        ``queries``: a :class:`minirank.data.Collection` (its passages are used unless ``passages``
        is given), or a ``{qid: query text}`` mapping together with ``passages``. Every query and
        candidate id must be known (KeyError naming it). Windows of every query are batched together
        step by step (window i of all queries, then window i+1), since each window of a query depends
        on the one before. Counters: ``self.stats`` (:func:`minirank.rerank.new_stats`);
        ``progress=True`` shows a progress bar over windows.
        """
        queries, texts = queries_and_passages(queries, passages)
        check_depth(k)
        orders = candidate_orders(queries, candidates, texts)
        schedules = {}
        for qid, order in orders.items():
            depth = len(order) if k is None else min(k, len(order))
            schedules[qid] = [(s, e) for s, e in window_schedule(depth, self.window, self.stride) if e - s > 1]
        self.stats = new_stats(self.name)
        self.stats["queries"] = len(orders)
        self.stats["candidates"] = sum(len(o) for o in orders.values())
        bar = tqdm(total=sum(len(w) for w in schedules.values()), desc=self.name, unit="window",
                   disable=not progress, leave=False)
        self._bar = bar if progress else None  # methods may show progress inside a batch (see _greedy)
        start = time.perf_counter()
        step = 0
        while True:
            jobs = [(qid, schedules[qid][step]) for qid in orders if step < len(schedules[qid])]
            if not jobs:
                break
            windows = [Window(qid, queries[qid], tuple(orders[qid][s:e]), tuple(texts[p] for p in orders[qid][s:e]), s, e)
                       for qid, (s, e) in jobs]
            permutations = []
            for part in self._batches(len(windows)):
                found = self.order_windows(windows[part])
                if len(found) != part.stop - part.start:
                    raise RuntimeError(f"{type(self).__name__}.order_windows returned {len(found)} orders "
                                       f"for {part.stop - part.start} windows")
                permutations += found
                bar.update(part.stop - part.start)
            for w, perm in zip(windows, permutations):
                if sorted(perm) != list(range(w.size)):
                    raise RuntimeError(f"{type(self).__name__} returned {perm} for a window of {w.size} "
                                       f"passages: not a permutation of 0..{w.size - 1}")
                orders[w.qid][w.start:w.end] = [w.pids[i] for i in perm]
            self.stats["windows"] += len(jobs)
            step += 1
        self._synchronize()
        self.stats["seconds"] = time.perf_counter() - start
        bar.close()
        self._bar = None
        return from_rankings(orders)

    def _synchronize(self) -> None:
        """GPU timings must wait for queued work (no-op for rankers without a model)."""
        model = getattr(self, "model", None)
        if model is not None:
            synchronize(device_of(model))


class TextListwiseReranker(ListwiseReranker):
    """A listwise reranker that shows the model a text prompt per window (chapters 2-3).

    ``max_passage_tokens`` cuts each passage (default :data:`minirank.prompts.DEFAULT_MAX_PASSAGE_TOKENS`,
    the cut of ``minirank demo`` and the README's table). A prompt longer than the model's context
    (its ``max_position_embeddings``) is refused before any model call, naming the query and saying
    which cut would fit; ``stats["prompts_refused"]`` is never silently non-zero.
    """

    def __init__(self, model, tokenizer, window: int = 20, stride: int | None = None, style: str = "alpha",
                 max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS, batch_size: int | None = None):
        self.model, self.tokenizer, self.style = model, tokenizer, style
        super().__init__(window, stride, batch_size)
        self.labels = P.identifiers(window, style)  # a window wider than the style allows fails here
        self.max_passage_tokens = max_passage_tokens

    def prompt(self, query: str, texts: Sequence[str]) -> str:
        return P.build_prompt(query, texts, self.tokenizer, self.style, self.max_passage_tokens)

    def prompts_of(self, windows: Sequence[Window]) -> list[str]:
        return [self.prompt(w.query, w.texts) for w in windows]

    def _encode(self, prompts: Sequence[str], room: int = 0):
        """Left-padded ids and mask of ``prompts``; refuses a prompt that (with ``room`` new tokens)
        does not fit the model's context, and counts the prompt tokens processed."""
        ids, mask = P.encode(self.tokenizer, prompts, device_of(self.model))
        limit = context_length(self.model)
        lengths = mask.sum(-1).tolist()
        if limit is not None:
            for prompt, length in zip(prompts, lengths):
                if length + room > limit:
                    raise ValueError(
                        f"a prompt of {length} tokens{f' (+{room} to generate)' if room else ''} does not fit "
                        f"the model's context of {limit} tokens (max_passage_tokens={self.max_passage_tokens}, "
                        f"window={self.window}); cut passages shorter (max_passage_tokens) or use a smaller "
                        f"window. Prompt starts: {prompt[:80]!r}")
        self.stats["tokens_processed"] += int(sum(lengths))
        return ids, mask


# ---------------------------------------------------------------- generation: write the permutation

class GenerationReranker(TextListwiseReranker):
    """Listwise reranking by generation (§3.1): greedily decode ``B] > [A] > ...`` and parse it.

    ``max_new_tokens`` defaults to the length of a complete answer for the window plus a margin.
    Answers are repaired by :func:`parse_permutation`; ``stats['repairs']`` sums the repairs and
    ``stats['generations']`` keeps every raw answer of the call. ``constrained=True`` applies
    :class:`minirank.constrained.PermutationLogitsProcessor` to every step's logits (chapter 7): only
    brackets, separators and identifiers not yet written are allowed, and generation stops after the
    last one, so every answer is a permutation and nothing is repaired.
    """

    name = "listwise-gen"

    def __init__(self, model, tokenizer, window: int = 20, stride: int | None = None, style: str = "alpha",
                 max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS,
                 max_new_tokens: int | None = None, batch_size: int = 8, constrained: bool = False):
        # 8 on every device: each decode step is overhead-bound (one token per row), so batching pays on a
        # CPU too, unlike FIRST's compute-bound prefill; the bar shows the decode step within a batch
        super().__init__(model, tokenizer, window, stride, style, max_passage_tokens, batch_size)
        if max_new_tokens is not None and max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1 (or None), got {max_new_tokens}")
        self.max_new_tokens = max_new_tokens
        self.constrained = bool(constrained)
        if self.constrained:  # fail now, not mid-run: single-token identifiers and a stop token
            from minirank.constrained import PermutationLogitsProcessor

            PermutationLogitsProcessor(tokenizer, [window], 0, self._stop_token(), style)

    def answer_budget(self, n: int) -> int:
        """Tokens a complete answer for ``n`` passages takes (after the prompt's ``[``), plus a margin."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        return len(self.tokenizer.encode(P.ideal_answer(n, self.style), add_special_tokens=False)) + 4

    def _stop_token(self) -> int | None:
        """The token constrained generation ends with: the tokenizer's end of turn, else any stop id."""
        eos = getattr(self.tokenizer, "eos_token_id", None)
        return int(eos) if isinstance(eos, int) else min(self._stop_ids(), default=None)

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
            if self.constrained:
                need = len(self.tokenizer.encode(P.ideal_answer(max(n_per_prompt[part]), self.style),
                                                 add_special_tokens=False)) + 1
                if budget < need:
                    raise ValueError(f"max_new_tokens={budget} is too short for a constrained answer of "
                                     f"{max(n_per_prompt[part])} identifiers ({need} tokens with the stop token)")
            texts.extend(self._greedy(prompts[part], budget, n_per_prompt[part]))
        return texts

    def _constraint(self, sizes: Sequence[int], prompt_length: int):
        from minirank.constrained import PermutationLogitsProcessor

        return PermutationLogitsProcessor(self.tokenizer, sizes, prompt_length, self._stop_token(), self.style)

    def _greedy(self, batch: Sequence[str], max_new_tokens: int, sizes: Sequence[int] = ()) -> list[str]:
        ids, mask = self._encode(batch, room=max_new_tokens)
        device = ids.device
        stop, pad = self._stop_ids(), P.pad_token_id(self.tokenizer)
        extra = last_logits_kwargs(self.model)
        generated: list[list[int]] = [[] for _ in batch]
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)
        step_ids, step_pos, past = ids, positions(mask), None
        constraint = self._constraint(sizes, ids.shape[1]) if self.constrained else None
        bar = getattr(self, "_bar", None)
        for step in range(max_new_tokens):
            if bar is not None:
                bar.set_postfix_str(f"{len(batch)} windows: token {step + 1}/{max_new_tokens}", refresh=True)
            out = self.model(input_ids=step_ids, attention_mask=mask, position_ids=step_pos,
                             **cache_kwargs(self.model, past), **extra)
            self.stats["model_calls"] += 1
            logits = out.logits[:, -1, :]
            nxt = (logits if constraint is None else constraint(ids, logits)).argmax(-1)
            for row, token in enumerate(nxt.tolist()):
                if done[row]:
                    continue
                if token in stop:
                    done[row] = True
                else:
                    generated[row].append(token)
                    self.stats["tokens_generated"] += 1
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

    def order_windows(self, windows: Sequence[Window]) -> list[list[int]]:
        texts = self.generate_windows(self.prompts_of(windows), [w.size for w in windows])
        orders = []
        for w, text in zip(windows, texts):
            self.stats["generations"].append({"qid": w.qid, "start": w.start, "end": w.end, "text": "[" + text})
            order, repairs = parse_permutation("[" + text, w.size, self.style)  # the prompt holds the '['
            if self.constrained and any(repairs.values()):
                raise RuntimeError(f"constrained generation wrote {text!r} for a window of {w.size}: "
                                   f"not a permutation (a bug in minirank.constrained)")
            for kind, count in repairs.items():
                self.stats["repairs"][kind] += count
            if any(repairs.values()):
                self.stats["repaired_windows"] += 1
            orders.append(order)
        return orders
