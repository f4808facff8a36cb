"""query-likelihood: the shipped two-stage query-likelihood ranker (chapter 8, TSARankLLM §2.2-2.3 in miniature).

``minirank train query-likelihood --out DIR --json RESULT.json`` makes the folder ``minirank demo``'s row
``ql-two-stage`` reads, with the chapter's own code (:mod:`minirank.tsarank`) and the harness of chapter 5 (``trl``'s
``SFTTrainer``, ``datasets``):

1. **Stage one, continual pre-training** (§2.2, eq. 2) on weak pairs from the passages judged for the train split's
   queries and for no dev or test query (:func:`minirank.tsarank.training_pairs`: a passage's first sentence is the
   "query" for the rest), one pass at batch 4; the loss is on the query tokens and EOS.
2. **Stage two, supervised fine-tuning** (§2.3, eq. 3-5) on groups of the train split (each relevant passage with 3
   unjudged BM25 candidates, :func:`minirank.tsarank.sft_groups`): contrastive term at τ = 0.001, NTP on the
   positive's query tokens, differential penalty to the stage-one model, α = 0.6 (§3.1).
3. Both stages train **LoRA on the top 20 of the 30 blocks** (:func:`minirank.tsarank.top_layers_lora`; the paper
   trains the top blocks themselves, which the book could not ship: 280 MB against a few MB); stage one's adapter is
   merged into the weights before stage two, so the differential penalty's reference is the model with stage two's
   adapter switched off.
4. **The stage-two step is chosen on the dev split**: query likelihood reranks the dev queries' BM25 top ``depth``
   before any training (zero-shot), after stage one (step 0) and every ``--eval-every`` steps; the best trained step
   (the earliest of equals) is kept. The test split is read once, at the end: zero-shot and adapted query
   likelihood against BM25 (:func:`minirank.evaluate.experiment`).
5. Saved with :func:`minirank.tsarank.save_tsarank` into ``--out`` (must not exist): ``cpt/``, ``sft/`` and the
   provenance (command, seconds, data hashes, seed, both stages' losses, the dev curve, the chosen step, the test
   comparison, versions, the machine); ``--json`` gets the same record (``--force`` replaces it, never a folder).

Budget on the defaults: about 10 minutes on a quiet 2-core CPU with the default model (the provenance records the
seconds of each part). Every draw (LoRA's initial weights, data order, negatives) comes from ``--seed``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path

DEFAULTS = dict(cpt_epochs=1.0, cpt_batch=4, cpt_lr=2e-4, sft_steps=120, sft_lr=1e-4, eval_every=30, negatives=3,
                lora_r=4, top_layers=20, depth=20, seed=0)


def _parser() -> argparse.ArgumentParser:
    d = DEFAULTS
    parser = argparse.ArgumentParser(prog="minirank train query-likelihood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the folder to write (must not exist)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the record here")
    parser.add_argument("--force", action="store_true", help="replace an existing --json file")
    parser.add_argument("--model", default=None, help="base LLM (default: the book's default model)")
    parser.add_argument("--cpt-epochs", type=float, default=d["cpt_epochs"], help="passes over the weak pairs")
    parser.add_argument("--cpt-batch", type=int, default=d["cpt_batch"], help="weak pairs per stage-one step")
    parser.add_argument("--cpt-lr", type=float, default=d["cpt_lr"], help="stage one's peak learning rate")
    parser.add_argument("--sft-steps", type=int, default=d["sft_steps"], help="stage two's steps (one group each)")
    parser.add_argument("--sft-lr", type=float, default=d["sft_lr"], help="stage two's peak learning rate")
    parser.add_argument("--eval-every", type=int, default=d["eval_every"], help="dev evaluation every N stage-two steps")
    parser.add_argument("--negatives", type=int, default=d["negatives"], help="negatives per group")
    parser.add_argument("--lora-r", type=int, default=d["lora_r"], help="LoRA rank of both stages")
    parser.add_argument("--top-layers", type=int, default=d["top_layers"], help="decoder blocks that adapt (the top ones)")
    parser.add_argument("--depth", type=int, default=d["depth"], help="BM25 candidates per query (dev and test)")
    parser.add_argument("--passage-tokens", type=int, default=None,
                        help="each passage cut to this many tokens (default: the rerankers' default, 64)")
    parser.add_argument("--seed", type=int, default=d["seed"])
    parser.add_argument("--limit-pairs", type=int, default=None, help="use only the first N weak pairs (smoke tests)")
    parser.add_argument("--limit-groups", type=int, default=None, help="use only the first N groups (smoke tests)")
    return parser


def _check(args) -> None:
    for name in ("cpt_batch", "sft_steps", "eval_every", "negatives", "lora_r", "top_layers", "depth"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if not args.cpt_epochs > 0:
        raise ValueError(f"--cpt-epochs must be positive, got {args.cpt_epochs}")
    for name in ("limit_pairs", "limit_groups", "passage_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _hash(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def train_main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    from minirank import __version__, data, evaluate, retrieval
    from minirank import prompts as P
    from minirank import tsarank as T
    from minirank.adapters import save_lora
    from minirank.models import DEFAULT_MODEL, load
    from minirank.pointwise import QueryLikelihoodReranker
    from minirank.records import machine, refuse_existing, write_json
    from minirank.recipes.devcurve import DevCurve
    from minirank.rerank import Cascade

    refuse_existing(args.out, "query-likelihood folder", hint="remove it yourself")
    if args.json_path:
        refuse_existing(args.json_path, "--json file", force=args.force)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    cut = args.passage_tokens or P.DEFAULT_MAX_PASSAGE_TOKENS
    splits = {s: data.load_course(s) for s in ("train", "dev", "test")}
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    bm25 = retrieval.BM25(train.passages)  # one corpus: the splits share the passages
    pairs = T.training_pairs(train, held_out=(dev, test))[: args.limit_pairs]
    groups = T.sft_groups(train, bm25.search(train.queries, k=args.depth), negatives=args.negatives,
                          seed=args.seed)[: args.limit_groups]
    base_name = str(args.model or DEFAULT_MODEL)
    model, tokenizer = load(args.model)
    limit = T.context_length(model)
    cpt_rows = T.cpt_dataset(pairs, tokenizer, cut, limit=limit)
    sft_rows = T.sft_dataset(groups, tokenizer, cut, limit=limit)
    cpt_steps = round(args.cpt_epochs * len(pairs) / args.cpt_batch)
    if cpt_steps < 1:
        raise ValueError(f"--cpt-epochs {args.cpt_epochs} gives no stage-one step over {len(pairs)} weak pairs at batch "
                         f"{args.cpt_batch}; the folder ships both stages, so stage one needs at least one step")
    dev_candidates = bm25.search(dev.queries, k=args.depth)

    def mean_ndcg(run) -> float:  # dev nDCG@10 of a run
        return evaluate.mean(evaluate.evaluate(run, dev.qrels, ["ndcg@10"], relevance_level=dev.relevance_level),
                             "ndcg@10")

    def dev_ndcg(m) -> float:  # ... of query likelihood with the model being trained
        return mean_ndcg(QueryLikelihoodReranker(m, tokenizer, max_passage_tokens=cut).rerank(
            dev.queries, dev_candidates, dev.passages))

    seconds["load"] = time.perf_counter() - started
    print(f"minirank train query-likelihood: {base_name}; stage 1 on {len(pairs)} weak pairs ({cpt_steps} steps of "
          f"{args.cpt_batch}), stage 2 on {len(groups)} groups ({args.sft_steps} steps); LoRA r={args.lora_r} on the "
          f"top {args.top_layers} blocks; dev: {len(dev.queries)} queries, BM25 top {args.depth}")
    t = time.perf_counter()
    dev_bm25, dev_zero_shot = mean_ndcg(dev_candidates), dev_ndcg(model)
    print(f"  dev nDCG@10: BM25 {dev_bm25:.4f}, zero-shot query likelihood {dev_zero_shot:.4f}")
    seconds["dev_zero_shot"] = time.perf_counter() - t

    with tempfile.TemporaryDirectory(prefix="minirank-ql-") as scratch:
        t = time.perf_counter()
        stage1 = T.continual_pretraining(model, tokenizer, cpt_rows, steps=cpt_steps, batch_size=args.cpt_batch,
                                         lr=args.cpt_lr, top_layers=args.top_layers, seed=args.seed,
                                         lora_r=args.lora_r, merge=False, scheduler="linear", warmup=0.05)
        seconds["stage1"] = time.perf_counter() - t
        cpt_losses = [round(h["loss"], 4) for h in stage1.history]
        print(f"  stage 1: {cpt_steps} steps, loss {cpt_losses[0]:.3f} -> {cpt_losses[-1]:.3f} "
              f"({seconds['stage1']:.0f} s)")
        cpt_folder = save_lora(stage1.model, Path(scratch) / "cpt", base_name, "minirank.tsarank",
                               {"stage": "continual pre-training"})
        model = stage1.model.merge_and_unload()  # stage one now in the weights: stage two's base and reference
        for parameter in model.parameters():
            parameter.requires_grad_(False)

        curve = DevCurve(dev_ndcg, args.eval_every, len(groups))
        t = time.perf_counter()
        stage2 = T.supervised_fine_tuning(model, tokenizer, sft_rows, steps=args.sft_steps,
                                          config=T.SFTConfig(max_passage_tokens=cut), lr=args.sft_lr,
                                          top_layers=args.top_layers, seed=args.seed, lora_r=args.lora_r,
                                          scheduler="linear", warmup=0.05, callbacks=[curve.callback])
        seconds["stage2_with_dev"] = time.perf_counter() - t
        tuned = stage2.model
        curve.restore_best(tuned)
        tuned.eval()
        print(f"  chosen: step {curve.best_step} (dev nDCG@10 {curve.best_score:.4f})")

        t = time.perf_counter()
        zero_shot_model, _ = load(args.model)
        systems = {"bm25": bm25,
                   "query-likelihood": Cascade(bm25, QueryLikelihoodReranker(zero_shot_model, tokenizer,
                                                                             max_passage_tokens=cut), args.depth,
                                               test.passages),
                   "ql-two-stage": Cascade(bm25, QueryLikelihoodReranker(tuned, tokenizer, max_passage_tokens=cut),
                                           args.depth, test.passages)}
        table = evaluate.experiment(systems, test, ("ndcg@10", "recall@20"), baseline="bm25", progress=False)
        print(evaluate.format_table(table.rows))
        per = {name: {q: v["ndcg@10"] for q, v in table.per_query[name].items()} for name in systems}
        test_result = {"queries": len(test.qrels), "depth": args.depth, "passage_tokens": cut,
                       **{name: evaluate.mean(table.per_query[name], "ndcg@10") for name in systems},
                       "ql-two-stage - bm25": evaluate.paired_difference(per["ql-two-stage"], per["bm25"]),
                       "ql-two-stage - query-likelihood": evaluate.paired_difference(per["ql-two-stage"],
                                                                                      per["query-likelihood"]),
                       "rows": table.rows}
        seconds["test"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - started

        import peft
        import torch
        import transformers
        import trl

        command = "minirank train query-likelihood " + " ".join(sys.argv[3:] if argv is None else argv)
        record = {
            "recipe": "query-likelihood", "command": command, "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "seed": args.seed, "passage_tokens": cut,
            "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r, "top_layers": args.top_layers,
                     "modules": list(T.LORA_MODULES)},
            "stage1": {"what": "continual pre-training (§2.2, eq. 2): weak pairs, loss on the query tokens and EOS",
                       "pairs": len(pairs), "data_hash": _hash(pairs), "steps": cpt_steps,
                       "batch_size": args.cpt_batch, "lr": args.cpt_lr, "schedule": "linear, 5% warm-up",
                       "trainable": stage1.trainable, "loss": cpt_losses},
            "stage2": {"what": "supervised fine-tuning (§2.3, eq. 3-5): contrastive (tau 0.001) + NTP + differential "
                               "penalty, alpha 0.6", "groups": len(groups), "negatives": args.negatives,
                       "data_hash": _hash([[g.query, list(g.candidates)] for g in groups]), "steps": args.sft_steps,
                       "lr": args.sft_lr, "schedule": "linear, 5% warm-up", "trainable": stage2.trainable,
                       "history": [{k: round(v, 4) for k, v in h.items()} for h in stage2.history]},
            "dev": {"queries": len(dev.queries), "candidates": f"BM25 top {args.depth}", "bm25": round(dev_bm25, 4),
                    "zero_shot": round(dev_zero_shot, 4), "curve": curve.points},
            "chosen_step": curve.best_step, "chosen_dev_ndcg@10": round(curve.best_score, 4),
            "test": {k: v for k, v in test_result.items() if k != "rows"},
            "versions": {"minirank": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__, "trl": trl.__version__},
            "machine": machine(next(tuned.parameters()).device),
        }
        T.save_tsarank(cpt_folder, tuned, args.out, base_name, record)
    print(f"wrote {args.out} in {seconds['total']:.0f} s")
    if args.json_path:
        write_json(args.json_path, {**record, "test": test_result}, force=args.force)
        print(f"wrote {args.json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(train_main())
