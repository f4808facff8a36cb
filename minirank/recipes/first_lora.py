"""first-lora: the shipped FIRST adapter, trained on the train split with the step chosen on the dev split.

``minirank train first-lora --out DIR --json CURVE.json`` (chapter 5, FIRST §3.2 and §4.1 in miniature):

1. training windows from every training query's BM25 top ``depth`` with the graded qrels as the teacher
   (:func:`minirank.trainset.teacher_windows`): window 0 in BM25's order, the others random subsets in
   shuffled order (RankZephyr's augmentation against position bias);
2. LoRA training with FIRST's joint objective (:func:`minirank.train.train`, trl's ``SFTTrainer``) for
   ``--steps`` steps;
3. every ``--eval-every`` steps (and before the first), the adapter reranks the **dev** split's BM25 top
   ``depth`` with FIRST; the step with the best dev nDCG@10 (the earliest of equals) is the one kept
   (FIRST §4.1 holds out 300 MS MARCO queries for the same purpose);
4. the kept adapter reranks the **test** split, compared with BM25 by :func:`minirank.evaluate.experiment`
   (paired difference, 95% interval, exact sign-flip p-value);
5. the adapter goes to ``--out`` with its provenance (command, budget in seconds, data hash, seed, the dev
   curve, the chosen step, the test comparison, the machine), the curve and the comparison to ``--json``.
   Neither may exist already (``--force`` replaces the JSON, never an adapter folder).

Budget on the defaults (the default model, windows of 10 passages cut to 32 tokens, four windows per training
query, batch 1, 300 steps: about two passes over the windows; a dev evaluation is 30 forward passes): the shipped
adapter took 43.5 minutes on one thread of a 2-core CPU whose other core was busy (its provenance file records
the seconds and the machine); ``--steps`` and ``--eval-every`` scale it.
"""
from __future__ import annotations

import argparse
import sys
import time

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minirank train first-lora", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the adapter folder to write (must not exist)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the curve and test result here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    parser.add_argument("--model", default=None, help="base LLM (default: the book's default model)")
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps (batch 1)")
    parser.add_argument("--eval-every", type=int, default=25, help="dev evaluation every N steps")
    parser.add_argument("--window", type=int, default=10, help="passages per training and test window")
    parser.add_argument("--passage-tokens", type=int, default=32, help="each passage cut to this many tokens")
    parser.add_argument("--depth", type=int, default=20, help="BM25 candidates per query (train, dev and test)")
    parser.add_argument("--windows-per-query", type=int, default=4, help="training windows drawn per query")
    parser.add_argument("--learning-rate", type=float, default=2e-4,
                        help="peak learning rate (linear warm-up over 5%% of the steps, then linear decay)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=None,
                        help="train on the first N training queries only (the curve against training queries)")
    return parser


def _check(args) -> None:
    for name in ("steps", "eval_every", "window", "passage_tokens", "depth", "windows_per_query"):
        value = getattr(args, name)
        if value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if args.window < 2:
        raise ValueError(f"--window must be at least 2 passages, got {args.window}")
    if args.queries is not None and args.queries < 1:
        raise ValueError(f"--queries must be a positive integer, got {args.queries}")


def dev_scorer(collection, candidates, tokenizer, window: int, passage_tokens: int):
    """``score(model)``: the dev nDCG@10 of FIRST (the model being trained) on ``candidates``."""
    from minirank import evaluate
    from minirank.first import FirstReranker

    def score(model) -> float:
        reranker = FirstReranker(model, tokenizer, window=window, max_passage_tokens=passage_tokens)
        run = reranker.rerank(collection.queries, candidates, collection.passages)
        per_query = evaluate.evaluate(run, collection.qrels, ["ndcg@10"], relevance_level=collection.relevance_level)
        return evaluate.mean(per_query, "ndcg@10")

    return score


def train_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    from minirank import data, evaluate, retrieval
    from minirank.adapters import save_adapter
    from minirank.first import FirstReranker
    from minirank.models import DEFAULT_MODEL, load
    from minirank.records import machine, refuse_existing, write_json
    from minirank.recipes.devcurve import DevCurve
    from minirank.rerank import Cascade
    from minirank import train as T

    refuse_existing(args.out, "adapter folder", hint="remove it yourself")
    if args.json_path:
        refuse_existing(args.json_path, "--json file", force=args.force)
    started = time.perf_counter()
    splits = {s: data.load_course(s) for s in ("train", "dev", "test")}
    bm25 = retrieval.BM25(splits["train"].passages)  # one corpus: the splits share the passages
    train_set = splits["train"]
    qids = sorted(train_set.queries)[: args.queries] if args.queries else sorted(train_set.queries)
    candidates = bm25.search({q: train_set.queries[q] for q in qids}, k=args.depth)
    windows = T.teacher_windows(train_set, candidates, window=args.window, windows_per_query=args.windows_per_query,
                                seed=args.seed, shuffle=True)
    model, tokenizer = load(args.model)
    dataset = T.examples_dataset(windows, tokenizer, max_passage_tokens=args.passage_tokens,
                                 max_length=T.context_length(model))
    config = T.TrainConfig(model=str(args.model or DEFAULT_MODEL), window=args.window,
                           max_passage_tokens=args.passage_tokens, depth=args.depth,
                           windows_per_query=args.windows_per_query, learning_rate=args.learning_rate,
                           max_steps=args.steps, warmup_ratio=0.05, seed=args.seed, save_steps=args.eval_every,
                           logging_steps=min(5, args.eval_every))
    dev = splits["dev"]
    dev_candidates = bm25.search(dev.queries, k=args.depth)
    dev_bm25 = evaluate.mean(evaluate.evaluate(dev_candidates, dev.qrels, ["ndcg@10"],
                                               relevance_level=dev.relevance_level), "ndcg@10")
    curve = DevCurve(dev_scorer(dev, dev_candidates, tokenizer, args.window, args.passage_tokens), args.eval_every,
                     len(dataset))
    print(f"minirank train first-lora: {len(dataset)} windows from {len(qids)} training queries, "
          f"{args.steps} steps; dev nDCG@10 every {args.eval_every} steps")
    result = T.train(dataset, config, model=model, tokenizer=tokenizer, callbacks=[curve.callback])
    if not result.finished:
        raise RuntimeError("training stopped before its last step; run the same command again to resume")
    peft_model = result.model
    curve.restore_best(peft_model)  # the dev-chosen step, not the last one
    peft_model.eval()

    test = splits["test"]
    reranker = FirstReranker(peft_model, tokenizer, window=args.window, max_passage_tokens=args.passage_tokens)
    reranker.name = "first-lora"
    table = evaluate.experiment({"bm25": bm25, "first-lora": Cascade(bm25, reranker, args.depth, test.passages)},
                                test, ("ndcg@10", "recall@20"), baseline="bm25", progress=False)
    print(evaluate.format_table(table.rows))
    paired = evaluate.paired_difference({q: v["ndcg@10"] for q, v in table.per_query["first-lora"].items()},
                                        {q: v["ndcg@10"] for q, v in table.per_query["bm25"].items()})
    test_result = {"queries": len(test.qrels), "bm25": evaluate.mean(table.per_query["bm25"], "ndcg@10"),
                   "first-lora": evaluate.mean(table.per_query["first-lora"], "ndcg@10"),
                   "first-lora - bm25": paired, "rows": table.rows}
    seconds = round(time.perf_counter() - started, 1)
    command = "minirank train first-lora " + " ".join(sys.argv[3:] if argv is None else argv)
    record = {"recipe": "first-lora", "command": command, "seconds": seconds, "train_seconds": round(result.seconds, 1),
              "training_queries": len(qids), "windows": len(dataset), "steps": args.steps,
              "eval_every": args.eval_every, "chosen_step": curve.best_step, "dev_curve": curve.points,
              "dev_queries": len(dev.queries), "dev_bm25": round(dev_bm25, 4), "test": test_result, "machine": machine(peft_model.device)}
    save_adapter(peft_model, args.out, config, result.data_hash, len(dataset),
                 {"final_loss": T.last_logged(result.log_history, "loss"), "steps": result.config.max_steps,
                  **{k: v for k, v in record.items() if k != "test"},
                  "test": {k: v for k, v in test_result.items() if k != "rows"}})
    print(f"adapter (step {curve.best_step}, dev nDCG@10 "
          f"{max(p['ndcg@10'] for p in curve.points if p['step'] == curve.best_step):.4f}) saved in {args.out}")
    if args.json_path:
        write_json(args.json_path, {**record, "log_history": result.log_history}, force=args.force)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
