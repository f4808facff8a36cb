"""pe-rank: PE-Rank's shipped projector and LoRA adapter (chapter 7): alignment, learning to rank, step chosen on dev.

``minirank train pe-rank --out data/adapters/perank-smollm2`` made the folder the book ships. With the
chapter's own code (:mod:`minirank.perank_train`), on the default model and all-MiniLM-L6-v2:

1. **Stage 1, alignment** (§3.3, eq. 2-3): only the projector learns, on reconstructing the course
   collection's passages from their vectors (:func:`minirank.perank_train.align`; the passages' texts
   only, no judgement of any split).
2. **Stage 2, learning to rank** (§3.3, eq. 4-5): LoRA on the LLM's query and value projections and
   the projector learn on the **train** split's BM25 top-20 windows, the teacher order from the graded
   qrels as in chapter 5 (:func:`minirank.train.teacher_windows`), with
   :func:`minirank.perank_train.learn_to_rank`. The content-aware pass and the KL term (eq. 6-8) are
   off by default: on this CPU they make a step of a 20-passage window about 8 times dearer (about 17 s
   against 2 s), and the paper's own ablation (Table 4, row c) loses little without them (DL19 0.6843
   against 0.7048, DL20 0.6442 against 0.6354). ``--content-aware`` turns eq. 8 on.
3. **The step is chosen on the dev split**: PE-Rank reranks the dev queries' BM25 top 20 (one window
   each, as the demo does) after stage 1 (step 0) and every ``--eval-every`` steps of stage 2; the
   checkpoint with the best nDCG@10 (the earliest on ties) is the one saved. The test split is never
   looked at.
4. **Saved** with :func:`minirank.perank.save_perank` into a folder that must not exist: ``lora/``,
   ``projector/`` and ``minirank_perank.json``, the provenance: the budget, each stage's steps and
   losses, the dev curve and the chosen step, the data hash, the seed, versions and the machine.

Budget: about 10 minutes on a 2-core CPU with the default model (the defaults below; the provenance
records the seconds each part took). Every draw (initial weights, data order) comes from ``--seed``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Callable, Sequence

#: The defaults of ``minirank train pe-rank``: about 10 minutes on a 2-core CPU with the default model.
BUDGET_S = 600
DEFAULTS = dict(align_steps=24, align_batch=8, align_lr=1e-3, align_tokens=32, rank_steps=150, rank_batch=1,
                rank_lr=5e-4, eval_every=50, window=20, lora_r=8, lora_alpha=16, max_passage_tokens=32,
                kl_weight=0.2, seed=0)
TARGET_MODULES = ("q_proj", "v_proj")  # as chapter 5's shipped adapter: 0.46M LoRA weights, under 2 MB


def data_hash(passages: Sequence[tuple[str, str]], windows: Sequence) -> str:
    """SHA-256 of what both stages train on: the alignment passages ``(pid, text)`` and the training
    windows (query, passages, teacher order). Same hash, same data."""
    rows = {"align": [list(p) for p in passages],
            "rank": [[w.qid, w.query, list(w.pids), list(w.texts), list(w.order)] for w in windows]}
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _snapshot(model, projector) -> dict:
    from minirank.adapters import lora_state

    return {"lora": lora_state(model), "projector": {k: v.detach().cpu().clone() for k, v in projector.state_dict().items()}}


def _restore(model, projector, state: dict) -> None:
    result = model.load_state_dict(state["lora"], strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"restoring the chosen checkpoint: unexpected keys {result.unexpected_keys[:3]}")
    projector.load_state_dict(state["projector"])


def make_perank(out, *, model_name: str | None = None, model=None, tokenizer=None, encoder=None,
                align_steps: int = DEFAULTS["align_steps"], align_batch: int = DEFAULTS["align_batch"],
                align_lr: float = DEFAULTS["align_lr"], align_tokens: int = DEFAULTS["align_tokens"],
                rank_steps: int = DEFAULTS["rank_steps"], rank_batch: int = DEFAULTS["rank_batch"],
                rank_lr: float = DEFAULTS["rank_lr"], eval_every: int = DEFAULTS["eval_every"],
                content: bool = False, kl_weight: float = DEFAULTS["kl_weight"],
                max_passage_tokens: int = DEFAULTS["max_passage_tokens"], window: int = DEFAULTS["window"],
                lora_r: int = DEFAULTS["lora_r"], lora_alpha: int = DEFAULTS["lora_alpha"],
                seed: int = DEFAULTS["seed"], device=None, command: str | None = None,
                echo: Callable[[str], None] = print) -> dict:
    """Run both stages, choose the stage-2 step on dev, save the folder ``out``; return its provenance.

    ``model``/``tokenizer``/``encoder``: given (tests: a tiny random model and a stand-in encoder), they
    are used as they are and ``model_name`` is only recorded; else the default model (or ``model_name``)
    and :class:`minirank.perank.PassageEncoder` are loaded. ``out`` must not exist (checked first).
    """
    from minirank import __version__
    from minirank import perank as PR
    from minirank import perank_train as T
    from minirank.data import load_course
    from minirank.evaluate import evaluate, mean
    from minirank.models import DEFAULT_MODEL, load
    from minirank.records import machine, refuse_existing
    from minirank.retrieval import BM25
    from minirank.train import teacher_windows

    refuse_existing(out, "PE-Rank folder", hint="remove it yourself")
    for name, value in (("align_steps", align_steps), ("rank_steps", rank_steps), ("eval_every", eval_every),
                        ("align_batch", align_batch), ("rank_batch", rank_batch), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name.endswith("steps") else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name.endswith('steps') else 'positive'} "
                             f"integer, got {value!r}")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    base_model = str(model_name or DEFAULT_MODEL)
    if model is None:
        model, tokenizer = load(model_name, device)
    elif tokenizer is None:
        raise ValueError("make_perank got a model but no tokenizer")
    encoder = encoder or PR.PassageEncoder(device=device)
    tokenizer = PR.with_perank_tokens(tokenizer)
    train, dev = load_course("train"), load_course("dev")
    passages = [(pid, train.passages[pid]) for pid in sorted(train.passages)]
    windows = teacher_windows(train, BM25(train.passages).search(train.queries, k=window), window=window)
    dev_candidates = BM25(dev.passages).search(dev.queries, k=window)
    digest = data_hash(passages, windows)
    seconds["load"] = time.perf_counter() - started
    echo(f"minirank train pe-rank: {base_model}, encoder {encoder.name}; stage 1 on {len(passages)} passages, "
         f"stage 2 on {len(windows)} train windows of {window}; dev: {len(dev.queries)} queries")

    # stage 1: the projector alone
    t = time.perf_counter()
    projector = PR.new_projector(encoder, model, seed=seed)
    align = T.align(model, tokenizer, encoder, projector, [text for _, text in passages], steps=align_steps,
                    batch_size=align_batch, lr=align_lr, max_text_tokens=align_tokens, seed=seed)
    seconds["stage1"] = time.perf_counter() - t
    if align:
        echo(f"  stage 1: {align_steps} steps, reconstruction loss {align[0]['loss']:.2f} -> {align[-1]['loss']:.2f} "
             f"({seconds['stage1']:.0f} s)")

    # stage 2, with the dev curve taken along the way
    model = T.add_lora(model, r=lora_r, alpha=lora_alpha, seed=seed, target_modules=TARGET_MODULES)
    curve: list[dict] = []
    best: dict = {}
    eval_seconds = [0.0]

    def evaluate_dev(step: int, history: Sequence[dict]) -> None:
        if step % eval_every and step != rank_steps:
            return
        t0 = time.perf_counter()
        reranker = PR.PERankReranker(model, tokenizer, encoder, projector, window=window)
        score = mean(evaluate(reranker.rerank(dev, dev_candidates), dev.qrels, ["ndcg@10"]), "ndcg@10")
        recent = [h["loss"] for h in history[-eval_every:]]
        curve.append({"step": step, "ndcg@10": score,
                      "train_loss": sum(recent) / len(recent) if recent else None})
        if not best or score > best["ndcg@10"]:
            best.update({"step": step, "ndcg@10": score, "state": _snapshot(model, projector)})
        eval_seconds[0] += time.perf_counter() - t0
        echo(f"  step {step}: dev nDCG@10 {score:.3f}" + (f", train loss {curve[-1]['train_loss']:.2f}"
                                                          if recent else " (after stage 1 only)"))

    bm25_dev = mean(evaluate(dev_candidates, dev.qrels, ["ndcg@10"]), "ndcg@10")
    echo(f"  dev nDCG@10 of BM25 (the candidates' order): {bm25_dev:.3f}")
    evaluate_dev(0, [])
    before = eval_seconds[0]
    t = time.perf_counter()
    rank = T.learn_to_rank(model, tokenizer, encoder, projector, windows, steps=rank_steps, batch_size=rank_batch,
                           lr=rank_lr, kl_weight=kl_weight, content=content, max_passage_tokens=max_passage_tokens,
                           seed=seed, callback=evaluate_dev)
    seconds["stage2"] = time.perf_counter() - t - (eval_seconds[0] - before)  # training only
    seconds["dev_evaluation"] = eval_seconds[0]
    _restore(model, projector, best.pop("state"))
    echo(f"  chosen: step {best['step']} (dev nDCG@10 {best['ndcg@10']:.3f})")

    import peft
    import sentence_transformers
    import torch
    import transformers

    seconds["total"] = time.perf_counter() - started
    provenance = {
        "recipe": "minirank train pe-rank", "command": command, "budget_s": BUDGET_S, "seconds": seconds,
        "window": window, "seed": seed, "data_hash": digest,
        "stage1": {"what": "alignment (§3.3): projector only, text reconstruction, Table 7 templates",
                   "passages": len(passages), "steps": align_steps, "batch_size": align_batch, "lr": align_lr,
                   "max_text_tokens": align_tokens, "loss": [round(h["loss"], 4) for h in align]},
        "stage2": {"what": "learning to rank (§3.3): LoRA + projector, ListMLE over decoding steps (eq. 5)"
                           + (" + content-aware pass + KL (eq. 8)" if content else ""),
                   "split": "train", "windows": len(windows), "candidates": f"BM25 top {window}",
                   "teacher": "graded qrels (minirank.train.teacher_windows)", "steps": rank_steps,
                   "batch_size": rank_batch, "lr": rank_lr, "content_aware": content,
                   "kl_weight": kl_weight if content else None,
                   "max_passage_tokens": max_passage_tokens if content else None,
                   "lora": {"r": lora_r, "alpha": lora_alpha, "target_modules": list(TARGET_MODULES)},
                   "loss": [round(h["loss"], 4) for h in rank]},
        "dev": {"split": "dev", "queries": len(dev.queries), "candidates": f"BM25 top {window}, one window per query",
                "metric": "ndcg@10", "bm25_ndcg@10": bm25_dev, "curve": curve},
        "chosen_step": best["step"], "chosen_dev_ndcg@10": best["ndcg@10"],
        "versions": {"minirank": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "peft": peft.__version__, "sentence-transformers": sentence_transformers.__version__},
        "machine": machine(),
    }
    PR.save_perank(model, projector, out, encoder, tokenizer, base_model, provenance)
    echo(f"wrote {out} in {seconds['total']:.0f} s")
    return provenance


def train_main(argv: list[str] | None = None) -> int:
    """``minirank train pe-rank --out FOLDER [options]``: the recipe of the shipped PE-Rank."""
    d = DEFAULTS
    parser = argparse.ArgumentParser(
        prog="minirank train pe-rank",
        description="PE-Rank's projector and LoRA adapter (chapter 7): stage 1 (alignment) on the course passages, "
                    "stage 2 (learning to rank) on the train split, the stage-2 step chosen by dev nDCG@10, saved "
                    "with its provenance into a new folder. The defaults take about 10 minutes on a 2-core CPU.")
    parser.add_argument("--out", required=True, help="the folder to write (must not exist)")
    parser.add_argument("--model", default=None, help="base LLM (default: the default model)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: minirank.device.pick_device)")
    parser.add_argument("--align-steps", type=int, default=d["align_steps"], help=f"stage 1 steps (default {d['align_steps']})")
    parser.add_argument("--align-batch", type=int, default=d["align_batch"], help=f"stage 1 batch (default {d['align_batch']})")
    parser.add_argument("--rank-steps", type=int, default=d["rank_steps"], help=f"stage 2 steps (default {d['rank_steps']})")
    parser.add_argument("--rank-batch", type=int, default=d["rank_batch"], help=f"stage 2 batch (default {d['rank_batch']})")
    parser.add_argument("--rank-lr", type=float, default=d["rank_lr"], help=f"stage 2 learning rate (default {d['rank_lr']})")
    parser.add_argument("--eval-every", type=int, default=d["eval_every"],
                        help=f"dev evaluation every this many stage 2 steps (default {d['eval_every']})")
    parser.add_argument("--content-aware", action="store_true",
                        help="eq. 8 in full: add the content-aware pass and the KL term (about 8x a step on a CPU)")
    parser.add_argument("--seed", type=int, default=d["seed"], help=f"seed of every draw (default {d['seed']})")
    args = parser.parse_args(argv)
    make_perank(args.out, model_name=args.model, device=args.device, align_steps=args.align_steps,
                align_batch=args.align_batch, rank_steps=args.rank_steps, rank_batch=args.rank_batch,
                rank_lr=args.rank_lr, eval_every=args.eval_every, content=args.content_aware, seed=args.seed,
                command="minirank train pe-rank " + " ".join(argv or []))
    return 0
