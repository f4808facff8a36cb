"""Measuring latency (chapter 6): where the time of a rerank goes, and how much FIRST saves.

Four pieces, each usable on its own:

* :func:`measure` and :func:`interleaved` time calls honestly on CPU and GPU: warm-up calls first,
  :func:`minirank.device.synchronize` before reading the clock, several repeats, and the median with
  its spread (:class:`Timing`). :func:`interleaved` times several methods in rounds (one call of
  each per round, the order rotated), so that a noisy machine slows all of them alike and the
  per-round ratios (:func:`paired_ratios`) stay meaningful. The clock can be injected (tests use a
  fake one, so their statistics are exact).
* :func:`split_generation` splits one greedy generation into its prefill (one forward pass over the
  prompt, which already yields the first answer token) and its decode steps (one forward pass per
  further token), counting the tokens processed and generated, as PE-Rank's Table 3 does.
  :func:`decode_bytes_per_step` and :func:`measure_bandwidth` give the memory-bandwidth floor of a step.
* :class:`CostModel`: ``seconds = intercept + processed * prefill_s_per_token + generated *
  decode_s_per_token``, fitted on one machine by non-negative least squares on relative error, checked on
  window sizes it was not fitted on; :func:`deepest_within_budget` asks FIRST Fig. 3's question with it.
* :func:`headline_rows`: the benchmark's targets as a table, the one lesson 6.6 quotes.

The benchmark that runs all of this on the course collection, ``minirank bench latency``, is a program
of its own: :mod:`minirank.bench.latency` (this chapter never imports it).
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from minirank import prompts as P
from minirank.data import BENCH_DIR
from minirank.device import pick_device, synchronize
from minirank.forward import cache_kwargs, last_logits_kwargs, positions, returned_cache

Clock = Callable[[], float]


# ---------------------------------------------------------------- the timer

@dataclass(frozen=True)
class Timing:
    """Wall-clock samples of one call, in seconds, with the statistics a benchmark reports."""

    samples: tuple[float, ...]
    warmup: int = 0

    def __post_init__(self):
        if not self.samples:
            raise ValueError("a Timing needs at least one sample")

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.samples)

    @property
    def quartiles(self) -> tuple[float, float]:
        """First and third quartile (``statistics.quantiles``, inclusive method: interpolated between samples)."""
        if self.n == 1:
            return self.samples[0], self.samples[0]
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return q1, q3

    @property
    def rel_spread(self) -> float:
        """(max - min) / median: how far apart the repeats are, relative to the reported value."""
        return (self.max - self.min) / self.median if self.median else float("inf")

    def as_dict(self) -> dict:
        q1, q3 = self.quartiles
        return {"median_s": self.median, "min_s": self.min, "max_s": self.max, "q1_s": q1, "q3_s": q3,
                "mean_s": self.mean, "rel_spread": self.rel_spread, "n": self.n, "warmup": self.warmup,
                "samples_s": list(self.samples)}

    def __str__(self) -> str:
        return (f"{format_seconds(self.median)} (min {format_seconds(self.min)}, max {format_seconds(self.max)}, "
                f"n={self.n}, spread {100 * self.rel_spread:.0f}%)")


def format_seconds(seconds: float) -> str:
    """``seconds`` for a table: microseconds, milliseconds or seconds, whichever reads best."""
    if seconds != seconds:  # nan
        return "nan"
    if abs(seconds) < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if abs(seconds) < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _syncer(device, sync):
    if sync is not None:
        return sync
    device = torch.device(device) if device is not None else None
    return lambda: synchronize(device) if device is not None else None


def measure(fn: Callable[[], object], repeats: int = 5, warmup: int = 1, device=None,
            clock: Clock = time.perf_counter, sync: Callable[[], None] | None = None) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones.

    Queued GPU work is waited for before the clock starts and before it stops (``sync``, by default
    :func:`minirank.device.synchronize` on ``device``; nothing on a CPU), so a GPU kernel launched
    but not finished is never counted as done. ``clock`` is injectable (tests pass a fake one).
    """
    return interleaved({"fn": fn}, repeats=repeats, warmup=warmup, device=device, clock=clock, sync=sync)["fn"]


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 5, warmup: int = 1, device=None,
                clock: Clock = time.perf_counter, sync: Callable[[], None] | None = None,
                rotate: bool = True) -> dict[str, Timing]:
    """Time several calls side by side: in each round every call runs once (order rotated by one per
    round when ``rotate``), so sample ``i`` of every method comes from round ``i``. On a machine whose
    load changes, all methods share the slow rounds and :func:`paired_ratios` compares like with like.
    """
    return interleaved_groups({None: fns}, repeats, warmup, device, clock, sync, rotate)[None]


def interleaved_groups(groups: Mapping[object, Mapping[str, Callable[[], object]]], repeats: int = 5,
                       warmup: int = 1, device=None, clock: Clock = time.perf_counter,
                       sync: Callable[[], None] | None = None, rotate: bool = True) -> dict[object, dict[str, Timing]]:
    """:func:`interleaved` over several groups (e.g. windows): each round visits every group in turn and
    runs that group's calls once, rotated. A slow spell of the machine then lands in one round of
    every window rather than in all rounds of one window, and the medians shrug it off."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    if not groups or not all(groups.values()):
        raise ValueError("nothing to time: no functions given")
    sync = _syncer(device, sync)
    samples = {g: {name: [] for name in fns} for g, fns in groups.items()}
    for r in range(warmup + repeats):
        for g, fns in groups.items():
            names = list(fns)
            shift = r % len(names) if rotate else 0
            for name in names[shift:] + names[:shift]:
                timed = r >= warmup  # warm-up calls run and synchronise but never read the clock
                sync()
                start = clock() if timed else 0.0
                fns[name]()
                sync()
                if timed:
                    samples[g][name].append(clock() - start)
    return {g: {name: Timing(tuple(v), warmup) for name, v in per.items()} for g, per in samples.items()}


def paired_ratios(numerator: Timing | Sequence[float], denominator: Timing | Sequence[float]) -> Timing:
    """Per-round ratios ``numerator[i] / denominator[i]`` of two interleaved timings, as a Timing
    (its median is the ratio to report: it is robust to a round that was slow for both)."""
    a = numerator.samples if isinstance(numerator, Timing) else tuple(numerator)
    b = denominator.samples if isinstance(denominator, Timing) else tuple(denominator)
    if len(a) != len(b):
        raise ValueError(f"paired ratios need as many samples on both sides, got {len(a)} and {len(b)}")
    return Timing(tuple(x / y for x, y in zip(a, b)))


# ---------------------------------------------------------------- token counts and the prefill/decode split

def answer_tokens(tokenizer, n: int, style: str = "alpha") -> int:
    """Tokens of a complete answer for ``n`` passages after the prompt's ``[`` (``A] > [B] > ... [T]``):
    what a generation reranker must write, and the length generation is forced to here."""
    if n < 1:
        raise ValueError(f"a window needs at least one passage, got {n}")
    return len(tokenizer.encode(P.ideal_answer(n, style), add_special_tokens=False))


@dataclass
class Split:
    """One greedy generation, split into its prefill and its decode steps."""

    tokens_processed: int            # prompt tokens of all rows (padding excluded): the prefill's work
    tokens_generated: int            # new tokens per row (the first comes from the prefill's logits)
    batch: int
    prefill_s: float
    step_s: list[float] = field(default_factory=list)   # one per decode step (tokens_generated - 1)
    token_ids: list[list[int]] = field(default_factory=list, repr=False)

    @property
    def decode_s(self) -> float:
        return float(sum(self.step_s))

    @property
    def total_s(self) -> float:
        return self.prefill_s + self.decode_s

    @property
    def decode_s_per_token(self) -> float:
        return statistics.median(self.step_s) if self.step_s else float("nan")

    def as_dict(self) -> dict:
        return {"tokens_processed": self.tokens_processed, "tokens_generated": self.tokens_generated,
                "batch": self.batch, "prefill_s": self.prefill_s, "decode_s": self.decode_s,
                "decode_s_per_token": self.decode_s_per_token, "total_s": self.total_s}


@torch.inference_mode()
def split_generation(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, new_tokens: int,
                     cache: str = "dynamic", clock: Clock = time.perf_counter,
                     sync: Callable[[], None] | None = None) -> Split:
    """Greedy-decode exactly ``new_tokens`` tokens (never stopping at EOS) and time each phase.

    The prefill is one forward pass over the (left-padded) prompt; its last logits give the first new
    token: the very position FIRST reads (§3.2), which is why FIRST's whole cost is this prefill.
    Each further token costs one decode step: a forward pass over one token per row, reading every
    weight and the KV cache. ``cache``: ``"dynamic"`` (transformers' default) or ``"static"``
    (preallocated, :class:`transformers.StaticCache`).
    """
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    if cache not in ("dynamic", "static"):
        raise ValueError(f"cache must be 'dynamic' or 'static', got {cache!r}")
    device = input_ids.device
    sync = _syncer(device, sync)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    past = None
    if cache == "static":
        from transformers import StaticCache

        past = StaticCache(config=model.config, max_cache_len=input_ids.shape[1] + new_tokens)
    generated: list[torch.Tensor] = []
    sync()
    start = clock()
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=positions(mask), **cache_kwargs(model, past),
                **last_logits_kwargs(model))
    nxt = out.logits[:, -1, :].argmax(-1)
    sync()
    prefill_s = clock() - start
    generated.append(nxt)
    past = returned_cache(out)
    steps: list[float] = []
    for _ in range(new_tokens - 1):
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        sync()
        start = clock()
        out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=mask.sum(-1, keepdim=True) - 1,
                    **cache_kwargs(model, past), **last_logits_kwargs(model))
        nxt = out.logits[:, -1, :].argmax(-1)
        sync()
        steps.append(clock() - start)
        past = returned_cache(out)
        generated.append(nxt)
    ids = torch.stack(generated, dim=1).tolist()
    return Split(tokens_processed=int(attention_mask.sum()) if attention_mask is not None else input_ids.numel(),
                 tokens_generated=new_tokens, batch=input_ids.shape[0], prefill_s=prefill_s, step_s=steps,
                 token_ids=ids)


# ---------------------------------------------------------------- the memory-bandwidth floor of decoding

def measure_bandwidth(device=None, mib: int | None = None, repeats: int = 5) -> float:
    """Achievable read bandwidth in bytes/s: the median time to sum a large float32 tensor (on a GPU
    about 85-95% of the data-sheet figure; on a CPU what these threads reach, not the DRAM peak)."""
    device = pick_device(device)
    mib = mib or (1024 if device.type == "cuda" else 256)
    x = torch.ones(mib * 2 ** 20 // 4, dtype=torch.float32, device=device)
    timing = measure(lambda: x.sum(), repeats=repeats, warmup=1, device=device)
    return x.numel() * 4 / timing.median


def decode_bytes_per_step(model, context_tokens: int, batch: int = 1) -> int:
    """Bytes one decode step must read at least: every weight once (the input embedding only for its
    rows, unless tied to the output layer, which reads all of it) plus the KV cache of the context."""
    seen, weights = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            weights += p.numel() * p.element_size()
    embed = model.get_input_embeddings().weight if hasattr(model, "get_input_embeddings") else None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if embed is not None and (output is None or output.weight is not embed):
        weights -= embed.numel() * embed.element_size()
    cfg = model.config
    layers = getattr(cfg, "num_hidden_layers", 0)
    heads = getattr(cfg, "num_attention_heads", 1)
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    element = next(model.parameters()).element_size()
    kv = 2 * layers * kv_heads * head_dim * context_tokens * element * batch
    return int(weights + kv)


# ---------------------------------------------------------------- the cost model

@dataclass(frozen=True)
class CostModel:
    """Predicted seconds of one window: ``intercept + processed * prefill_s_per_token + generated * decode_s_per_token``.

    ``processed``: prompt tokens (the prefill); ``generated``: tokens written after it (0 for FIRST,
    the answer length for generation). Fitted on one machine, for one model, dtype and batch size.
    """

    intercept_s: float
    prefill_s_per_token: float
    decode_s_per_token: float

    @property
    def prefill_tokens_per_s(self) -> float:
        return 1.0 / self.prefill_s_per_token if self.prefill_s_per_token > 0 else float("inf")

    def predict(self, processed, generated=0):
        """Seconds for ``processed`` prompt tokens and ``generated`` new tokens (scalars or arrays)."""
        import numpy as np

        value = self.intercept_s + np.asarray(processed, float) * self.prefill_s_per_token \
            + np.asarray(generated, float) * self.decode_s_per_token
        return float(value) if value.ndim == 0 else value

    @classmethod
    def fit(cls, processed: Sequence[float], generated: Sequence[float], seconds: Sequence[float],
            relative: bool = True) -> "CostModel":
        """Non-negative least squares on the three coefficients. ``relative=True`` minimises squared
        *relative* errors (each row divided by its measured time), so short windows weigh as much as long ones."""
        import numpy as np
        from scipy.optimize import nnls

        x = np.column_stack([np.ones(len(seconds)), np.asarray(processed, float), np.asarray(generated, float)])
        y = np.asarray(seconds, float)
        if len(y) < 3:
            raise ValueError(f"the cost model has 3 coefficients; fitting it needs at least 3 timings, got {len(y)}")
        if np.linalg.matrix_rank(x) < 3:
            raise ValueError("the timings do not pin down the cost model: they need at least two prompt lengths "
                             "and both generated and non-generated (FIRST) rows")
        if relative:
            if (y <= 0).any():
                raise ValueError("relative fitting needs positive times")
            x, y = x / y[:, None], np.ones_like(y)
        coef, _ = nnls(x, y)  # no coefficient may be negative: a token never takes negative time
        return cls(*map(float, coef))

    def rel_errors(self, processed, generated, seconds):
        import numpy as np

        seconds = np.asarray(seconds, float)
        return (self.predict(processed, generated) - seconds) / seconds

    def as_dict(self) -> dict:
        return {"intercept_s": self.intercept_s, "prefill_s_per_token": self.prefill_s_per_token,
                "decode_s_per_token": self.decode_s_per_token, "prefill_tokens_per_s": self.prefill_tokens_per_s}

    def __str__(self) -> str:
        return (f"t = {format_seconds(self.intercept_s)} + P x {format_seconds(self.prefill_s_per_token)} "
                f"({self.prefill_tokens_per_s:,.0f} tokens/s) + G x {format_seconds(self.decode_s_per_token)}")


def predicted_query_seconds(cost: CostModel, depth: int, window: int, stride: int | None,
                            prompt_tokens: Callable[[int], float], generated_tokens: Callable[[int], float]) -> float:
    """Predicted seconds to rerank the top ``depth`` of one query with a sliding window (batch 1):
    the sum over :func:`minirank.listwise.window_schedule` of ``cost.predict(prompt(n), generated(n))``
    for each window of ``n`` passages. ``generated_tokens`` is ``lambda n: 0`` for FIRST."""
    from minirank.listwise import window_schedule

    stride = max(1, window // 2) if stride is None else stride
    total = 0.0
    for s, e in window_schedule(depth, window, stride):
        if e - s > 1:
            n = e - s
            total += cost.predict(prompt_tokens(n), generated_tokens(n))
    return total


def deepest_within_budget(cost: CostModel, budget_s: float, window: int, stride: int | None,
                          prompt_tokens: Callable[[int], float], generated_tokens: Callable[[int], float],
                          max_depth: int = 200) -> int:
    """The largest rerank depth whose predicted per-query time fits in ``budget_s`` (0 if none does):
    FIRST Fig. 3's question, "how many candidates can each method rerank in the same time?"."""
    best = 0
    for depth in range(2, max_depth + 1):
        if predicted_query_seconds(cost, depth, window, stride, prompt_tokens, generated_tokens) <= budget_s:
            best = depth
    return best


# ---------------------------------------------------------------- the headline table (lesson 6.6)

#: The default run on the book's 2-core CPU (``minirank bench latency --json ...``), quoted in lesson 6.6.
STORED_CPU_BENCH = BENCH_DIR / "latency-cpu.json"


def headline_rows(result: Mapping) -> list[dict]:
    """The benchmark's targets (issue 6, lesson 6.6) as table rows: what was measured against what was aimed at."""
    d, c = result["decode"], result.get("cost_model") or {}
    err = result.get("cost_model_max_rel_error")
    saved = result.get("time_saved_vs_fair_baseline")
    fast = [r for r in result.get("throughput", []) if r["method"] == "first"]
    floor = d["over_floor"].get(result["fair_baseline"])

    def ratio(value, digits=2):
        return "n/a" if value is None else f"{value:.{digits}f}x"

    rows = [
        {"quantity": "FIRST / prefill-only forward pass", "measured": ratio(result["first_over_prefill"]),
         "target": "<= 1.15x"},
        {"quantity": f"speedup of FIRST vs fair baseline ({result['fair_baseline']})",
         "measured": ratio(result["speedup_first_vs_generation"])
                     + (f" ({100 * saved:.0f}% saved)" if saved is not None else ""),
         "target": "papers: 21-50% saved"},
        {"quantity": "speedup of FIRST vs default generate",
         "measured": ratio(result["speedup_first_vs_default_generate"]), "target": ""},
        {"quantity": f"decode step of {result['fair_baseline']} / bandwidth floor",
         "measured": ratio(floor, 1), "target": "about 2x"},
        {"quantity": f"cost model, max error on held-out m={c.get('held_out_sizes')}",
         "measured": "n/a" if err is None else f"{100 * err:.1f}%", "target": "<= 20%"},
    ]
    rows += [{"quantity": f"FIRST windows/s at batch {r['batch']}", "measured": f"{r['windows_per_s']:.2f}",
              "target": ">= 20 (7B shape, H100)" if result["machine"]["device"] == "cuda" else ""} for r in fast]
    if result.get("perank_processed_ratio") is not None:  # chapter 7's row, in runs that timed PE-Rank
        rows += [{"quantity": f"PE-Rank / text listwise processed tokens (same windows, text cut to "
                              f"{result.get('passage_tokens')} tokens a passage)",
                  "measured": f"{result['perank_processed_ratio']:.3f}", "target": "<= 0.20 (paper 0.15)"},
                 {"quantity": f"speedup of PE-Rank vs fair baseline ({result['fair_baseline']})",
                  "measured": ratio(result.get("speedup_perank_vs_generation")), "target": "paper: 16.20 s / 3.62 s = 4.5x"}]
    if result.get("query_likelihood_over_first") is not None:  # chapter 8's row, in runs that timed it
        rows += [{"quantity": "query likelihood / FIRST seconds per query (same candidates, one batch a window)",
                  "measured": ratio(result["query_likelihood_over_first"]), "target": "reported (issue 15)"}]
    return rows
