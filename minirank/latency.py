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
* :class:`CostModel`: ``seconds = intercept + processed * prefill_s_per_token + generated *
  decode_s_per_token``, fitted on one machine by non-negative least squares on relative error, checked on
  window sizes it was not fitted on.
* :func:`run_bench` / ``minirank bench latency``: on the same windows of the course collection,
  a prefill-only forward pass (FIRST's physical floor), FIRST (:class:`minirank.listwise.FirstReranker`),
  the default ``generate`` (dynamic KV cache) and a fair generation baseline (static KV cache, compiled
  where transformers compiles it: on GPUs), with tokens, seconds per window and per query, paired
  speedups, the decode memory-bandwidth floor and the cost model's error on held-out sizes.

Generation is forced to the length of a complete answer (``min_new_tokens = max_new_tokens``), so
that every run of every window decodes exactly the same number of tokens: a model that stops early
(or babbles) would otherwise make the comparison depend on its answer, not on the method.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minirank import prompts as P
from minirank.data import BENCH_DIR
from minirank.device import pick_device, pick_dtype, synchronize
from minirank.forward import cache_kwargs, positions, returned_cache

Clock = Callable[[], float]

#: Methods timed on every window, in this order within a round (the order rotates round by round).
METHODS = ("prefill", "first", "generate", "generate_static")
LABELS = {"prefill": "prefill-only forward (FIRST's floor)", "first": "FIRST (one forward, identifier logits)",
          "generate": "generate, default dynamic cache", "generate_static": "generate, static cache (fair baseline)"}


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
        return (f"{_fmt_s(self.median)} (min {_fmt_s(self.min)}, max {_fmt_s(self.max)}, "
                f"n={self.n}, spread {100 * self.rel_spread:.0f}%)")


def _fmt_s(seconds: float) -> str:
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
    ideal = " > ".join(P.bracket(x) for x in P.identifiers(n, style))[1:]
    return len(tokenizer.encode(ideal, add_special_tokens=False))


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
                logits_to_keep=1)
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
                    **cache_kwargs(model, past), logits_to_keep=1)
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
        return (f"t = {_fmt_s(self.intercept_s)} + P x {_fmt_s(self.prefill_s_per_token)} "
                f"({self.prefill_tokens_per_s:,.0f} tokens/s) + G x {_fmt_s(self.decode_s_per_token)}")


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


# ---------------------------------------------------------------- models with random weights (no download)

#: Model shapes written out here, built with random weights: timings depend on the shape, not the weights.
#: ``vocab_size`` is set to the tokenizer's (the default model's, 49,152) so its token ids fit.
CONFIGS: dict[str, dict] = {
    # a few hundred thousand parameters: tests
    "tiny": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 tie_word_embeddings=True),
    # the default model's architecture (SmolLM2-135M): a random copy, same speed
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    # Mistral-7B-v0.1/v0.3's shape (the backbone of FIRST's and the reproduction's rerankers), 7.2B parameters
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                       rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False),
}


def build_random_model(name: str, vocab_size: int, device=None, dtype: torch.dtype | None = None, seed: int = 0):
    """A model of shape ``CONFIGS[name]`` with random weights, built directly on ``device`` in ``dtype``."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}: expected one of {sorted(CONFIGS)}")
    device = pick_device(device)
    dtype = dtype or pick_dtype(device)
    spec = dict(CONFIGS[name])
    model_type = spec.pop("model_type")
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, bos_token_id=None, eos_token_id=None,
                                  pad_token_id=None, **spec)
    params = _param_count(config)
    if device.type == "cpu" and params * torch.finfo(dtype).bits // 8 > 8 * 2 ** 30:
        raise ValueError(f"config {name!r} has {params / 1e9:.1f}B parameters: "
                         f"{params * torch.finfo(dtype).bits / 8 / 2 ** 30:.0f} GiB in {str(dtype).replace('torch.', '')}"
                         f", too big for a CPU benchmark; run it on a GPU (it is meant for one)")
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def _param_count(config) -> int:
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    hd = getattr(config, "head_dim", None) or h // heads
    per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * i + 2 * h
    embed = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return n * per_layer + embed + h


# ---------------------------------------------------------------- the benchmark

@dataclass
class Window:
    qid: str
    start: int
    end: int
    prompt: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


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
                compile_mode: str, methods: Sequence[str]) -> dict[str, Callable[[], object]]:
    """The timed calls of one (batch of) window(s): each takes the same prompts to its result."""
    device = next(model.parameters()).device
    ids, mask = P.encode(tokenizer, prompts, device)
    pos = positions(mask)
    gen_default = _generate_kwargs(model, new_tokens, False, compile_mode)
    gen_static = _generate_kwargs(model, new_tokens, True, compile_mode)

    def prefill():
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False, logits_to_keep=1)

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

    table = {"prefill": prefill, "first": first, "generate": generate(gen_default),
             "generate_static": generate(gen_static)}
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
                prompt = reranker.prompt(collection.queries[qid], [collection.passages[p] for p in order[s:e]])
                ids, mask = P.encode(tokenizer, [prompt], device)
                windows[(qid, s, e)] = Window(qid, s, e, prompt, ids, mask)
    return collection, qids, windows, schedules


def run_bench(model=None, tokenizer=None, *, model_name: str | None = None, config: str | None = None,
              sizes: Sequence[int] = (3, 6, 10), window: int | None = None, depth: int | None = None,
              stride: int | None = None, queries: int = 2, repeats: int = 3, warmup: int | None = None,
              passage_tokens: int | None = 30, batch: Sequence[int] = (1,), compile_mode: str = "auto",
              holdout: Sequence[int] | None = None, methods: Sequence[str] = METHODS, device=None,
              dtype: torch.dtype | None = None, bandwidth: float | None = None,
              clock: Clock = time.perf_counter, echo: Callable[[str], None] = print) -> dict:
    """Time FIRST against generation on the same windows of the course collection; return the report.

    ``sizes``: window sizes of the sweep (Fig. 4; the cost model is fitted on the smallest and the
    largest and checked on the others, or on ``holdout``). ``window``/``depth``/``stride``: the
    sliding-window rerank whose per-query time is reported (default: window = depth = the largest
    size, one window per query). ``warmup``: untimed rounds per window (default: 1 when ``generate``
    compiles, else 0; one global warm-up round always runs first). ``batch``: batch sizes for the
    throughput section (windows/s) beyond the batch-1 latencies.
    """
    from minirank.listwise import FirstReranker
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
    machine = _machine(device, dtype)
    model_label = f"random-weight {config!r} config" if config else str(model_name or DEFAULT_MODEL)
    n_params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    echo(f"minirank bench latency: {machine['device_name']}, {machine['threads']} threads, torch {torch.__version__}")
    echo(f"  model {model_label} ({n_params / 1e6:,.1f}M parameters), dtype {machine['dtype']}, batch 1, "
         f"passages cut to {passage_tokens} tokens, {len(qids)} {collection.name} queries, {len(windows)} windows, "
         f"{repeats} timed rounds (+{warmup} warm-up) per window")

    # one global warm-up round on the smallest window: first calls allocate, pick kernels, compile
    first_key = min(windows, key=lambda k: windows[k].tokens)
    w0 = windows[first_key]
    fns0 = _window_fns(model, tokenizer, reranker, [w0.prompt], [w0.size], answer_tokens(tokenizer, w0.size),
                       compile_mode, methods)
    interleaved(fns0, repeats=1, warmup=0, sync=sync, clock=clock)

    # every round visits every window (and, in each, every method in rotated order)
    keys = sorted(windows, key=lambda k: (k[0], windows[k].size, k[1]))
    groups = {key: _window_fns(model, tokenizer, reranker, [windows[key].prompt], [windows[key].size],
                               answer_tokens(tokenizer, windows[key].size), compile_mode, methods) for key in keys}
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
        rec["_t"] = t
        records.append(rec)
        echo(f"  window {w.qid} [{w.start}:{w.end}] m={w.size}: P={w.tokens}, G={g}: " + ", ".join(
            f"{name} {_fmt_s(t[name].median)}" for name in t))

    by_key = {(r["qid"], r["start"], r["end"]): r for r in records}
    result: dict = {
        "benchmark": "latency", "machine": machine, "model": model_label, "parameters": n_params,
        "dtype": machine["dtype"], "batch": 1, "collection": collection.name, "queries": qids,
        "passage_tokens": passage_tokens, "sizes": sizes, "window": window, "stride": stride, "depth": depth,
        "repeats": repeats, "warmup_rounds_per_window": warmup, "global_warmup_rounds": 1,
        "compile": compile_mode, "static_cache_compiled": _compiled(device, compile_mode),
        "generation": "greedy, forced to the length of a complete answer (min_new_tokens = max_new_tokens)",
        "methods": {name: LABELS[name] for name in methods},
    }

    # per query: the windows of its sliding-window rerank, summed round by round
    per_query = []
    ratios: dict[str, list[float]] = {"first_over_prefill": [], "generate": [], "generate_static": []}
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
        per_query.append(entry)
    result["per_query"] = per_query

    def summary(values):
        return Timing(tuple(values)).as_dict() if values else None

    result["first_over_prefill"] = statistics.median(ratios["first_over_prefill"]) if ratios["first_over_prefill"] else None
    result["first_over_prefill_spread"] = summary(ratios["first_over_prefill"])
    fair = "generate_static" if "generate_static" in methods else ("generate" if "generate" in methods else None)
    result["fair_baseline"] = fair
    result["speedup_first_vs_generation"] = statistics.median(ratios[fair]) if fair else None
    result["speedup_first_vs_generation_spread"] = summary(ratios[fair]) if fair else None
    result["speedup_first_vs_default_generate"] = statistics.median(ratios["generate"]) if ratios["generate"] else None
    result["speedup_first_vs_static_generate"] = (statistics.median(ratios["generate_static"])
                                                  if ratios["generate_static"] else None)
    if fair:
        # the papers' way of saying it: the share of the generation baseline's time that FIRST saves
        result["time_saved_vs_fair_baseline"] = 1 - 1 / result["speedup_first_vs_generation"]
    result["papers_time_saved"] = {"FIRST §4.3 (A100, vs generation)": "about 50%",
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

    # the cost model: fitted on some sizes, checked on the others
    result.update(_cost_model_report(records, sizes, holdout, fair))

    # throughput: batched windows per second
    result["throughput"] = _throughput(model, tokenizer, reranker, [by_key[(q, s, e)] for q in qids
                                                                    for s, e in schedules[q]], windows, batch,
                                       repeats, warmup, compile_mode, methods, sync, clock, echo)
    for r in records:
        del r["_t"]
    result["windows"] = records
    machine["load_avg_start"], machine["load_avg_end"] = load_start, (os.getloadavg() if hasattr(os, "getloadavg")
                                                                     else None)
    echo(format_report(result))
    return result


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
                sync, clock, echo) -> list[dict]:
    rows = []
    for b in sorted(set(batch)):
        if b == 1:
            for name in methods:
                med = statistics.median([r["seconds"][name]["median_s"] for r in headline])
                rows.append({"batch": 1, "method": name, "windows_per_s": 1 / med, "seconds_per_batch": med,
                             "tokens_processed": statistics.median([r["tokens_processed"] for r in headline])})
            continue
        chosen = [windows[(r["qid"], r["start"], r["end"])] for r in headline]
        chosen = [chosen[i % len(chosen)] for i in range(b)]
        g = max(answer_tokens(tokenizer, w.size) for w in chosen)
        fns = _window_fns(model, tokenizer, reranker, [w.prompt for w in chosen], [w.size for w in chosen], g,
                          compile_mode, methods)
        t = interleaved(fns, repeats=repeats, warmup=max(1, warmup), sync=sync, clock=clock)
        for name in t:
            rows.append({"batch": b, "method": name, "windows_per_s": b / t[name].median,
                         "seconds_per_batch": t[name].median, "timing": t[name].as_dict(),
                         "tokens_processed": sum(w.tokens for w in chosen),
                         "tokens_generated": 0 if name in ("prefill", "first") else g * b})
        echo(f"  batch {b}: " + ", ".join(f"{name} {b / t[name].median:.2f} windows/s" for name in t))
    return rows


def _machine(device: torch.device, dtype: torch.dtype) -> dict:
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU ({os.cpu_count()} cores)"
    return {"device": str(device), "device_name": name, "threads": torch.get_num_threads(),
            "dtype": str(dtype).replace("torch.", ""), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "platform": platform.platform()}


# ---------------------------------------------------------------- the report

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
    return rows


def format_report(result: Mapping) -> str:
    """The benchmark's numbers as text: a table per window size, then the headline ratios."""
    methods = list(result["methods"])
    m_ = result["machine"]
    lines = [f"latency on {m_['device_name']} ({m_['device']}, {m_['threads']} threads), model {result['model']}, "
             f"dtype {result['dtype']}, batch {result['batch']}, torch {m_['torch']}",
             "seconds per window: median of the timed rounds; ratios: median of per-round ratios", ""]
    head = ["m", "P", "G"] + [n for n in methods] + ["first/prefill", "gen/first", "static/first"]
    rows = []
    for m in result["sizes"]:
        recs = [r for r in result["windows"] if r["m"] == m and r["start"] == 0]
        if not recs:
            continue
        med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
        row = [str(m), f"{med([r['tokens_processed'] for r in recs]):.0f}", f"{med([r['tokens_generated'] for r in recs]):.0f}"]
        row += [_fmt_s(med([r["seconds"][n]["median_s"] for r in recs])) for n in methods]
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
                 + ", ".join(f"{n} {_fmt_s(s)}" for n, s in result["seconds_per_query"].items()))

    from minirank.evaluate import format_table

    lines += ["", format_table(headline_rows(result)), "", "details:"]
    d = result["decode"]
    lines.append(f"decode: floor {_fmt_s(d['floor_s_per_token'])}/token at {d['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s "
                 f"(context {d['context_tokens']:.0f}); " + ", ".join(
                     f"{k} {_fmt_s(v)}/token = {d['over_floor'][k]:.1f}x floor" for k, v in d["s_per_token"].items())
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
        description="FIRST vs generation on the same windows of the course collection: seconds per window and "
                    "per query, tokens, paired speedups, FIRST over a prefill-only pass, the decode floor, and a "
                    "cost model checked on held-out window sizes. The CPU default takes about 3 minutes.")
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
    if args.json_path and Path(args.json_path).exists() and not args.force:
        raise FileExistsError(f"{args.json_path} exists; minirank does not overwrite results: choose another path "
                              f"or pass --force")
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
        path = Path(args.json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=_json_default) + "\n", encoding="utf-8")
        print(f"wrote {path}")
    return 0


def _json_default(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
