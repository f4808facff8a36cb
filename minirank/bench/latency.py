"""``minirank bench latency``: FIRST and PE-Rank against generation on the same windows of the course collection.

A program that runs chapter 6 (:mod:`minirank.latency`): on the same windows, a prefill-only forward
pass (FIRST's physical floor), FIRST (:class:`minirank.first.FirstReranker`), the default
``generate`` (dynamic KV cache), a fair generation baseline (static KV cache, compiled where
transformers compiles it: on GPUs) and PE-Rank (chapter 7, :class:`minirank.perank.PERankReranker`:
one vector per passage, exactly ``m`` constrained steps), with tokens, seconds per window and per query, paired speedups,
the decode memory-bandwidth floor, the cost model's error on window sizes it was not fitted on, and
PE-Rank's processed tokens over text listwise's on the same windows (``perank_processed_ratio``).
:func:`run_bench` returns the report as a dict; :func:`bench_main` is the command line.

Generation is forced to the length of a complete answer (``min_new_tokens = max_new_tokens``), so
that every run of every window decodes exactly the same number of tokens: a model that stops early
(or babbles) would otherwise make the comparison depend on its answer, not on the method. PE-Rank is
timed with a random-weight projector (seed 0) on the benchmark's model: it always takes exactly ``m``
steps, so its time does not depend on any weights, and any shape can be timed (``--config mistral-7b``).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from minirank import prompts as P
from minirank.device import synchronize
from minirank.latency import (Clock, CostModel, Timing, answer_tokens, decode_bytes_per_step, format_seconds,
                              headline_rows, interleaved, interleaved_groups, measure_bandwidth, paired_ratios)
from minirank.models import CONFIGS, build_random_model, parameter_count
from minirank.pointwise import QueryLikelihoodReranker, prompt_tokens
from minirank.forward import last_logits_kwargs, positions
from minirank.records import machine, refuse_existing, write_json

#: Methods timed on every window, in this order within a round (the order rotates round by round).
METHODS = ("prefill", "first", "generate", "generate_static", "perank", "query-likelihood")
LABELS = {"prefill": "prefill-only forward (FIRST's floor)", "first": "FIRST (one forward, identifier logits)",
          "generate": "generate, default dynamic cache", "generate_static": "generate, static cache (fair baseline)",
          "perank": "PE-Rank (one vector per passage, m constrained steps, encoding included)",
          "query-likelihood": "query likelihood (chapter 8: one sequence per passage, all of a window's in one batch)"}
#: What the PE-Rank row runs with, said in the output and the JSON.
PERANK_PROJECTOR = "random weights (seed 0): PE-Rank always decodes exactly m steps, so its time does not depend on them"


# ---------------------------------------------------------------- the windows and the timed calls

@dataclass
class Window:
    """One window of passages of query ``qid`` (ranks ``start`` to ``end`` of its BM25 run), as a prompt and its tokens."""

    qid: str
    start: int
    end: int
    prompt: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    query: str = ""
    pids: tuple[str, ...] = ()
    texts: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    def listwise(self):
        """The same window as the reranking loop hands it to a method (:class:`minirank.listwise.Window`)."""
        from minirank.listwise import Window as LoopWindow

        return LoopWindow(self.qid, self.query, self.pids, self.texts, self.start, self.end)


def _generate_kwargs(model, new_tokens: int, static: bool, compile_mode: str) -> dict:
    pad = getattr(model.generation_config, "pad_token_id", None)
    if pad is None:
        pad = getattr(model.generation_config, "eos_token_id", None)
    pad = (pad[0] if isinstance(pad, (list, tuple)) else pad) if pad is not None else 0
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=pad)
    if static:
        kwargs["cache_implementation"] = "static"
        if compile_mode == "off":
            kwargs["disable_compile"] = True
        elif compile_mode == "on":
            from transformers import CompileConfig

            config = CompileConfig()
            config._compile_all_devices = True  # transformers' own switch to compile on a CPU as well
            kwargs["compile_config"] = config
    return kwargs


def _compiled(device: torch.device, compile_mode: str) -> bool:
    """Whether ``generate`` compiles the static-cache decode step: transformers does so by itself on
    CUDA/XPU ('auto'), never with 'off', everywhere with 'on'."""
    return compile_mode == "on" or (compile_mode == "auto" and device.type in ("cuda", "xpu"))


def _window_fns(model, tokenizer, reranker, prompts: list[str], sizes: list[int], new_tokens: int,
                compile_mode: str, methods: Sequence[str], windows: Sequence[Window] = (),
                perank=None) -> dict[str, Callable[[], object]]:
    """The timed calls of one (batch of) window(s): each takes the same prompts (PE-Rank: the same
    ``windows``' query and passages, encoded afresh on every call) to its result."""
    device = next(model.parameters()).device
    ids, mask = P.encode(tokenizer, prompts, device)
    pos = positions(mask)
    gen_default = _generate_kwargs(model, new_tokens, False, compile_mode)
    gen_static = _generate_kwargs(model, new_tokens, True, compile_mode)

    def prefill():
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, **last_logits_kwargs(model))

    def first():
        return reranker.score_windows(prompts, sizes)  # from the prompt text, as the reranker runs it

    def generate(kwargs):
        def call():
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=mask, **kwargs)
            if out.shape[1] - ids.shape[1] != new_tokens:
                raise RuntimeError(f"generate wrote {out.shape[1] - ids.shape[1]} tokens, {new_tokens} were forced")
            return out
        return call

    loop_windows = [w.listwise() for w in windows]

    def pe_rank():
        return perank.order_windows(loop_windows)

    pairs = [(w.query, text) for w in windows for text in w.texts]
    ql = QueryLikelihoodReranker(model, tokenizer, max_passage_tokens=reranker.max_passage_tokens,
                                 batch_size=max(1, len(pairs)))
    query_likelihood = lambda: ql.score_pairs(pairs)  # noqa: E731
    table = {"prefill": prefill, "first": first, "generate": generate(gen_default),
             "generate_static": generate(gen_static), "perank": pe_rank, "query-likelihood": query_likelihood}
    return {name: table[name] for name in methods}


def _course_windows(tokenizer, reranker, queries: int, sizes: Sequence[int], window: int, stride: int, depth: int,
                    device, split: str = "test"):
    """Windows of the course collection: for each of the first ``queries`` test queries (by id), the
    top-``m`` BM25 passages for every ``m`` in ``sizes`` (the sweep) and the windows of a sliding-window
    rerank of depth ``depth`` (cut from the BM25 order: a real rerank reorders between windows, which
    changes which passages share a window but not how many)."""
    from minirank.data import load_course
    from minirank.listwise import window_schedule
    from minirank.retrieval import BM25, ranked

    collection = load_course(split)
    qids = sorted(collection.qrels)[:queries]
    if len(qids) < queries:
        raise ValueError(f"the course collection's {split} split has {len(qids)} judged queries, {queries} asked")
    need = max(max(sizes), depth)
    run = BM25(collection.passages).search({q: collection.queries[q] for q in qids}, need)
    windows: dict[tuple[str, int, int], Window] = {}
    schedules: dict[str, list[tuple[int, int]]] = {}
    for qid in qids:
        order = ranked(run[qid])
        spans = [(0, min(m, len(order))) for m in sizes]
        schedules[qid] = [(s, e) for s, e in window_schedule(min(depth, len(order)), window, stride) if e - s > 1]
        for s, e in spans + schedules[qid]:
            if (qid, s, e) not in windows and e - s >= 1:
                texts = tuple(collection.passages[p] for p in order[s:e])
                prompt = reranker.prompt(collection.queries[qid], list(texts))
                ids, mask = P.encode(tokenizer, [prompt], device)
                windows[(qid, s, e)] = Window(qid, s, e, prompt, ids, mask, collection.queries[qid],
                                              tuple(order[s:e]), texts)
    return collection, qids, windows, schedules


def run_bench(model=None, tokenizer=None, *, model_name: str | None = None, config: str | None = None,
              sizes: Sequence[int] = (3, 6, 10), window: int | None = None, depth: int | None = None,
              stride: int | None = None, queries: int = 2, repeats: int = 3, warmup: int | None = None,
              passage_tokens: int | None = 30, batch: Sequence[int] = (1,), compile_mode: str = "auto",
              holdout: Sequence[int] | None = None, methods: Sequence[str] = METHODS, device=None,
              dtype: torch.dtype | None = None, bandwidth: float | None = None,
              clock: Clock = time.perf_counter, echo: Callable[[str], None] = print) -> dict:
    """Time FIRST and PE-Rank against generation on the same windows of the course collection; return the report.

    ``sizes``: window sizes of the sweep (Fig. 4; the cost model is fitted on the smallest and the
    largest and checked on the others, or on ``holdout``). ``window``/``depth``/``stride``: the
    sliding-window rerank whose per-query time is reported (default: window = depth = the largest
    size, one window per query). ``warmup``: untimed rounds per window (default: 1 when ``generate``
    compiles, else 0; one global warm-up round always runs first). ``batch``: batch sizes for the
    throughput section (windows/s) beyond the batch-1 latencies. With ``"perank"`` among ``methods``,
    the report gains ``perank_processed_ratio``: PE-Rank's processed tokens over text listwise's on the
    windows of the per-query rerank (``perank_processed_ratio_by_size`` for the sweep's top-m windows);
    it depends on ``passage_tokens``, the cut of the text prompt's passages.
    """
    from minirank.first import FirstReranker
    from minirank.models import DEFAULT_MODEL, load, load_tokenizer

    sizes = sorted({int(m) for m in sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"window sizes must be positive integers, got {sizes}")
    window = window or sizes[-1]
    depth = depth or window
    stride = stride or max(1, window // 2)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "first" not in methods:
        raise ValueError(f"methods must include 'first' and be among {METHODS}, got {list(methods)}")
    if compile_mode not in ("auto", "on", "off"):
        raise ValueError(f"compile must be 'auto', 'on' or 'off', got {compile_mode!r}")
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    if model is None:
        if config is not None:
            tokenizer = tokenizer or load_tokenizer(model_name)
            model = build_random_model(config, len(tokenizer), device, dtype)
        else:
            model, tokenizer = load(model_name, device, dtype)
    elif tokenizer is None:
        raise ValueError("run_bench got a model but no tokenizer")
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    warmup = (1 if _compiled(device, compile_mode) else 0) if warmup is None else warmup
    reranker = FirstReranker(model, tokenizer, window=max(sizes[-1], window), stride=1,
                             max_passage_tokens=passage_tokens, batch_size=max(batch))
    sync = lambda: synchronize(device)  # noqa: E731
    collection, qids, windows, schedules = _course_windows(tokenizer, reranker, queries, sizes, window, stride,
                                                           depth, device)
    perank = _perank_reranker(model, tokenizer, max(sizes[-1], window), max(batch)) if "perank" in methods else None
    host = machine(device, dtype)
    model_label = f"random-weight {config!r} config" if config else str(model_name or DEFAULT_MODEL)
    n_params = parameter_count(model)
    echo(f"minirank bench latency: {host['device_name']}, {host['threads']} threads, torch {torch.__version__}")
    echo(f"  model {model_label} ({n_params / 1e6:,.1f}M parameters), dtype {host['dtype']}, batch 1, "
         f"passages cut to {passage_tokens} tokens, {len(qids)} {collection.name} queries, {len(windows)} windows, "
         f"{repeats} timed rounds (+{warmup} warm-up) per window")
    if perank is not None:
        echo(f"  PE-Rank: encoder {perank.encoder.name} (reads each passage whole), projector {PERANK_PROJECTOR}")

    # one global warm-up round on the smallest window: first calls allocate, pick kernels, compile
    first_key = min(windows, key=lambda k: windows[k].tokens)
    w0 = windows[first_key]
    fns0 = _window_fns(model, tokenizer, reranker, [w0.prompt], [w0.size], answer_tokens(tokenizer, w0.size),
                       compile_mode, methods, [w0], perank)
    interleaved(fns0, repeats=1, warmup=0, sync=sync, clock=clock)

    # every round visits every window (and, in each, every method in rotated order)
    keys = sorted(windows, key=lambda k: (k[0], windows[k].size, k[1]))
    groups = {key: _window_fns(model, tokenizer, reranker, [windows[key].prompt], [windows[key].size],
                               answer_tokens(tokenizer, windows[key].size), compile_mode, methods, [windows[key]],
                               perank) for key in keys}
    echo(f"  timing {len(keys)} windows x {len(methods)} methods x {warmup + repeats} rounds ...")
    timings = interleaved_groups(groups, repeats=repeats, warmup=warmup, sync=sync, clock=clock)
    records = []
    for key in keys:
        w, t = windows[key], timings[key]
        g = answer_tokens(tokenizer, w.size)
        rec = {"qid": w.qid, "start": w.start, "end": w.end, "m": w.size, "tokens_processed": w.tokens,
               "tokens_generated": g, "seconds": {name: t[name].as_dict() for name in t}}
        if "prefill" in t:
            rec["first_over_prefill"] = paired_ratios(t["first"], t["prefill"]).median
        for name in ("generate", "generate_static"):
            if name in t:
                rec[f"{name}_over_first"] = paired_ratios(t[name], t["first"]).median
                if "prefill" in t and g > 1:
                    per_token = [(a - b) / (g - 1) for a, b in zip(t[name].samples, t["prefill"].samples)]
                    rec[f"{name}_decode_s_per_token"] = statistics.median(per_token)
        if perank is not None:
            rec["perank_tokens_processed"] = perank_tokens(perank, [w])
            rec["perank_tokens_generated"] = w.size  # one pick per passage
            for name in ("generate", "generate_static", "first"):
                if name in t:
                    rec[f"{name}_over_perank"] = paired_ratios(t[name], t["perank"]).median
        if "query-likelihood" in t:
            rec["ql_tokens_processed"] = prompt_tokens(tokenizer, w.query, w.texts, reranker.max_passage_tokens)
        rec["_t"] = t
        records.append(rec)
        echo(f"  window {w.qid} [{w.start}:{w.end}] m={w.size}: P={w.tokens}, G={g}: " + ", ".join(
            f"{name} {format_seconds(t[name].median)}" for name in t))

    by_key = {(r["qid"], r["start"], r["end"]): r for r in records}
    result: dict = {
        "benchmark": "latency", "machine": host, "model": model_label, "parameters": n_params,
        "dtype": host["dtype"], "batch": 1, "collection": collection.name, "queries": qids,
        "passage_tokens": passage_tokens, "sizes": sizes, "window": window, "stride": stride, "depth": depth,
        "repeats": repeats, "warmup_rounds_per_window": warmup, "global_warmup_rounds": 1,
        "compile": compile_mode, "static_cache_compiled": _compiled(device, compile_mode),
        "generation": "greedy, forced to the length of a complete answer (min_new_tokens = max_new_tokens)",
        "methods": {name: LABELS[name] for name in methods},
    }

    # per query: the windows of its sliding-window rerank, summed round by round
    per_query = []
    ratios: dict[str, list[float]] = {"first_over_prefill": [], "generate": [], "generate_static": [],
                                      "fair_over_perank": [], "perank_over_first": [], "ql_over_first": []}
    fair = "generate_static" if "generate_static" in methods else ("generate" if "generate" in methods else None)
    for qid in qids:
        recs = [by_key[(qid, s, e)] for s, e in schedules[qid]]
        totals = {name: [sum(r["_t"][name].samples[i] for r in recs) for i in range(repeats)] for name in methods}
        entry = {"qid": qid, "windows": len(recs), "tokens_processed": sum(r["tokens_processed"] for r in recs),
                 "tokens_generated": sum(r["tokens_generated"] for r in recs),
                 "seconds": {name: Timing(tuple(v)).as_dict() for name, v in totals.items()}}
        if "prefill" in totals:
            ratios["first_over_prefill"] += [a / b for a, b in zip(totals["first"], totals["prefill"])]
        for name in ("generate", "generate_static"):
            if name in totals:
                ratios[name] += [a / b for a, b in zip(totals[name], totals["first"])]
        if "perank" in totals:
            entry["perank_tokens_processed"] = sum(r["perank_tokens_processed"] for r in recs)
            entry["perank_tokens_generated"] = sum(r["perank_tokens_generated"] for r in recs)
            ratios["perank_over_first"] += [a / b for a, b in zip(totals["perank"], totals["first"])]
            if fair:
                ratios["fair_over_perank"] += [a / b for a, b in zip(totals[fair], totals["perank"])]
        if "query-likelihood" in totals:  # chapter 8: pointwise against listwise on the same candidates, by round
            ratios["ql_over_first"] += [a / b for a, b in zip(totals["query-likelihood"], totals["first"])]
        per_query.append(entry)
    result["per_query"] = per_query
    if ratios["ql_over_first"]:
        result["query_likelihood_over_first"] = statistics.median(ratios["ql_over_first"])

    def summary(values):
        return Timing(tuple(values)).as_dict() if values else None

    result["first_over_prefill"] = statistics.median(ratios["first_over_prefill"]) if ratios["first_over_prefill"] else None
    result["first_over_prefill_spread"] = summary(ratios["first_over_prefill"])
    result["fair_baseline"] = fair
    result["speedup_first_vs_generation"] = statistics.median(ratios[fair]) if fair else None
    result["speedup_first_vs_generation_spread"] = summary(ratios[fair]) if fair else None
    result["speedup_first_vs_default_generate"] = statistics.median(ratios["generate"]) if ratios["generate"] else None
    result["speedup_first_vs_static_generate"] = (statistics.median(ratios["generate_static"])
                                                  if ratios["generate_static"] else None)
    if fair:
        # the papers' way of saying it: the share of the generation baseline's time that FIRST saves
        result["time_saved_vs_fair_baseline"] = 1 - 1 / result["speedup_first_vs_generation"]
    result["papers_time_saved"] = {"FIRST abstract and §1 (latencies of §4.3, A100, vs generation)": "about 50%",
                                   "FIRST reproduction Table 5 (RTX A6000, TREC DL19-22)": "21%-42%"}
    result["seconds_per_query"] = {name: statistics.median([q["seconds"][name]["median_s"] for q in per_query])
                                   for name in methods}
    result["seconds_per_window"] = {
        name: statistics.median([by_key[(q, s, e)]["seconds"][name]["median_s"] for q in qids for s, e in schedules[q]])
        for name in methods}

    # the decode floor: bytes every step must read, at the achievable bandwidth
    headline = [by_key[(q, s, e)] for q in qids for s, e in schedules[q]]
    context = statistics.median([r["tokens_processed"] + r["tokens_generated"] / 2 for r in headline])
    bw = bandwidth if bandwidth is not None else measure_bandwidth(device)
    floor = decode_bytes_per_step(model, int(context)) / bw
    decode = {name: statistics.median([r[f"{name}_decode_s_per_token"] for r in headline
                                       if f"{name}_decode_s_per_token" in r])
              for name in ("generate", "generate_static")
              if any(f"{name}_decode_s_per_token" in r for r in headline)}
    result["decode"] = {"bandwidth_bytes_per_s": bw, "bandwidth_measured": bandwidth is None,
                        "context_tokens": context, "floor_s_per_token": floor,
                        "s_per_token": decode, "over_floor": {k: v / floor for k, v in decode.items()},
                        "how": "per token = (generate - prefill) / (G - 1), paired by round; floor = bytes read "
                               "per step (weights + KV cache) / measured read bandwidth"}

    if perank is not None:
        result.update(_perank_report(perank, records, headline, sizes, ratios))

    # the cost model: fitted on some sizes, checked on the others
    result.update(_cost_model_report(records, sizes, holdout, fair))

    # throughput: batched windows per second
    result["throughput"] = _throughput(model, tokenizer, reranker, [by_key[(q, s, e)] for q in qids
                                                                    for s, e in schedules[q]], windows, batch,
                                       repeats, warmup, compile_mode, methods, sync, clock, echo, perank)
    for r in records:
        del r["_t"]
    result["windows"] = records
    host["load_avg_start"], host["load_avg_end"] = load_start, (os.getloadavg() if hasattr(os, "getloadavg")
                                                                     else None)
    echo(format_report(result))
    return result


def _perank_reranker(model, tokenizer, window: int, batch_size: int):
    """PE-Rank on the benchmark's own model: the default encoder (on the model's device) and a projector
    with random weights (:data:`PERANK_PROJECTOR`), so that a random-weight shape can be timed too."""
    from minirank import perank as PR

    encoder = PR.PassageEncoder(device=next(model.parameters()).device)
    return PR.PERankReranker(model, tokenizer, encoder, PR.new_projector(encoder, model, seed=0), window=window,
                             batch_size=batch_size)


def perank_tokens(perank, windows: Sequence[Window]) -> int:
    """Tokens PE-Rank's prompts of ``windows`` hold (each passage one token), counted as the reranker counts them."""
    return sum(int(P.encode(perank.tokenizer, [prompt])[1].sum()) for prompt in perank.prompts_of([w.listwise() for w in windows]))


def _perank_report(perank, records, headline, sizes, ratios) -> dict:
    """PE-Rank against text listwise on the same windows: processed tokens (the headline ratio, on the
    windows of the per-query rerank, and by window size) and paired speedups per query."""
    def ratio(recs):
        text = sum(r["tokens_processed"] for r in recs)
        return sum(r["perank_tokens_processed"] for r in recs) / text if text else None

    tops = {m: [r for r in records if r["start"] == 0 and r["m"] == m] for m in sizes}
    return {"perank_projector": PERANK_PROJECTOR, "perank_encoder": str(perank.encoder.name),
            "perank_processed_ratio": ratio(headline),
            "perank_processed_ratio_by_size": {str(m): ratio(recs) for m, recs in tops.items() if recs},
            "perank_processed_target": "<= 0.20 (paper, Table 3, DL19 top-100: 2,942.4 / 19,506.2 = 0.15)",
            "speedup_perank_vs_generation": statistics.median(ratios["fair_over_perank"]) if ratios["fair_over_perank"] else None,
            "perank_over_first": statistics.median(ratios["perank_over_first"]) if ratios["perank_over_first"] else None,
            "papers_perank": {"PE-Rank Table 3 (DL19, BM25 top-100, Mistral-7B)":
                              "processed 2,942.4 vs 19,506.2, generated 180.0 vs 910.2, 3.62 s vs 16.20 s per query"}}


def _cost_model_report(records, sizes, holdout, fair) -> dict:
    if fair is None:
        return {"cost_model": None, "cost_model_max_rel_error": None}
    held = sorted(set(holdout)) if holdout is not None else [m for m in sizes if sizes[0] < m < sizes[-1]]
    bad = [m for m in held if m not in sizes]
    if bad:
        raise ValueError(f"held-out sizes {bad} are not among the measured sizes {sizes}")
    rows = []
    for r in records:
        if r["start"] != 0 or r["m"] not in sizes:
            continue
        rows.append(("first", r["m"], r["tokens_processed"], 0, r["seconds"]["first"]["median_s"]))
        rows.append((fair, r["m"], r["tokens_processed"], r["tokens_generated"], r["seconds"][fair]["median_s"]))
    train = [x for x in rows if x[1] not in held]
    test = [x for x in rows if x[1] in held] or None
    try:
        cost = CostModel.fit([x[2] for x in train], [x[3] for x in train], [x[4] for x in train])
    except ValueError as err:
        return {"cost_model": None, "cost_model_max_rel_error": None, "cost_model_note": str(err)}
    checks = []
    for method, m, p, g, s in rows:
        pred = cost.predict(p, g)
        checks.append({"method": method, "m": m, "tokens_processed": p, "tokens_generated": g, "measured_s": s,
                       "predicted_s": pred, "rel_error": (pred - s) / s, "held_out": m in held})
    out = {"cost_model": {**cost.as_dict(), "fitted_on_sizes": sorted({x[1] for x in train}),
                          "held_out_sizes": held, "methods": ["first", fair], "fit": "non-negative least squares on relative error"},
           "cost_model_checks": checks,
           "cost_model_max_rel_error_in_sample": max(abs(c["rel_error"]) for c in checks if not c["held_out"])}
    out["cost_model_max_rel_error"] = (max(abs(c["rel_error"]) for c in checks if c["held_out"]) if test else None)
    if not test:
        out["cost_model_note"] = "no held-out sizes (give 3 or more --sizes): only the in-sample error is known"
    return out


def _throughput(model, tokenizer, reranker, headline, windows, batch, repeats, warmup, compile_mode, methods,
                sync, clock, echo, perank=None) -> list[dict]:
    rows = []
    for b in sorted(set(batch)):
        if b == 1:
            for name in methods:
                med = statistics.median([r["seconds"][name]["median_s"] for r in headline])
                key = {"perank": "perank_tokens_processed", "query-likelihood": "ql_tokens_processed"}.get(
                    name, "tokens_processed")
                rows.append({"batch": 1, "method": name, "windows_per_s": 1 / med, "seconds_per_batch": med,
                             "tokens_processed": statistics.median([r[key] for r in headline])})
            continue
        chosen = [windows[(r["qid"], r["start"], r["end"])] for r in headline]
        chosen = [chosen[i % len(chosen)] for i in range(b)]
        g = max(answer_tokens(tokenizer, w.size) for w in chosen)
        fns = _window_fns(model, tokenizer, reranker, [w.prompt for w in chosen], [w.size for w in chosen], g,
                          compile_mode, methods, chosen, perank)
        t = interleaved(fns, repeats=repeats, warmup=max(1, warmup), sync=sync, clock=clock)
        for name in t:
            pe = name == "perank"
            rows.append({"batch": b, "method": name, "windows_per_s": b / t[name].median,
                         "seconds_per_batch": t[name].median, "timing": t[name].as_dict(),
                         "tokens_processed": perank_tokens(perank, chosen) if pe else sum(
                             prompt_tokens(tokenizer, w.query, w.texts, reranker.max_passage_tokens) if name ==
                             "query-likelihood" else w.tokens for w in chosen),
                         "tokens_generated": sum(w.size for w in chosen) if pe else
                         0 if name in ("prefill", "first", "query-likelihood") else g * b})
        echo(f"  batch {b}: " + ", ".join(f"{name} {b / t[name].median:.2f} windows/s" for name in t))
    return rows


def format_report(result: Mapping) -> str:
    """The benchmark's numbers as text: a table per window size, then the headline ratios."""
    methods = list(result["methods"])
    m_ = result["machine"]
    lines = [f"latency on {m_['device_name']} ({m_['device']}, {m_['threads']} threads), model {result['model']}, "
             f"dtype {result['dtype']}, batch {result['batch']}, torch {m_['torch']}",
             "seconds per window: median of the timed rounds; ratios: median of per-round ratios", ""]
    pe = "perank" in methods
    head = ["m", "P", "G"] + (["P pe-rank"] if pe else []) + [n for n in methods] + ["first/prefill", "gen/first",
                                                                                   "static/first"]
    rows = []
    for m in result["sizes"]:
        recs = [r for r in result["windows"] if r["m"] == m and r["start"] == 0]
        if not recs:
            continue
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        row = [str(m), f"{med([r['tokens_processed'] for r in recs]):.0f}", f"{med([r['tokens_generated'] for r in recs]):.0f}"]
        row += [f"{med([r['perank_tokens_processed'] for r in recs]):.0f}"] if pe else []
        row += [format_seconds(med([r["seconds"][n]["median_s"] for r in recs])) for n in methods]
        row += [f"{med([r[k] for r in recs if k in r]):.2f}x" if any(k in r for r in recs) else "-"
                for k in ("first_over_prefill", "generate_over_first", "generate_static_over_first")]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines.append("  ".join(h.rjust(w) for h, w in zip(head, widths)))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append("")
    q = result["per_query"]
    lines.append(f"per query (depth {result['depth']}, window {result['window']}, stride {result['stride']}: "
                 f"{statistics.median([x['windows'] for x in q]):.0f} window(s), "
                 f"P={statistics.median([x['tokens_processed'] for x in q]):.0f}, "
                 f"G={statistics.median([x['tokens_generated'] for x in q]):.0f}): "
                 + ", ".join(f"{n} {format_seconds(s)}" for n, s in result["seconds_per_query"].items()))
    if pe:
        lines.append(f"PE-Rank per query: P={statistics.median([x['perank_tokens_processed'] for x in q]):.0f}, "
                     f"G={statistics.median([x['perank_tokens_generated'] for x in q]):.0f}; projector "
                     f"{result['perank_projector']}")

    from minirank.evaluate import format_table

    lines += ["", format_table(headline_rows(result)), "", "details:"]
    d = result["decode"]
    lines.append(f"decode: floor {format_seconds(d['floor_s_per_token'])}/token at {d['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s "
                 f"(context {d['context_tokens']:.0f}); " + ", ".join(
                     f"{k} {format_seconds(v)}/token = {d['over_floor'][k]:.1f}x floor" for k, v in d["s_per_token"].items())
                 + " (target: fair baseline within ~2x)")
    if result.get("cost_model"):
        c = result["cost_model"]
        err = result["cost_model_max_rel_error"]
        lines.append(f"cost model ({', '.join(c['methods'])}; fitted on m={c['fitted_on_sizes']}): "
                     f"{CostModel(c['intercept_s'], c['prefill_s_per_token'], c['decode_s_per_token'])}")
        lines.append(f"  max relative error on held-out m={c['held_out_sizes']} (target <= 20%): "
                     + ("n/a" if err is None else f"{100 * err:.1f}%")
                     + f"; in sample {100 * result['cost_model_max_rel_error_in_sample']:.1f}%")
    for row in result.get("throughput", []):
        if row["batch"] > 1:
            lines.append(f"batch {row['batch']:>3} {row['method']:>16}: {row['windows_per_s']:.2f} windows/s")
    load = m_.get("load_avg_start")
    if load:
        lines.append(f"machine load average at start {load[0]:.2f} (on {os.cpu_count()} cores): "
                     f"{'busy, timings are noisy' if load[0] > 0.5 * (os.cpu_count() or 1) else 'quiet'}")
    return "\n".join(lines)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def bench_main(argv: list[str] | None = None) -> int:
    """``minirank bench latency [options]``: print the table; ``--json PATH`` also writes the numbers."""
    parser = argparse.ArgumentParser(
        prog="minirank bench latency",
        description="FIRST and PE-Rank vs generation on the same windows of the course collection: seconds per "
                    "window and per query, tokens, paired speedups, FIRST over a prefill-only pass, PE-Rank's processed "
                    "tokens over text listwise's (perank_processed_ratio; PE-Rank runs with a random projector, its "
                    "time does not depend on the weights), the decode floor, and a cost model checked on held-out "
                    "window sizes. The CPU default takes about 3 minutes.")
    parser.add_argument("--model", default=None, help="model to load (default: the default model)")
    parser.add_argument("--config", choices=sorted(CONFIGS), default=None,
                        help="build a random-weight model of this shape instead (no download; mistral-7b needs a GPU)")
    parser.add_argument("--sizes", type=_int_list, default=[3, 6, 10],
                        help="window sizes m of the sweep, comma-separated (default 3,6,10)")
    parser.add_argument("--holdout", type=_int_list, default=None,
                        help="sizes the cost model is checked on, not fitted on (default: all but the smallest and largest)")
    parser.add_argument("--window", type=int, default=None, help="window of the per-query rerank (default: largest size)")
    parser.add_argument("--depth", type=int, default=None, help="candidates reranked per query (default: the window)")
    parser.add_argument("--stride", type=int, default=None, help="stride (default: half the window)")
    parser.add_argument("--queries", type=int, default=2, help="course test queries (default 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per window (default 3)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed rounds per window (default: 1 if generate compiles, else 0; one global round always)")
    parser.add_argument("--passage-tokens", type=int, default=30, help="cut passages to this many tokens (default 30)")
    parser.add_argument("--batch", type=_int_list, default=[1], help="batch sizes for windows/s, e.g. 1,8,32 (default 1)")
    parser.add_argument("--compile", dest="compile_mode", choices=["auto", "on", "off"], default="auto",
                        help="compile the static-cache decode: auto = as transformers does (on GPUs), on, off")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: minirank.device.pick_device)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: minirank.device.pick_dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (on a busy machine 1 is steadier)")
    parser.add_argument("--bandwidth-gbs", type=float, default=None,
                        help="memory bandwidth for the decode floor, GB/s (default: measured)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    args = parser.parse_args(argv)
    if args.json_path:
        refuse_existing(args.json_path, force=args.force)  # before minutes of timing, not after
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    result = run_bench(model_name=args.model, config=args.config, sizes=args.sizes, window=args.window,
                       depth=args.depth, stride=args.stride, queries=args.queries, repeats=args.repeats,
                       warmup=args.warmup, passage_tokens=args.passage_tokens, batch=args.batch,
                       compile_mode=args.compile_mode, holdout=args.holdout, methods=methods, device=args.device,
                       dtype=DTYPES.get(args.dtype), bandwidth=args.bandwidth_gbs * 1e9 if args.bandwidth_gbs else None)
    result["command"] = "minirank bench latency " + " ".join(argv or [])
    if args.json_path:
        print(f"wrote {write_json(args.json_path, result, force=args.force)}")
    return 0
