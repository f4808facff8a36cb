"""Two-stage adaptation of a query-likelihood ranker, in miniature (TSARankLLM §2.2-2.3, chapter 8).

TSARankLLM (Zhang et al., 2023) adapts a decoder-only LLM to the query-likelihood score of
:mod:`minirank.pointwise` in two stages:

1. **Continual pre-training** (§2.2, eq. 2) on weakly related text pairs: next-token prediction of the
   shorter text (the "query") after ``'Document: {longer text} Query:'``. The released
   ``pretrain.py`` puts the loss on the query and an end-of-sequence token only (``mask_input``).
   The paper mines its pairs from the web (title-body, question-answer, ...); offline, the book makes
   them from the course collection's own passages: a passage's first sentence is the "query" for the
   rest of it (:func:`weak_pairs`).
2. **Supervised fine-tuning** (§2.3) on queries with one relevant passage and ``m`` negatives:
   a contrastive loss over the candidates' scores at temperature τ (eq. 3), next-token prediction on
   the positive (the NTP term) and the *differential penalty* (eq. 4), a KL from the frozen stage-one
   model to the model being trained on the query tokens. Each term can be switched off
   (:class:`SFTConfig`), so the lesson can ablate it.

Where the book follows the released code (``sft.py``) and where the paper:

* the candidate score in the contrastive loss is ``exp(mean log p(q_j))`` (the geometric mean of the
  query tokens' probabilities; the code's ``torch.exp(scores) / temperature``), divided by τ = 0.001
  (``sft.sh``; §3.1) — code and paper agree on τ, and the paper's S is a probability too (eq. 1);
* the NTP term is on the positive's **query tokens** (the paper, §2.3; the code takes the whole
  positive sequence, passage included, which would teach the model to write passages);
* the differential penalty is on the query tokens of every candidate (the paper's T; the code
  averages over every position, padding included);
* the terms are weighted ``α L_rank + (1 - α)(L_ntp + L_dp)`` with α = 0.6 (the paper's eq. 5);
  ``alpha=None`` sums them as the code does.

Only the top decoder blocks train (the paper: "the top 16 transformer layers", after RankLLaMA; the
released recipe trains 16 of BLOOM-560m's 24). For the default model's 30 blocks the book trains the
top :data:`TOP_LAYERS` = 20, the same two thirds as the released recipe for its smallest model; the
embeddings (tied to the output layer in SmolLM2) stay frozen, so the vocabulary's geometry, which
every other chapter's prompts rely on, does not move.

Training goes through chapter 5's harness (:mod:`minirank.harness`: ``trl``'s ``SFTTrainer`` with the chapter's
``compute_loss``; the rows are a ``datasets.Dataset`` made by :func:`cpt_dataset` and :func:`sft_dataset`). Two
ways to train the top blocks: in place, as the paper does (``lora_r=None``), or with LoRA on those blocks only
(:func:`top_layers_lora`), which the shipped adapters use (a few MB to ship instead of 280 MB of blocks): stage
one's LoRA is merged into the weights when it ends, so stage two's reference for the differential penalty is
simply the model with stage two's adapter switched off.
"""
from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from minirank import losses
from minirank import prompts as P
from minirank.data import BENCH_DIR, DATA_DIR
from minirank.forward import context_length
from minirank.pointwise import prompt_ids, query_logits, query_token_ids, reduce_query, token_log_probs
from minirank.retrieval import Run, ranked

#: Decoder blocks that train (of the default model's 30): two thirds, as the released recipe's 16 of 24.
TOP_LAYERS = 20
#: Learning rates of the released scripts (``pretrain.sh``: 5e-5; ``sft.sh``: 3e-5).
CPT_LR, SFT_LR = 5e-5, 3e-5

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def weak_pairs(passages: Mapping[str, str], min_query_words: int = 4, min_document_words: int = 10) -> list[tuple[str, str]]:
    """``(query, document)`` pairs from passages: the first sentence is the query for the rest.

    A stand-in for TSARankLLM's web-mined pairs (§2.2, Table 1), which are out of reach offline.
    Passages whose first sentence has fewer than ``min_query_words`` words, or whose rest has fewer
    than ``min_document_words``, give no pair. In ``passages`` order.
    """
    pairs = []
    for text in passages.values():
        parts = _SENTENCE_END.split(" ".join(str(text).split()), maxsplit=1)
        if len(parts) == 2 and len(parts[0].split()) >= min_query_words and len(parts[1].split()) >= min_document_words:
            pairs.append((parts[0], parts[1]))
    return pairs


def training_pairs(train, held_out=(), **kwargs) -> list[tuple[str, str]]:
    """Stage one's weak pairs from the passages judged for ``train``'s queries and for none of the ``held_out``
    collections' (so no passage a dev or test query is judged on is seen), in sorted passage-id order;
    ``kwargs`` go to :func:`weak_pairs`."""
    hidden = {p for split in held_out for judged in split.qrels.values() for p in judged}
    pool = sorted({p for judged in train.qrels.values() for p in judged if p not in hidden})
    return weak_pairs({p: train.passages[p] for p in pool}, **kwargs)


@dataclass(frozen=True)
class Group:
    """One SFT example: a query, its relevant passage, and ``m`` negatives (TSARankLLM §2.3)."""

    query: str
    positive: str
    negatives: tuple[str, ...]

    @property
    def candidates(self) -> tuple[str, ...]:
        return (self.positive, *self.negatives)


def sft_groups(collection, candidates: Run, negatives: int = 3, seed: int = 0) -> list[Group]:
    """Groups from a collection's judged queries: each relevant passage (grade >= the collection's level)
    with ``negatives`` passages drawn from the query's first-stage ``candidates`` that are not judged
    relevant (the paper draws them from BGE's top 1000; here from the run given, e.g. BM25's).
    Queries without enough negatives are skipped; a ValueError if no group can be made."""
    if isinstance(negatives, bool) or not isinstance(negatives, int) or negatives < 1:
        raise ValueError(f"negatives must be a positive integer, got {negatives!r}")
    level = getattr(collection, "relevance_level", 1)
    rng = random.Random(seed)
    groups = []
    for qid in sorted(collection.qrels):
        judged = collection.qrels[qid]
        relevant = sorted(p for p, g in judged.items() if g >= level)
        pool = [p for p in ranked(candidates.get(qid, {})) if judged.get(p, 0) < level]
        if len(pool) < negatives:
            continue
        for pid in relevant:
            drawn = rng.sample(pool, negatives)
            groups.append(Group(collection.queries[qid], collection.passages[pid],
                                tuple(collection.passages[p] for p in drawn)))
    if not groups:
        raise ValueError(f"no SFT group could be made: no judged query has a relevant passage and {negatives} "
                         f"unjudged candidates")
    return groups


def _rows(tokenizer, pairs: Sequence[tuple[str, str]], max_passage_tokens, eos: bool):
    rows = []
    for query, document in pairs:
        q = query_token_ids(tokenizer, query, eos=eos)
        rows.append((prompt_ids(tokenizer, document, len(q), max_passage_tokens)[0], q))
    return rows


# ====================================================================== the two losses, on token ids

def cpt_rows_loss(model, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int) -> torch.Tensor:
    """Stage one (eq. 2) on tokenized ``(prompt_ids, query_ids + [eos])`` rows: the mean negative log-likelihood
    of the target tokens after their prompts, averaged over the batch's target tokens (the released code's
    cross-entropy)."""
    logits, targets, mask = query_logits(model, rows, pad_id)
    return -token_log_probs(logits, targets, mask).sum() / mask.sum()


def cpt_loss(model, tokenizer, pairs: Sequence[tuple[str, str]],
             max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS) -> torch.Tensor:
    """Stage one (eq. 2) on ``(query, document)`` pairs: the mean negative log-likelihood of the query tokens and
    EOS after ``'Document: {document} Query:'`` (:func:`cpt_rows_loss` on the pairs' ids)."""
    return cpt_rows_loss(model, _rows(tokenizer, pairs, max_passage_tokens, eos=True), P.pad_token_id(tokenizer))


@dataclass(frozen=True)
class SFTConfig:
    """Stage two's objective (TSARankLLM §2.3, §3.1): switch each term off to ablate it.

    ``tau``: the contrastive temperature (0.001 in §3.1 and ``sft.sh``); ``alpha``: eq. 5's weight
    (0.6; None sums the terms as the released code does).
    """

    rank: bool = True
    ntp: bool = True
    dp: bool = True
    tau: float = 0.001
    alpha: float | None = 0.6
    max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS

    def __post_init__(self):
        if not (self.rank or self.ntp or self.dp):
            raise ValueError("SFTConfig switches every term off: nothing would train")
        if not self.tau > 0:
            raise ValueError(f"tau must be positive, got {self.tau!r}")
        if self.alpha is not None and not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1] (or None to sum the terms), got {self.alpha!r}")


#: ``reference=BASE``: the differential penalty's frozen model is the model itself with its LoRA adapter switched
#: off (peft's ``disable_adapter``): after stage one is merged into the weights, that *is* the stage-one model.
BASE = "base"


def _reference_logits(model, reference, rows, pad_id: int) -> torch.Tensor:
    with torch.no_grad():
        if isinstance(reference, str) and reference == BASE:
            if not hasattr(model, "disable_adapter"):
                raise TypeError("reference='base' needs a peft model (LoRA): its adapter is switched off for the "
                                "reference pass")
            with model.disable_adapter():
                return query_logits(model, rows, pad_id)[0]
        return query_logits(reference, rows, pad_id)[0]


def sft_rows_terms(model, reference, rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
                   config: SFTConfig = SFTConfig()) -> dict[str, torch.Tensor]:
    """Stage two's terms on one tokenized group, the positive's row first: ``rank`` (eq. 3), ``ntp`` (eq. 2 on
    the positive's query tokens), ``dp`` (eq. 4) and their ``total`` (eq. 5). ``reference``: the frozen
    stage-one model, or :data:`BASE` (the peft ``model`` with its adapter off); needed when ``config.dp``."""
    logits, targets, mask = query_logits(model, rows, pad_id)
    log_probs = token_log_probs(logits, targets, mask)
    zero = logits.new_zeros(())
    terms = {"rank": zero, "ntp": zero, "dp": zero}
    if config.rank:  # the candidate's S: exp(mean log p), the released code's; the positive is column 0
        scores = reduce_query(log_probs, mask, "mean").exp()
        terms["rank"] = losses.infonce_loss(scores[None], 0, temperature=config.tau)
    if config.ntp:
        terms["ntp"] = -log_probs[0].sum() / mask[0].sum()
    if config.dp:
        if reference is None:
            raise ValueError("the differential penalty needs the frozen stage-one model (reference)")
        terms["dp"] = losses.differential_penalty(logits, _reference_logits(model, reference, rows, pad_id), mask)
    if config.alpha is None:
        terms["total"] = terms["rank"] + terms["ntp"] + terms["dp"]
    else:
        terms["total"] = losses.tsarankllm_objective(terms["rank"], terms["ntp"], terms["dp"], config.alpha)
    return terms


def sft_losses(model, reference, tokenizer, group: Group, config: SFTConfig = SFTConfig()) -> dict[str, torch.Tensor]:
    """Stage two's terms on one group of texts (:func:`sft_rows_terms` on its ids). ``reference`` is the frozen
    stage-one model (needed when ``config.dp``)."""
    rows = _rows(tokenizer, [(group.query, text) for text in group.candidates], config.max_passage_tokens, eos=False)
    return sft_rows_terms(model, reference, rows, P.pad_token_id(tokenizer), config)


# ====================================================================== the training sets, as datasets.Dataset

def cpt_dataset(pairs: Sequence[tuple[str, str]], tokenizer, max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS,
                limit: int | None = None):
    """Stage one's rows: columns ``query``, ``document``, ``prompt_ids``, ``query_ids`` (the query's ids and EOS)
    and ``passage`` (``'whole'``, ``'cut'`` or ``'cut-to-fit'``: :func:`minirank.pointwise.prompt_ids`'s rule, with
    the model's context ``limit``). Tokenized by ``Dataset.map``, in ``pairs`` order."""
    from datasets import Dataset, Features, Value
    from datasets import Sequence as Seq

    from minirank.trainset import quiet_datasets

    if not pairs:
        raise ValueError("the continual pre-training set needs at least one (query, document) pair")

    def tokenize(row):
        q = query_token_ids(tokenizer, row["query"], eos=True)
        ids, fate = prompt_ids(tokenizer, row["document"], len(q), max_passage_tokens, limit)
        return {"prompt_ids": ids, "query_ids": q, "passage": fate}

    features = Features({"query": Value("string"), "document": Value("string"), "prompt_ids": Seq(Value("int32")),
                         "query_ids": Seq(Value("int32")), "passage": Value("string")})
    with quiet_datasets():
        table = Dataset.from_dict({"query": [q for q, _ in pairs], "document": [d for _, d in pairs]})
        return table.map(tokenize, features=features)


def sft_dataset(groups: Sequence[Group], tokenizer, max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS,
                limit: int | None = None):
    """Stage two's rows, one per group: ``query``, ``candidates`` (the positive first), ``prompt_ids`` (one list
    per candidate), ``query_ids`` (no EOS: the score of eq. 1) and ``passage`` (one fate per candidate)."""
    from datasets import Dataset, Features, Value
    from datasets import Sequence as Seq

    from minirank.trainset import quiet_datasets

    if not groups:
        raise ValueError("the fine-tuning set needs at least one group")

    def tokenize(row):
        q = query_token_ids(tokenizer, row["query"], eos=False)
        made = [prompt_ids(tokenizer, text, len(q), max_passage_tokens, limit) for text in row["candidates"]]
        return {"prompt_ids": [ids for ids, _ in made], "query_ids": q, "passage": [fate for _, fate in made]}

    features = Features({"query": Value("string"), "candidates": Seq(Value("string")),
                         "prompt_ids": Seq(Seq(Value("int32"))), "query_ids": Seq(Value("int32")),
                         "passage": Seq(Value("string"))})
    with quiet_datasets():
        table = Dataset.from_dict({"query": [g.query for g in groups], "candidates": [list(g.candidates) for g in groups]})
        return table.map(tokenize, features=features)


def _pair_batch(rows):
    return {"rows": [(list(r["prompt_ids"]), list(r["query_ids"])) for r in rows]}


def _group_batch(rows):
    return {"groups": [[(list(ids), list(r["query_ids"])) for ids in r["prompt_ids"]] for r in rows]}


# ====================================================================== training, through chapter 5's harness

def decoder_layers(model) -> torch.nn.ModuleList:
    """The model's stack of decoder blocks (``model.model.layers`` for Llama-like models)."""
    core = getattr(model, "get_decoder", lambda: None)()
    for owner in (core, getattr(model, "model", None), getattr(model, "transformer", None)):
        for name in ("layers", "h"):
            blocks = getattr(owner, name, None)
            if isinstance(blocks, torch.nn.ModuleList):
                return blocks
    raise TypeError(f"cannot find the decoder blocks of {type(model).__name__} (expected .model.layers)")


def _check_top(model, top) -> list[torch.nn.Module]:
    blocks = decoder_layers(model)
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= len(blocks):
        raise ValueError(f"top_layers must be between 1 and the model's {len(blocks)} blocks, got {top!r}")
    return list(blocks)


def train_top_layers(model, top: int) -> int:
    """Freeze everything but the top ``top`` decoder blocks; return the number of trainable parameters."""
    blocks = _check_top(model, top)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for block in blocks[len(blocks) - top:]:
        for parameter in block.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


#: LoRA's modules in each adapted block: attention and MLP, the parts that full fine-tuning of a block moves.
LORA_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def top_layers_lora(model, top: int, r: int = 4, alpha: int | None = None, dropout: float = 0.0):
    """A ``peft.LoraConfig`` on the top ``top`` blocks only (``layers_to_transform``): the paper's "top layers
    train" with LoRA's small adapters, so that the book can ship what it trains (:mod:`minirank.recipes`)."""
    from peft import LoraConfig

    blocks = _check_top(model, top)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    modules = [m for m in LORA_MODULES if m in present] or "all-linear"
    return LoraConfig(r=r, lora_alpha=alpha or 2 * r, lora_dropout=dropout, target_modules=modules,
                      layers_to_transform=list(range(len(blocks) - top, len(blocks))), bias="none",
                      task_type="CAUSAL_LM")


@dataclass
class Stage:
    """What a stage leaves: ``model`` (trained; for LoRA a peft model, merged into a plain model after stage one),
    ``history`` (one dict of floats per optimizer step: ``loss`` and, in stage two, ``rank``, ``ntp``, ``dp``),
    the number of ``trainable`` parameters, and the training ``seconds``."""

    model: object
    history: list[dict]
    trainable: int
    seconds: float


def _check_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")


def _fit(model, tokenizer, dataset, collate, loss_fn, *, steps, batch_size, lr, top_layers, seed, lora_r, lora_alpha,
         scheduler, warmup, callbacks, verbose) -> Stage:
    import tempfile
    import time

    from minirank.adapters import quiet_peft
    from minirank.harness import loss_trainer_class, quiet, trainer_args

    _check_steps(steps)
    if steps == 0:
        return Stage(model, [], 0, 0.0)
    quiet_peft()
    peft_config = None
    if lora_r is None:
        train_top_layers(model, top_layers)  # the paper's recipe: the top blocks themselves train
    else:
        peft_config = top_layers_lora(model, top_layers, r=lora_r, alpha=lora_alpha)
    with tempfile.TemporaryDirectory(prefix="minirank-tsarank-") as folder:
        args = trainer_args(folder, model, learning_rate=lr, batch_size=batch_size, max_steps=steps, seed=seed,
                            scheduler=scheduler, warmup=warmup, logging_steps=1, verbose=verbose)
        trainer = loss_trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=collate,
                                       processing_class=tokenizer,
                                       peft_config=peft_config, loss_fn=loss_fn, callbacks=list(callbacks))
        quiet(trainer, verbose)
        trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    trained = trainer.model
    trained.eval()
    history = [{k: v for k, v in row.items() if k in ("loss", "rank", "ntp", "dp")}
               for row in trainer.state.log_history if "loss" in row]
    return Stage(trained, history, trainable, seconds)


def continual_pretraining(model, tokenizer, pairs, steps: int, batch_size: int = 4, lr: float = CPT_LR,
                          top_layers: int = TOP_LAYERS, seed: int = 0,
                          max_passage_tokens: int | None = P.DEFAULT_MAX_PASSAGE_TOKENS, lora_r: int | None = None,
                          lora_alpha: int | None = None, merge: bool = True, scheduler: str = "constant",
                          warmup: float = 0.0, callbacks: Sequence = (), verbose: bool = False) -> Stage:
    """Stage one: ``steps`` AdamW updates on batches of ``batch_size`` weak pairs (a list of ``(query, document)``
    or a :func:`cpt_dataset`), through ``trl``'s ``SFTTrainer`` (:mod:`minirank.harness`; data order from
    ``seed``, cycling), gradients clipped at norm 1.

    ``lora_r=None`` (the paper's recipe): the top ``top_layers`` blocks train in place. ``lora_r=r``: LoRA on
    those blocks, merged into ``model``'s weights when the stage ends (so the stage-one model is a plain model,
    the base of stage two and its reference). Either way ``Stage.model`` is ``model``, trained, in eval mode;
    ``merge=False`` leaves the LoRA adapter unmerged (``Stage.model`` is then the peft model: save its adapter, then
    ``merge_and_unload()`` it, as ``minirank train query-likelihood`` does).
    """
    dataset = pairs if hasattr(pairs, "column_names") else cpt_dataset(
        pairs, tokenizer, max_passage_tokens, limit=context_length(model))
    pad = P.pad_token_id(tokenizer)
    stage = _fit(model, tokenizer, dataset, _pair_batch, lambda m, inputs: (cpt_rows_loss(m, inputs["rows"], pad), {}),
                 steps=steps, batch_size=batch_size, lr=lr, top_layers=top_layers, seed=seed, lora_r=lora_r,
                 lora_alpha=lora_alpha, scheduler=scheduler, warmup=warmup, callbacks=callbacks, verbose=verbose)
    if lora_r is not None and steps and merge:
        stage.model = stage.model.merge_and_unload()  # LoRA's update now in the weights of `model` itself
    for parameter in stage.model.parameters():
        parameter.requires_grad_(False)
    stage.model.eval()
    return stage


def frozen_copy(model):
    """The stage-one model as the differential penalty's fixed reference: a copy without gradients."""
    reference = copy.deepcopy(model).eval()
    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    return reference


def supervised_fine_tuning(model, tokenizer, groups, steps: int, config: SFTConfig = SFTConfig(), reference=None,
                           lr: float = SFT_LR, top_layers: int = TOP_LAYERS, seed: int = 0,
                           lora_r: int | None = None, lora_alpha: int | None = None, scheduler: str = "constant",
                           warmup: float = 0.0, callbacks: Sequence = (), verbose: bool = False) -> Stage:
    """Stage two: ``steps`` AdamW updates, one group each (a list of :class:`Group` or an :func:`sft_dataset`),
    through ``trl``'s ``SFTTrainer`` (:mod:`minirank.harness`; data order from ``seed``, cycling).

    ``reference``: the frozen stage-one model for the differential penalty. By default a :func:`frozen_copy` of
    ``model`` as it is before this call when the top blocks train in place (``lora_r=None``); with LoRA
    (``lora_r=r``, ``Stage.model`` is then a peft model) the model with its adapter switched off (:data:`BASE`),
    which is the same model without a second copy in memory.
    """
    dataset = groups if hasattr(groups, "column_names") else sft_dataset(
        groups, tokenizer, config.max_passage_tokens, limit=context_length(model))
    if config.dp and reference is None and steps:
        reference = BASE if lora_r is not None else frozen_copy(model)
    pad = P.pad_token_id(tokenizer)

    def loss_fn(m, inputs):
        per_group = [sft_rows_terms(m, reference, rows, pad, config) for rows in inputs["groups"]]
        terms = {k: sum(t[k] for t in per_group) / len(per_group) for k in per_group[0]}
        return terms["total"], {k: float(terms[k].detach()) for k in ("rank", "ntp", "dp")}

    return _fit(model, tokenizer, dataset, _group_batch, loss_fn, steps=steps, batch_size=1, lr=lr, top_layers=top_layers,
                seed=seed, lora_r=lora_r, lora_alpha=lora_alpha, scheduler=scheduler, warmup=warmup,
                callbacks=callbacks, verbose=verbose)


# ====================================================================== the adapted model, saved and loaded

#: The folder ``minirank train query-likelihood`` made for the book (``minirank demo``'s row ``ql-tsarank``).
SHIPPED_TSARANK = DATA_DIR / "adapters" / "ql-tsarank-smollm2"
#: The record of the shipped folder's recipe (``minirank train query-likelihood --json ...``): the stages' losses, the
#: dev curve, the chosen step and the test comparison; notebook 08 and lesson 8.7 read it.
STORED_RECORD = BENCH_DIR / "ql-tsarank-training-cpu.json"
#: What a two-stage folder holds besides ``cpt/`` and ``sft/`` (two LoRA adapters, :mod:`minirank.adapters`).
TSARANK_FILE = "minirank_tsarank.json"


def save_tsarank(cpt_adapter: str | Path, sft_model, path: str | Path, base_model: str,
                 meta: Mapping | None = None) -> Path:
    """Write a two-stage query-likelihood ranker into the new folder ``path``: ``cpt/`` (stage one's LoRA adapter,
    a folder :func:`minirank.adapters.save_lora` wrote, copied), ``sft/`` (stage two's, from the peft
    ``sft_model``) and :data:`TSARANK_FILE` (``base_model`` and ``meta``: how it was made). Written as
    ``path.partial`` and renamed; an existing non-empty ``path`` is a FileExistsError (never overwritten)."""
    import shutil

    from minirank import __version__
    from minirank.adapters import read_adapter_meta, save_lora
    from minirank.records import new_folder

    read_adapter_meta(cpt_adapter)  # a FileNotFoundError if it is not an adapter folder
    with new_folder(path, "query-likelihood folder") as partial:
        shutil.copytree(cpt_adapter, partial / "cpt")
        save_lora(sft_model, partial / "sft", base_model, "minirank.tsarank")
        doc = {"made_by": "minirank.tsarank", "minirank": __version__, "base_model": base_model,
               "stages": ["cpt", "sft"], **(dict(meta) if meta else {})}
        (partial / TSARANK_FILE).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return Path(path)


def read_tsarank_meta(path: str | Path) -> dict:
    """The :data:`TSARANK_FILE` of a two-stage folder (a FileNotFoundError saying what the folder needs)."""
    path = Path(path)
    if not (path / TSARANK_FILE).is_file() or not (path / "cpt").is_dir() or not (path / "sft").is_dir():
        raise FileNotFoundError(f"{path} is not a two-stage query-likelihood folder: it needs {TSARANK_FILE}, cpt/ and "
                                f"sft/ (made by `minirank train query-likelihood --out {path}`)")
    return json.loads((path / TSARANK_FILE).read_text(encoding="utf-8"))


def load_tsarank(path: str | Path = SHIPPED_TSARANK, model=None, tokenizer=None, device=None):
    """``(model, tokenizer, meta)``: the base model with stage one's adapter merged into its weights and stage two's
    on top (a peft model in eval mode), ready for :class:`minirank.pointwise.QueryLikelihoodReranker`.

    Without ``model`` a fresh copy of the folder's base model is loaded (merging changes the weights in place);
    with one (and its ``tokenizer``), that model is changed. Errors: a folder that is not one
    (FileNotFoundError); a base model the adapters were not trained on (:func:`minirank.adapters.load_adapter`).
    """
    from minirank.adapters import load_adapter
    from minirank.models import load

    path = Path(path)
    meta = read_tsarank_meta(path)
    if model is None:
        model, tokenizer = load(meta["base_model"], device=device)
    elif tokenizer is None:
        raise ValueError("load_tsarank got a model but no tokenizer")
    stage_one = load_adapter(model, path / "cpt").merge_and_unload()
    return load_adapter(stage_one, path / "sft"), tokenizer, meta
