"""``minirank bench finetune``: the ablation of FIRST Tables 2-3 on the course collection, and training speed.

A program that runs chapter 5 (:mod:`minirank.train`): it trains one LoRA adapter per objective
(:data:`minirank.train.OBJECTIVES`) and seed on the train split, FIRST-reranks the test split's BM25
candidates with each (:func:`rerank_and_score`) and prints the table of :func:`ablation_rows`: per objective
its ranking term (loss, scale, targets: ``--protocol``), mean nDCG@10 and the spread over seeds, the paired
difference from the joint loss with its 95% interval, exact permutation p-values against the joint loss and
the zero-shot model, and the headroom of the reranked candidates. ``--restat`` recomputes that table from a
stored output's per-query scores, without training.
Each finished run is cached (``$MINIRANK_CACHE/bench_finetune``), so an interrupted benchmark picks up
where it stopped. ``--measure`` times training instead (:func:`measure_throughput`: tokens/s and peak
memory per batch size), on the real model or on a random-weight shape of :data:`minirank.models.CONFIGS`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from minirank import prompts as P
from minirank.adapters import base_signature, lora_config, quiet_peft
from minirank.models import CONFIGS, parameter_count
from minirank.records import machine, refuse_existing, write_json
from minirank.retrieval import Run
from minirank.train import (OBJECTIVES, PROTOCOLS, TrainConfig, build_examples, collate, context_length, data_hash,
                            joint_loss, last_logged, paper_scale, ranking_term, run_id, teacher_windows, train)


# ---------------------------------------------------------------- training speed

def measure_throughput(examples: Sequence[Mapping], config: TrainConfig, model=None, tokenizer=None,
                       batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32), steps: int = 3) -> list[dict]:
    """Training speed and memory per batch size: one row per size with ``tokens/step``, ``s/step``,
    ``tokens/s`` and (on CUDA) ``peak GiB`` from ``torch.cuda.max_memory_allocated``.

    Each batch size runs ``steps`` optimizer steps of the joint loss after one warm-up step, on one
    LoRA model (``config``'s adapter), until the GPU runs out of memory: that row says ``OOM`` and the
    one before it is the largest batch that fits. Mixed precision follows the model's dtype (loaded
    by :func:`minirank.models.load` when ``model`` is None). Chapter 5.10; on a CPU it runs too,
    without memory numbers.
    """
    from peft import get_peft_model

    from minirank.device import synchronize
    from minirank.models import load

    if model is None:
        model, tokenizer = load(config.model)
    if tokenizer is None:
        raise ValueError("measure_throughput got a model but no tokenizer")
    dev, dtype = next(model.parameters()).device, model.dtype
    quiet_peft()
    peft_model = get_peft_model(model, lora_config(config))
    if config.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        peft_model.enable_input_require_grads()
    peft_model.train()
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    autocast = dev.type == "cuda" and dtype != torch.float32
    scaler = torch.amp.GradScaler("cuda") if autocast and dtype == torch.float16 else None
    pad = P.pad_token_id(tokenizer)
    rows = []
    for size in batch_sizes:
        batch = collate([examples[i % len(examples)] for i in range(size)], pad)
        batch = {k: v.to(dev) for k, v in batch.items()}
        tokens = int(batch["attention_mask"].sum())
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            for step in range(steps + 1):
                if step == 1:
                    synchronize(dev)
                    start = time.perf_counter()
                with torch.autocast(dev.type, dtype=dtype, enabled=autocast):
                    loss, _ = joint_loss(peft_model, batch, config.objective, config.lam, config.pair_reduction,
                                         config.protocol)
                (scaler.scale(loss) if scaler else loss).backward()
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            synchronize(dev)
        except torch.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            rows.append({"batch": size, "tokens/step": tokens, "s/step": "OOM", "tokens/s": "", "peak GiB": ""})
            break
        seconds = (time.perf_counter() - start) / steps
        peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else ""  # no CPU counterpart
        rows.append({"batch": size, "tokens/step": tokens, "s/step": seconds, "tokens/s": tokens / seconds,
                     "peak GiB": peak})
    return rows


# ---------------------------------------------------------------- evaluation and the ablation table

def rerank_and_score(model, tokenizer, collection, candidates: Run, window: int, max_passage_tokens: int | None,
                     batch_size: int = 4, metric: str = "ndcg@10") -> tuple[Run, dict[str, float]]:
    """FIRST-rerank ``candidates`` with ``model`` (stride window // 2): the run and the per-query ``metric``."""
    from minirank.evaluate import evaluate
    from minirank.first import FirstReranker

    reranker = FirstReranker(model, tokenizer, window=window, max_passage_tokens=max_passage_tokens,
                             batch_size=batch_size)
    run = reranker.rerank(collection, candidates)
    per_query = evaluate(run, collection.qrels, (metric,))
    return run, {q: s[metric] for q, s in per_query.items()}


def _mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def _std(values) -> float:
    values = list(values)
    return statistics.stdev(values) if len(values) > 1 else 0.0


#: The columns of the ablation table, in order (every row has all of them; blanks where they do not apply).
ABLATION_COLUMNS = ("method", "loss", "scale", "targets", "ndcg@10", "seed sd", "seeds", "vs joint", "95% CI",
                    "p vs joint", "p vs zero-shot", "oracle")


def ablation_rows(zero_shot: Mapping[str, float], bm25: Mapping[str, float],
                  results: Mapping[str, Mapping[int, Mapping[str, float]]], reference: str = "joint",
                  protocol: str = "first", lam: float = 10.0, oracle: Mapping[str, float] | None = None) -> list[dict]:
    """Rows of the ablation table (columns :data:`ABLATION_COLUMNS`): BM25, zero-shot FIRST, then one per objective.
    Given ``oracle``, the BM25 row's ``oracle`` column is the headroom: the nDCG@10 of the reranked candidates in
    the qrels' own order, the most any reranker of them can reach.

    Per objective: the ranking loss, its scale and how its targets are built under ``protocol``
    (:func:`minirank.objective.ranking_term`); the mean nDCG@10 over seeds; ``seed sd``, the sample standard
    deviation of the per-seed means; and against ``reference`` and against zero-shot FIRST, on per-query
    nDCG@10 averaged over seeds, the paired difference with its 95% t interval and the exact two-sided
    permutation p-value (:func:`minirank.evaluate.paired_difference`, all 2^n sign patterns up to 20 queries).

    ``zero_shot``/``bm25``/``oracle``: per-query nDCG@10; ``results``: objective -> seed -> per-query nDCG@10.
    """
    from minirank.evaluate import paired_difference

    def row(**values):
        return {c: values.get(c, "") for c in ABLATION_COLUMNS}

    def seed_mean(per_seed):
        qids = sorted(next(iter(per_seed.values())))
        return {q: _mean(per_seed[s][q] for s in per_seed) for q in qids}

    rows = [row(method="bm25 (no reranking)", **{"ndcg@10": _mean(bm25.values()),
                                                 "oracle": _mean(oracle.values()) if oracle is not None else ""}),
            row(method="first zero-shot", **{"ndcg@10": _mean(zero_shot.values())})]
    ref = seed_mean(results[reference]) if reference in results else None
    for name, per_seed in results.items():
        per_query = seed_mean(per_seed)
        means = [_mean(per_seed[s].values()) for s in sorted(per_seed)]
        term = ranking_term(name, protocol, lam) or {"loss": "(LM only)", "scale": "", "targets": ""}
        cells = {"method": name, **term, "ndcg@10": _mean(per_query.values()), "seed sd": f"{_std(means):.3f}",
                 "seeds": len(means), "p vs zero-shot": paired_difference(per_query, zero_shot)["p"]}
        if isinstance(cells["scale"], float):
            cells["scale"] = f"{cells['scale']:g}"
        if ref is not None and name != reference:
            test = paired_difference(per_query, ref)
            cells.update({"vs joint": f"{test['mean_diff']:+.3f}", "95% CI": f"[{test['ci_low']:+.3f}, {test['ci_high']:+.3f}]",
                          "p vs joint": test["p"]})
        rows.append(row(**cells))
    return rows


def bm25_candidates(collection, depth: int) -> Run:
    """Each query's BM25 top ``depth`` on ``collection``: the candidates the ablation trains on and reranks."""
    from minirank.retrieval import BM25, top_k

    return top_k(BM25(collection.passages).search(collection.queries, depth), depth)


def oracle_scores(collection, candidates: Run, metric: str = "ndcg@10") -> dict[str, float]:
    """Per-query ``metric`` of ``candidates`` put in the qrels' order: the best any reranker of them can do."""
    from minirank.evaluate import evaluate

    ideal = {q: {p: float(collection.qrels.get(q, {}).get(p, 0)) for p in pids} for q, pids in candidates.items()}
    return {q: s[metric] for q, s in evaluate(ideal, collection.qrels, (metric,)).items()}


def stored_ablation_rows(stored: Mapping, oracle: Mapping[str, float] | None = None) -> list[dict]:
    """:func:`ablation_rows` recomputed from a stored ``--json`` output (its per-query scores), with the headroom
    ``oracle`` (default: that of its evaluation candidates, :func:`oracle_scores`). A file written before
    protocols existed was run with ``"uniform"``, and its rows are labelled so."""
    from minirank.data import load_course

    results: dict[str, dict[int, dict[str, float]]] = {}
    for key, scores in stored["per_query"].items():
        if "/seed" in key:
            objective, seed = key.rsplit("/seed", 1)
            results.setdefault(objective, {})[int(seed)] = scores
    if oracle is None:
        split = load_course(stored["eval"]["split"])
        oracle = oracle_scores(split, bm25_candidates(split, stored["eval"]["bm25_depth"]))
    config = stored["config"]
    return ablation_rows(stored["per_query"]["zero_shot"], stored["per_query"]["bm25"], results,
                         "joint" if "joint" in results else next(iter(results)),
                         config.get("protocol", "uniform"), config.get("lam", 10.0), oracle)


def restat(source: str | Path, out: str | Path, force: bool = False) -> Path:
    """``--restat``: the table of a stored ablation recomputed from its per-query scores (nothing retrained),
    written to ``out`` with everything the source holds; the per-query headroom is added as ``oracle``.
    The source's runs, config and machine are copied unchanged; ``rows_made_by`` says what made the rows."""
    from minirank.data import load_course

    refuse_existing(out, force=force)
    stored = json.loads(Path(source).read_text(encoding="utf-8"))
    split = load_course(stored["eval"]["split"])
    oracle = oracle_scores(split, bm25_candidates(split, stored["eval"]["bm25_depth"]))
    rows = stored_ablation_rows(stored, oracle)
    protocol = stored["config"].get("protocol", "uniform")
    made_by = (f"minirank bench finetune --restat {source}: rows recomputed from per_query (protocol {protocol}"
               f"{', a file from before protocols existed' if 'protocol' not in stored['config'] else ''})")
    result = {**stored, "protocol": protocol, "rows": rows, "rows_made_by": made_by,
              "per_query": {**stored["per_query"], "oracle": oracle}}
    return write_json(out, result, force=force)


def _cached(path: Path, refresh: bool, compute: Callable[[], object]):
    """The run cache: the JSON stored at ``path`` unless ``refresh``; else ``compute()``, stored whole
    (a ``.partial`` file renamed, so an interrupted benchmark never leaves a broken entry)."""
    if path.is_file() and not refresh:
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value), encoding="utf-8")
    partial.replace(path)
    return value


# ---------------------------------------------------------------- the command line

def _parser() -> argparse.ArgumentParser:
    from minirank.models import DEFAULT_MODEL

    parser = argparse.ArgumentParser(prog="minirank bench finetune", description=bench_main.__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", default=",".join(OBJECTIVES),
                        help=f"comma-separated subset of {','.join(OBJECTIVES)} (default: all)")
    parser.add_argument("--protocol", default="first", choices=list(PROTOCOLS),
                        help="first: FIRST's per-loss scale (x10 weighted RankNet, x1 RankNet and LambdaRank, x0.1 "
                             "ListNet) and its targets; uniform: lambda for every loss, ListNet/LambdaRank on grades")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--window", type=int, default=10, help="passages per window, training and test")
    parser.add_argument("--max-passage-tokens", type=int, default=32)
    parser.add_argument("--depth", type=int, default=20, help="BM25 candidates the training windows come from")
    parser.add_argument("--windows-per-query", type=int, default=2)
    parser.add_argument("--eval-depth", type=int, default=None,
                        help="BM25 candidates reranked on the test split (default: one window's worth)")
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per run (-1: --epochs)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lam", type=float, default=10.0)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--neftune", type=float, default=None, help="NEFTune noise alpha (off by default)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--paper-scale", action="store_true", help="FIRST §4.1's recipe (GPU; see paper_scale())")
    parser.add_argument("--train-split", default="train", choices=["train", "dev", "test"])
    parser.add_argument("--eval-split", default="test", choices=["train", "dev", "test"])
    parser.add_argument("--save-adapter", default=None, help="keep the first objective/seed's adapter here")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the results to this JSON file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    parser.add_argument("--no-cache", action="store_true", help="retrain runs whose results are cached")
    parser.add_argument("--restat", default=None, metavar="STORED_JSON",
                        help="recompute the table of a stored ablation from its per-query scores (no training) "
                             "and write it with --json (the same file needs --force)")
    parser.add_argument("--measure", action="store_true",
                        help="measure training speed and peak memory per batch size instead (chapter 5, GPU)")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="batch sizes for --measure")
    parser.add_argument("--config", default=None, choices=sorted(CONFIGS),
                        help="with --measure: a model shape from minirank.models.CONFIGS (e.g. mistral-7b) with "
                             "random weights instead of --model: speed and memory need the shape, not the weights, "
                             "and nothing is downloaded")
    return parser


def bench_main(argv: Sequence[str] | None = None) -> int:
    """``minirank bench finetune``: the ablation of FIRST Tables 2-3 on the course collection.

    Trains one LoRA adapter per objective and seed on the train split (``--protocol`` decides how each
    ranking term is scaled and targeted), FIRST-reranks the test split's BM25 candidates with each, and
    prints the table of :func:`ablation_rows`. Each finished run is cached (``$MINIRANK_CACHE/bench_finetune``), so an interrupted
    benchmark picks up where it stopped. ``--save-adapter DIR`` also keeps the adapter of the first
    objective and seed (how ``data/adapters/first-lora-smollm2`` was made).
    """
    from minirank.data import load_course
    from minirank.device import describe
    from minirank.evaluate import evaluate, format_table
    from minirank.models import DEFAULT_MODEL, build_random_model, cache_dir, load, load_tokenizer
    args = _parser().parse_args(list(argv) if argv is not None else None)
    if args.restat:
        if not args.json_path:
            raise ValueError("--restat needs --json OUT: where the recomputed table goes (the same file needs --force)")
        path = restat(args.restat, args.json_path, args.force)
        print(format_table(json.loads(path.read_text(encoding="utf-8"))["rows"]))
        print(f"wrote {path}")
        return 0
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}: expected some of {list(OBJECTIVES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.config is not None and not args.measure:
        raise ValueError("--config builds a model with random weights, which can be timed but not evaluated: "
                         "use it with --measure")
    if args.json_path:
        refuse_existing(args.json_path, force=args.force)  # before an hour of training, not after
    if args.save_adapter:
        refuse_existing(args.save_adapter, "adapter folder", hint="remove it yourself")
    base = dict(model=args.model, protocol=args.protocol, window=args.window, max_passage_tokens=args.max_passage_tokens,
                depth=args.depth, windows_per_query=args.windows_per_query, learning_rate=args.lr, lam=args.lam,
                lora_r=args.lora_r, lora_alpha=2 * args.lora_r, max_steps=args.steps, epochs=args.epochs,
                batch_size=args.batch_size, grad_accum=args.grad_accum, neftune_alpha=args.neftune,
                gradient_checkpointing=args.gradient_checkpointing)
    if args.paper_scale:
        base = paper_scale(args.model if args.model != DEFAULT_MODEL else "HuggingFaceTB/SmolLM2-1.7B-Instruct",
                           protocol=args.protocol).to_dict()

    if args.eval_depth is None:
        args.eval_depth = base["window"]
    print(f"minirank bench finetune on {describe()}")
    train_set, test_set = load_course(args.train_split), load_course(args.eval_split)
    train_cands = bm25_candidates(train_set, base["depth"])
    test_cands = bm25_candidates(test_set, args.eval_depth)
    bm25 = {q: s["ndcg@10"] for q, s in evaluate(test_cands, test_set.qrels, ("ndcg@10",)).items()}

    if args.config:
        tokenizer = load_tokenizer()  # the default model's: its ids fit the random model's vocabulary
        model = build_random_model(args.config, len(tokenizer))
        base["model"] = f"random weights, shape {args.config}"
    else:
        model, tokenizer = load(base["model"])
    host = machine(next(model.parameters()).device, model.dtype)
    windows = teacher_windows(train_set, train_cands, base["window"], base["windows_per_query"], seed=0)
    examples = build_examples(windows, tokenizer, base["max_passage_tokens"], context_length(model))
    digest = data_hash(examples)
    if args.measure:
        config = TrainConfig(**{**base, "objective": objectives[0]})
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        rows = measure_throughput(examples, config, model, tokenizer, sizes)
        print(f"model: {base['model']} ({parameter_count(model) / 1e6:,.0f}M parameters), "
              f"{len(examples)} windows of about {statistics.median(len(e['input_ids']) for e in examples):.0f} tokens")
        print(f"LoRA r={config.lora_r} on {config.target_modules}, activation checkpointing "
              f"{'on' if config.gradient_checkpointing else 'off'}, windows of {config.window} passages")
        print(format_table(rows))
        if args.json_path:
            out = {"machine": host, "config": config.to_dict(), "rows": rows}
            print(f"wrote {write_json(args.json_path, out, force=args.force)}")
        return 0
    print(f"training data: {len(examples)} windows of {base['window']} passages from {len(train_set.queries)} "
          f"{args.train_split} queries, hash {digest[:12]}; test: {len(test_set.queries)} {args.eval_split} "
          f"queries, BM25 top {args.eval_depth}")
    store = cache_dir() / "bench_finetune"
    store.mkdir(parents=True, exist_ok=True)
    eval_key = f"{args.eval_split}:{args.eval_depth}:{base['window']}:{base['max_passage_tokens']}"
    zs_key = hashlib.sha256(json.dumps([eval_key, base_signature(model)]).encode()).hexdigest()[:16]

    def zero_shot_scores():
        start = time.perf_counter()
        _, scores = rerank_and_score(model, tokenizer, test_set, test_cands, base["window"], base["max_passage_tokens"])
        print(f"  zero-shot: nDCG@10 {_mean(scores.values()):.3f} ({time.perf_counter() - start:.0f} s)")
        return scores

    zero_shot = _cached(store / f"zero-shot-{zs_key}.json", args.no_cache, zero_shot_scores)

    results: dict[str, dict[int, dict[str, float]]] = {}
    runs_meta = []
    for objective in objectives:
        for seed in seeds:
            config = TrainConfig(**{**base, "objective": objective, "seed": seed})
            key = run_id(config, digest, base_signature(model)) + "-" + hashlib.sha256(eval_key.encode()).hexdigest()[:8]
            keep = args.save_adapter if (objective, seed) == (objectives[0], seeds[0]) else None

            def one_run():
                fresh, _ = load(base["model"])  # peft changes the model it wraps: a fresh base per run
                result = train(examples, config, keep, model=fresh, tokenizer=tokenizer)
                start = time.perf_counter()
                _, scores = rerank_and_score(result.model, tokenizer, test_set, test_cands, config.window,
                                             config.max_passage_tokens)
                return {"objective": objective, "seed": seed, "per_query": scores,
                        "train_seconds": round(result.seconds, 1), "eval_seconds": round(time.perf_counter() - start, 1),
                        "final_loss": last_logged(result.log_history, "loss"), "log_history": result.log_history,
                        "config": config.to_dict(), "data_hash": digest, "machine": host}

            record = _cached(store / f"{key}.json", args.no_cache or keep is not None, one_run)
            results.setdefault(objective, {})[seed] = record["per_query"]
            runs_meta.append({k: record[k] for k in ("objective", "seed", "train_seconds", "eval_seconds", "final_loss")})
            print(f"  {objective} seed {seed}: nDCG@10 {_mean(record['per_query'].values()):.3f} "
                  f"(train {record['train_seconds']} s, eval {record['eval_seconds']} s)")

    oracle = oracle_scores(test_set, test_cands)
    rows = ablation_rows(zero_shot, bm25, results, objectives[0] if "joint" not in results else "joint",
                         base["protocol"], base["lam"], oracle)
    print(format_table(rows))
    print(f"protocol {base['protocol']}; seed sd: sample std of the per-seed means; vs joint and 95% CI: paired "
          f"difference and t interval over {len(zero_shot)} {args.eval_split} queries (per-query nDCG@10 averaged "
          f"over seeds); p: exact two-sided permutation (sign-flip) test")
    if args.json_path:
        out = {"machine": host, "model": base["model"], "data_hash": digest, "config": base, "seeds": seeds,
               "eval": {"split": args.eval_split, "bm25_depth": args.eval_depth}, "rows": rows, "runs": runs_meta,
               "per_query": {"bm25": bm25, "zero_shot": zero_shot, "oracle": oracle,
                             **{f"{o}/seed{s}": v for o, per in results.items() for s, v in per.items()}}}
        print(f"wrote {write_json(args.json_path, out, force=args.force)}")
    if args.save_adapter:
        print(f"adapter saved in {args.save_adapter}")
    return 0
