"""Fine-tuning a FIRST reranker with LoRA and FIRST's joint objective (chapter 5).

FIRST (Reddy et al., 2024, §3.2) trains a listwise reranker on two signals at once:

* eq. 1, the language-modelling loss ``L_LM`` on the target permutation ``[B] > [A] > [C]``, token by
  token, as RankZephyr does;
* eq. 2, a weighted RankNet ``L_Rank`` on the logits of the identifier tokens at the *first* answer
  position, the one position FIRST reads at inference;
* eq. 3, ``L = L_LM + lambda * L_Rank`` with lambda = 10 (§4.1).

This module builds the training windows (from graded qrels or from a teacher reranker's run), turns
them into token ids with the loss positions marked, trains LoRA adapters (``peft``) with a
``transformers.Trainer`` whose ``compute_loss`` is eq. 3, saves and reloads adapters with the config
and data hash that made them, and runs the ablation of FIRST Table 2/3 on the course collection
(``minirank bench finetune``). Device and dtype come from :mod:`minirank.device`, never from here.

Heavy libraries (transformers, peft) are imported inside functions: ``minirank demo`` imports this
module only to learn whether the shipped adapter adds its row ``first-lora``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import random
import shutil
import statistics
import sys
import time
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minirank import __version__
from minirank import losses as LOSSES
from minirank import prompts as P
from minirank.data import BENCH_DIR, DATA_DIR
from minirank.retrieval import Run, ranked

#: The adapter shipped with the book (made by ``minirank bench finetune --save-adapter ...``, see data/README.md).
SHIPPED_ADAPTER = DATA_DIR / "adapters" / "first-lora-smollm2"
#: The stored output of ``minirank bench finetune --seeds 0,1,2 --json ...`` (lesson 5.8, notebook 05).
STORED_ABLATION = BENCH_DIR / "finetune-ablation-cpu.json"
META_FILE = "minirank_adapter.json"
META_FORMAT = 1

#: The ablation of FIRST Table 2 (rows "- Weighting", "- LM") and Table 3 (the other ranking losses):
#: objective name -> (uses the LM loss, the ranking loss on the first-token logits or None).
OBJECTIVES: dict[str, tuple[bool, str | None]] = {
    "joint": (True, "weighted_ranknet"),      # FIRST: L_LM + lambda * weighted RankNet (eq. 3)
    "-weighting": (True, "ranknet"),          # Table 2 "- Weighting": plain RankNet, every pair weight 1
    "-lm": (False, "weighted_ranknet"),       # Table 2 "- LM": lambda * weighted RankNet alone
    "lm-only": (True, None),                  # Table 2 "LM Generation" training: RankZephyr's objective
    "listnet": (True, "listnet"),             # Table 3: ListNet in place of weighted RankNet
    "lambdarank": (True, "lambdarank"),       # Table 3: LambdaRank in place of weighted RankNet
}


# ====================================================================== 1. training windows

@dataclass(frozen=True)
class Window:
    """One training window: a query, ``m`` passages in the order the model sees them (identifiers
    A, B, ...), the teacher's ordering (indices into the window, best first) and graded labels.

    ``labels`` are the qrels grades (0-3) when the teacher is the qrels; for a teacher run they are
    ``m - rank`` (strict). Pairs with equal labels carry no preference: RankNet skips them.
    """

    qid: str
    query: str
    pids: tuple[str, ...]
    texts: tuple[str, ...]
    order: tuple[int, ...]
    labels: tuple[float, ...]


def check_permutation(order: Sequence, n: int, what: str = "teacher ordering") -> list[int]:
    """``order`` as a list of ints if it is a permutation of ``0..n-1``; else a ValueError saying what is wrong."""
    try:
        values = [int(i) for i in order]
    except (TypeError, ValueError):
        raise ValueError(f"{what} {list(order)!r} must hold integer positions 0..{n - 1}") from None
    seen: set[int] = set()
    duplicates = sorted({i for i in values if i in seen or seen.add(i)})
    outside = sorted(i for i in set(values) if not 0 <= i < n)
    missing = sorted(set(range(n)) - set(values))
    if duplicates or outside or missing or len(values) != n:
        problems = []
        if duplicates:
            problems.append(f"repeats {duplicates}")
        if outside:
            problems.append(f"has positions outside 0..{n - 1}: {outside}")
        if missing:
            problems.append(f"misses {missing}")
        raise ValueError(f"{what} {values} is not a permutation of the {n} window positions 0..{n - 1}: "
                         f"it {', '.join(problems)}. Each passage must appear exactly once.")
    return values


def make_window(qid: str, query: str, pids: Sequence[str], texts: Sequence[str], order: Sequence[int],
                labels: Sequence[float] | None = None) -> Window:
    """A checked :class:`Window`; ``order`` must be a permutation of the window's positions."""
    if len(pids) != len(texts):
        raise ValueError(f"query {qid!r}: {len(pids)} passage ids but {len(texts)} texts")
    if len(pids) < 2:
        raise ValueError(f"query {qid!r}: a training window needs at least 2 passages, got {len(pids)}")
    P.identifiers(len(pids))  # more passages than identifiers A..Z: fails here, with the reason
    order = check_permutation(order, len(pids), f"query {qid!r}: teacher ordering")
    if labels is None:
        rank = {i: r for r, i in enumerate(order)}
        labels = [float(len(pids) - rank[i]) for i in range(len(pids))]
    if len(labels) != len(pids):
        raise ValueError(f"query {qid!r}: {len(labels)} labels for {len(pids)} passages")
    return Window(qid, query, tuple(pids), tuple(texts), tuple(order), tuple(float(x) for x in labels))


def teacher_windows(collection, candidates: Run, window: int = 10, windows_per_query: int = 1,
                    teacher: Run | None = None, seed: int = 0) -> list[Window]:
    """Training windows over each query's first-stage candidates, with the teacher's ordering.

    Window 0 of a query is its top ``window`` candidates (what the reranker sees first at test time);
    windows 1.. are random subsets of all its candidates (seeded by ``seed``, query and window),
    always shown in first-stage order. The teacher is the collection's graded qrels (ties between
    equal grades kept in first-stage order; unjudged passages count as 0) or, when given, a stronger
    reranker's ``teacher`` run over the same candidates. Windows whose passages all share one grade
    teach no order and are skipped.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 passages, got {window}")
    if windows_per_query < 1:
        raise ValueError(f"windows_per_query must be >= 1, got {windows_per_query}")
    out: list[Window] = []
    for qid in sorted(candidates):
        pool = ranked(candidates[qid])
        if len(pool) < 2:
            continue
        if teacher is None and qid not in collection.qrels:
            raise KeyError(f"query {qid!r} has candidates but no judgements in {collection.name} "
                           f"({collection.split}); pass a teacher run or use a judged split")
        seen: set[tuple[str, ...]] = set()
        for w in range(windows_per_query):
            if w == 0:
                chosen = pool[:window]
            else:
                rng = random.Random(f"{seed}:{qid}:{w}")
                picked = sorted(rng.sample(range(len(pool)), min(window, len(pool))))
                chosen = [pool[i] for i in picked]
            key = tuple(chosen)
            if key in seen:
                continue
            seen.add(key)
            if teacher is None:
                grades = [float(max(collection.qrels[qid].get(p, 0), 0)) for p in chosen]
                if len(set(grades)) < 2:
                    continue
                order = sorted(range(len(chosen)), key=lambda i: -grades[i])  # stable: ties by first stage
                labels = grades
            else:
                scores = teacher.get(qid, {})
                absent = [p for p in chosen if p not in scores]
                if absent:
                    raise KeyError(f"teacher run has no score for query {qid!r}, passages {absent[:3]}: "
                                   f"the teacher must rerank the same candidates")
                position = {p: i for i, p in enumerate(ranked({p: scores[p] for p in chosen}))}
                order = sorted(range(len(chosen)), key=lambda i: position[chosen[i]])
                labels = None
            out.append(make_window(qid, collection.queries[qid], chosen,
                                   [collection.passages[p] for p in chosen], order, labels))
    if not out:
        raise ValueError("no training windows: every window had passages of a single grade (or no candidates)")
    return out


# ====================================================================== 2. windows -> token ids

def target_text(order: Sequence[int], style: str = "alpha") -> str:
    """The permutation the model must write after the prompt's ``[``: ``'B] > [A] > [C]'``."""
    labels = P.identifiers(len(order), style)
    return " > ".join(P.bracket(labels[i]) for i in order)[1:]


def context_length(model) -> int | None:
    """The longest sequence the model takes (``max_position_embeddings``), None if it does not say."""
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


def make_example(window: Window, tokenizer, max_passage_tokens: int | None = 32,
                 max_length: int | None = None, style: str = "alpha") -> dict:
    """Token ids and loss positions of one window.

    * ``input_ids``: the prompt of :func:`minirank.prompts.build_prompt` (ending with ``[``), tokenized
      exactly as at inference, followed by the target permutation and the end-of-turn token;
    * ``labels``: -100 on the prompt (no loss), the target's own ids on the target: eq. 1 covers the
      permutation only;
    * ``rank_position``: the prompt's last position (the ``[``). Its logits predict the first
      identifier; FIRST reads them at inference, and eq. 2 trains them;
    * ``identifier_ids``, ``target_ranks`` (1 = best), ``grades``: one entry per passage, in window order.

    ``max_length`` (the model's context): a longer example is a ValueError, never silently cut.
    """
    m = len(window.pids)
    prompt = P.build_prompt(window.query, list(window.texts), tokenizer, style, max_passage_tokens)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=not P.has_chat_template(tokenizer))
    target = target_text(window.order, style)
    target_ids = tokenizer.encode(target, add_special_tokens=False)
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        target_ids = target_ids + [int(eos)]  # learn to stop, as RankZephyr's training does
    identifier_ids = P.identifier_token_ids(tokenizer, P.identifiers(m, style))
    if target_ids[0] != identifier_ids[window.order[0]]:
        raise ValueError(f"query {window.qid!r}: the target {target[:20]!r} does not start with the single "
                         f"token of identifier {P.identifiers(m, style)[window.order[0]]!r} for this tokenizer")
    total = len(prompt_ids) + len(target_ids)
    if max_length is not None and total > max_length:
        raise ValueError(f"query {window.qid!r}: a window of {m} passages takes {len(prompt_ids)} prompt + "
                         f"{len(target_ids)} target = {total} tokens, longer than the model's context of "
                         f"{max_length}; use fewer passages per window or a smaller max_passage_tokens")
    ranks = [0] * m
    for r, i in enumerate(window.order, start=1):
        ranks[i] = r
    return {"qid": window.qid, "prompt": prompt, "target": target,
            "input_ids": prompt_ids + target_ids, "labels": [-100] * len(prompt_ids) + target_ids,
            "rank_position": len(prompt_ids) - 1, "identifier_ids": identifier_ids,
            "target_ranks": ranks, "grades": list(window.labels)}


def build_examples(windows: Sequence[Window], tokenizer, max_passage_tokens: int | None = 32,
                   max_length: int | None = None, style: str = "alpha") -> list[dict]:
    return [make_example(w, tokenizer, max_passage_tokens, max_length, style) for w in windows]


def data_hash(examples: Sequence[Mapping]) -> str:
    """SHA-256 of what the model is trained on (token ids, loss positions, targets): same hash, same data."""
    digest = hashlib.sha256()
    for ex in examples:
        row = {k: ex[k] for k in ("input_ids", "labels", "rank_position", "identifier_ids", "target_ranks", "grades")}
        digest.update(json.dumps(row, sort_keys=True).encode())
    return digest.hexdigest()


def collate(examples: Sequence[Mapping], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch (training positions start at 0 on every row, so no position ids are needed)."""
    width = max(len(ex["input_ids"]) for ex in examples)
    m = max(len(ex["identifier_ids"]) for ex in examples)
    def pad(rows, value, size):
        return torch.tensor([list(r) + [value] * (size - len(r)) for r in rows])
    return {
        "input_ids": pad([ex["input_ids"] for ex in examples], pad_id, width),
        "attention_mask": pad([[1] * len(ex["input_ids"]) for ex in examples], 0, width),
        "labels": pad([ex["labels"] for ex in examples], -100, width),
        "rank_position": torch.tensor([ex["rank_position"] for ex in examples]),
        "identifier_ids": pad([ex["identifier_ids"] for ex in examples], 0, m),
        "candidate_mask": pad([[True] * len(ex["identifier_ids"]) for ex in examples], False, m),
        "target_ranks": pad([ex["target_ranks"] for ex in examples], 0, m),
        "grades": pad([[float(g) for g in ex["grades"]] for ex in examples], 0.0, m).float(),
    }


# ====================================================================== 3. the joint objective (eq. 1-3)

def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1: mean negative log-likelihood of the target tokens (labels != -100), next-token shifted.

    ``logits`` may cover only the last ``k`` positions of the sequence (see :func:`forward_logits`);
    the labels are aligned with them from the right.
    """
    offset = labels.shape[1] - logits.shape[1]
    shifted = logits[:, :-1, :].float()
    target = labels[:, offset + 1:]
    return torch.nn.functional.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), target.reshape(-1),
                                             ignore_index=-100)


def forward_logits(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """``(logits, offset)``: the logits from the first rank position of the batch to the end.

    Neither loss needs the prompt's other positions, and their logits (``tokens x vocabulary``, 49k
    wide for the default model) cost about a fifth of the step's compute and most of its activation
    memory. ``offset`` is the sequence position of ``logits[:, 0]``; models without ``logits_to_keep``
    return all positions (offset 0).
    """
    width = batch["input_ids"].shape[1]
    keep = width - int(batch["rank_position"].min())
    try:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep)
    except TypeError:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.logits, width - out.logits.shape[1]


def first_token_scores(logits: torch.Tensor, rank_position: torch.Tensor, identifier_ids: torch.Tensor,
                       offset: int = 0) -> torch.Tensor:
    """``s_i``: the logit of each passage's identifier at the rank position (B, m), as FIRST reads it."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    at_position = logits[rows, rank_position.to(logits.device) - offset].float()  # (B, V)
    return at_position.gather(1, identifier_ids.to(logits.device))


def rank_loss(scores: torch.Tensor, target_ranks: torch.Tensor, grades: torch.Tensor, mask: torch.Tensor,
              kind: str = "weighted_ranknet", pair_reduction: str = "mean") -> torch.Tensor:
    """The ranking loss on the first-token scores, mean over the batch.

    ``weighted_ranknet`` is eq. 2 with the intended sign: pairs ``r_i < r_j`` weighted ``1/(r_i + r_j)``
    (:func:`minirank.losses.weighted_ranknet_loss`); ``ranknet`` sets every weight to 1. Pairs whose
    grades are equal (qrels ties) carry no preference and are left out. ``pair_reduction='mean'``
    divides by the number of pairs, as FIRST's training code does and as lambda = 10 assumes; with a
    strict teacher ordering the result equals ``weighted_ranknet_loss(..., pair_reduction='mean')``.
    ``listnet`` and ``lambdarank`` (Table 3) use the grades: :func:`minirank.losses.listnet_loss`,
    :func:`minirank.losses.lambdarank_loss`.
    """
    mask = mask.to(torch.bool)
    target_ranks, grades = target_ranks.to(scores.device), grades.to(scores.device)
    if kind in ("weighted_ranknet", "ranknet"):
        r = torch.where(mask, target_ranks, 0).to(scores.dtype)
        differ = grades[:, :, None] != grades[:, None, :]
        base = (1.0 / (r[:, :, None] + r[:, None, :]).clamp(min=1.0) if kind == "weighted_ranknet"
                else torch.ones_like(differ, dtype=scores.dtype))
        weights = torch.where(differ, base, 0.0)
        per_query = LOSSES.ranknet_loss(scores, target_ranks, mask, weighting=weights, pair_reduction="sum",
                                        reduction="none")
        if pair_reduction == "mean":
            pairs = (r[:, :, None] < r[:, None, :]) & differ & mask[:, :, None] & mask[:, None, :]
            per_query = per_query / pairs.sum(dim=(1, 2)).clamp(min=1)
        elif pair_reduction != "sum":
            raise ValueError(f"pair_reduction must be 'mean' or 'sum', not {pair_reduction!r}")
        return per_query.mean()
    if kind == "listnet":
        return LOSSES.listnet_loss(scores, grades, mask)
    if kind == "lambdarank":
        return LOSSES.lambdarank_loss(scores, grades, mask, pair_reduction=pair_reduction)
    raise ValueError(f"unknown ranking loss {kind!r}: expected weighted_ranknet, ranknet, listnet or lambdarank")


def joint_loss(model, batch: Mapping[str, torch.Tensor], objective: str = "joint", lam: float = 10.0,
               pair_reduction: str = "mean") -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 3 for one batch: ``L_LM + lam * L_Rank`` (or the ablation ``objective``); also the parts."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}: expected one of {list(OBJECTIVES)}")
    use_lm, kind = OBJECTIVES[objective]
    device = batch["input_ids"].device
    logits, offset = forward_logits(model, batch)
    parts: dict[str, float] = {}
    total = torch.zeros((), device=logits.device)
    lm = lm_loss(logits, batch["labels"].to(logits.device))
    parts["loss_lm"] = float(lm.detach())
    if use_lm:
        total = total + lm
    scores = first_token_scores(logits, batch["rank_position"], batch["identifier_ids"], offset)
    if kind is not None:
        rank = rank_loss(scores, batch["target_ranks"], batch["grades"], batch["candidate_mask"].to(device),
                         kind, pair_reduction)
        parts["loss_rank"] = float(rank.detach())
        total = total + lam * rank
    return total, parts


def _trainer_class():
    from transformers import Trainer

    class FirstTrainer(Trainer):
        """A ``transformers.Trainer`` whose loss is FIRST's eq. 3 (:func:`joint_loss`).

        The loss is a per-batch mean, so the Trainer divides it by the gradient-accumulation steps
        (``loss_is_scaled_for_ga = False``). The LM and ranking parts are logged as ``loss_lm`` and
        ``loss_rank`` (``loss_lm`` is logged even when the objective leaves it out).
        """

        def __init__(self, *args, objective: str = "joint", lam: float = 10.0, pair_reduction: str = "mean",
                     **kwargs):
            super().__init__(*args, **kwargs)
            self.objective, self.lam, self.pair_reduction = objective, lam, pair_reduction
            self.loss_is_scaled_for_ga = False
            self._parts: dict[str, list[float]] = defaultdict(list)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, parts = joint_loss(model, inputs, self.objective, self.lam, self.pair_reduction)
            if model.training:
                for key, value in parts.items():
                    self._parts[key].append(value)
            return (loss, parts) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            for key, values in self._parts.items():
                if values:
                    logs[key] = round(sum(values) / len(values), 6)
            self._parts.clear()
            super().log(logs, *args, **kwargs)

    return FirstTrainer


def __getattr__(name):  # `minirank.train.FirstTrainer` without importing transformers at module import
    if name == "FirstTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ====================================================================== 4. configuration

@dataclass
class TrainConfig:
    """Everything that decides an adapter, saved with it in ``minirank_adapter.json``.

    Defaults are the CPU path: the default model, windows of 10 passages cut to 32 tokens, LoRA r=8
    on the query and value projections, batch 1. :func:`paper_scale` gives the GPU recipe.
    """

    model: str = "smollm2-135m-instruct"
    objective: str = "joint"
    lam: float = 10.0                       # FIRST §4.1
    pair_reduction: str = "mean"            # FIRST's code averages over pairs (shared/FACTS.md)
    window: int = 10
    max_passage_tokens: int | None = 32
    depth: int = 20                         # first-stage candidates the training windows come from
    windows_per_query: int = 2
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: list[str] | str = field(default_factory=lambda: ["q_proj", "v_proj"])
    learning_rate: float = 1e-3
    epochs: float = 1.0
    max_steps: int = -1                     # > 0 overrides epochs
    batch_size: int = 1
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: str = "linear"
    neftune_alpha: float | None = None      # NEFTune (Jain et al., 2023); FIRST §4.1 uses it, 5 is its default
    gradient_checkpointing: bool = False
    seed: int = 0
    save_steps: int = 10
    logging_steps: int = 5

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        return cls(**dict(values))


def paper_scale(model: str = "HuggingFaceTB/SmolLM2-1.7B-Instruct", **overrides) -> TrainConfig:
    """FIRST §4.1 on one GPU: windows of 20 passages (100 tokens each), 3 epochs, effective batch 32,
    NEFTune, LoRA r=16 on every linear layer with gradient checkpointing. The learning rate is LoRA's
    (1e-4), not FIRST's 5e-6, which is for full fine-tuning. bf16/fp16 follow :func:`pick_dtype`."""
    values = dict(model=model, window=20, max_passage_tokens=100, depth=50, windows_per_query=8, lora_r=16,
                  lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", learning_rate=1e-4, epochs=3.0,
                  batch_size=4, grad_accum=8, warmup_ratio=0.03, neftune_alpha=5.0, gradient_checkpointing=True,
                  save_steps=20, logging_steps=5)
    values.update(overrides)
    return TrainConfig(**values)


# ====================================================================== 5. adapters: save, check, load

def _quiet() -> None:
    """peft 0.21 calls a transformers method that transformers 5 deprecates; the warning is not the user's."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def base_signature(model) -> dict:
    """What identifies a base model: its shape and a probe of its embedding weights.

    The probe (8 embedding values, to 3 significant digits) survives fp32/bf16/fp16 loading but tells
    two different checkpoints of the same architecture apart.
    """
    config = model.config
    keys = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size")
    signature = {k: getattr(config, k, None) for k in keys}
    weight = model.get_input_embeddings().weight.detach()
    rows = torch.linspace(0, weight.shape[0] - 1, 4).long()
    cols = torch.linspace(0, weight.shape[1] - 1, 2).long()
    signature["probe"] = [float(f"{float(weight[r, c]):.3g}") for r in rows for c in cols]
    return signature


def _same_base(a: Mapping, b: Mapping) -> bool:
    if any(a.get(k) != b.get(k) for k in a if k != "probe"):
        return False
    pa, pb = a.get("probe") or [], b.get("probe") or []
    return len(pa) == len(pb) and all(math.isclose(x, y, rel_tol=3e-2, abs_tol=2e-3) for x, y in zip(pa, pb))


def read_adapter_meta(path: str | Path) -> dict:
    """The ``minirank_adapter.json`` of an adapter folder (a clear error when it is not one)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"adapter folder {path} does not exist")
    meta_file = path / META_FILE
    if not meta_file.is_file() or not (path / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{path} is not a minirank adapter: it needs {META_FILE} and adapter_config.json "
                                f"(made by minirank.train.save_adapter)")
    return json.loads(meta_file.read_text(encoding="utf-8"))


def _refuse_existing(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"adapter folder {path} already exists and is not empty; minirank never "
                              f"overwrites an adapter: choose another path or remove it yourself")


def save_adapter(model, path: str | Path, config: TrainConfig, digest: str, examples: int,
                 extra: Mapping | None = None) -> Path:
    """Save LoRA weights (``adapter_model.safetensors``), peft's ``adapter_config.json`` and
    ``minirank_adapter.json`` (base model, config, data hash, seed, versions). Refuses to overwrite."""
    import peft
    import transformers

    path = Path(path)
    _refuse_existing(path)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = config.model  # not this machine's cache path
    model.save_pretrained(str(partial), safe_serialization=True, save_embedding_layers=False)
    card = partial / "README.md"
    if card.exists():
        card.unlink()  # peft's empty model card; minirank_adapter.json says what this is
    meta = {"format": META_FORMAT, "made_by": "minirank.train", "minirank": __version__,
            "base_model": config.model, "base_signature": base_signature(model.get_base_model()),
            "config": config.to_dict(), "data_hash": digest, "examples": examples, "seed": config.seed,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__},
            **(dict(extra) if extra else {})}
    (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    if path.exists():
        path.rmdir()  # an empty folder, checked above
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(path)
    return path


def load_adapter(model, path: str | Path):
    """Put the LoRA adapter at ``path`` on ``model`` (eval mode) after checking it was made for this base.

    Note that peft modifies ``model`` in place: load a fresh base model for each adapter.
    """
    from peft import PeftModel

    meta = read_adapter_meta(path)
    mine = base_signature(model)
    theirs = meta.get("base_signature", {})
    if not _same_base(theirs, mine):
        shape = lambda s: (f"{s.get('model_type')}, vocab {s.get('vocab_size')}, hidden {s.get('hidden_size')}, "
                           f"{s.get('num_hidden_layers')} layers")
        raise ValueError(f"adapter {path} was trained on base model {meta.get('base_model')!r} ({shape(theirs)}), "
                         f"but this model ({shape(mine)}) is a different one"
                         f"{' (same shape, different weights)' if shape(theirs) == shape(mine) else ''}. "
                         f"Load {meta.get('base_model')!r} and put the adapter on it.")
    _quiet()
    peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    peft_model.eval()
    peft_model.minirank_meta = meta
    return peft_model


def load_with_adapter(path: str | Path, device=None):
    """``(model, tokenizer, meta)``: a fresh copy of the adapter's base model with the adapter on it."""
    from minirank.models import load

    meta = read_adapter_meta(path)
    model, tokenizer = load(meta["base_model"], device=device)
    return load_adapter(model, path), tokenizer, meta


# ====================================================================== 6. training

@dataclass
class TrainResult:
    model: object
    tokenizer: object
    config: TrainConfig
    data_hash: str
    examples: int
    log_history: list[dict]
    checkpoint_dir: Path
    adapter_dir: Path | None
    finished: bool
    seconds: float


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = list(rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def run_id(config: TrainConfig, digest: str, signature: Mapping) -> str:
    """Names a training run: the same data, config and base model always map to the same checkpoints."""
    blob = json.dumps({"config": config.to_dict(), "data": digest, "base": signature}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def last_checkpoint(folder: str | Path) -> Path | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = Path(folder)
    found = get_last_checkpoint(str(folder)) if folder.is_dir() else None
    return Path(found) if found else None


def train(examples: Sequence[Mapping], config: TrainConfig | None = None, adapter_dir: str | Path | None = None,
          model=None, tokenizer=None, checkpoint_dir: str | Path | None = None, resume: bool = True,
          stop_after_steps: int | None = None, keep_checkpoints: bool = False, device=None,
          verbose: bool = False) -> TrainResult:
    """Fine-tune LoRA adapters on ``examples`` (from :func:`build_examples`) with FIRST's joint loss.

    * ``model``/``tokenizer``: a base model already loaded (tests pass a tiny one); by default
      ``config.model`` is loaded on the device and dtype of :mod:`minirank.device`.
    * Checkpoints go to ``checkpoint_dir`` (default: the cache, under a name made from the data hash,
      the config and the base model). With ``resume``, a run that was interrupted continues from its
      last checkpoint: same optimizer, schedule, data order and RNG state.
    * ``stop_after_steps`` stops (after saving a checkpoint) as an interruption would; the result says
      ``finished=False`` and no adapter is saved.
    * ``adapter_dir``: where the finished adapter goes; an existing non-empty folder is refused before
      training starts.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments, set_seed

    from minirank.device import pick_dtype
    from minirank.models import cache_dir, load

    config = config or TrainConfig()
    if config.objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {config.objective!r}: expected one of {list(OBJECTIVES)}")
    if not examples:
        raise ValueError("no training examples")
    adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
    if adapter_dir is not None:
        _refuse_existing(adapter_dir)
    if model is None:
        model, loaded_tokenizer = load(config.model, device=device)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError("train() got a model but no tokenizer")
    limit = context_length(model)
    for ex in examples:
        if limit is not None and len(ex["input_ids"]) > limit:
            raise ValueError(f"query {ex.get('qid')!r}: example of {len(ex['input_ids'])} tokens is longer than "
                             f"the model's context of {limit}; rebuild the examples with a smaller window "
                             f"or max_passage_tokens")
    dev = next(model.parameters()).device
    dtype = pick_dtype(dev)
    digest = data_hash(examples)
    signature = base_signature(model)
    folder = Path(checkpoint_dir) if checkpoint_dir else cache_dir() / "checkpoints" / run_id(config, digest, signature)

    _quiet()
    set_seed(config.seed)  # LoRA's A matrices are drawn now: the seed decides them
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)  # adapter weights in float32 even on a bf16/fp16 base
    if config.gradient_checkpointing:
        peft_model.enable_input_require_grads()

    args = TrainingArguments(
        output_dir=str(folder), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, learning_rate=config.learning_rate,
        num_train_epochs=config.epochs, max_steps=config.max_steps, warmup_steps=config.warmup_ratio,  # a float < 1: a fraction of all steps
        weight_decay=config.weight_decay, lr_scheduler_type=config.lr_scheduler,
        logging_steps=config.logging_steps, save_strategy="steps", save_steps=config.save_steps,
        save_total_limit=2, seed=config.seed, data_seed=config.seed, report_to="none",
        bf16=dtype == torch.bfloat16 and dev.type == "cuda", fp16=dtype == torch.float16 and dev.type == "cuda",
        use_cpu=dev.type == "cpu", remove_unused_columns=False, label_names=["labels"],
        neftune_noise_alpha=config.neftune_alpha, activation_checkpointing=config.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        dataloader_num_workers=0, disable_tqdm=not verbose, max_grad_norm=1.0)

    class _Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if stop_after_steps is not None and state.global_step >= stop_after_steps:
                control.should_save = True
                control.should_training_stop = True
            return control

    pad = P.pad_token_id(tokenizer)
    trainer = _trainer_class()(
        model=peft_model, args=args, train_dataset=_ListDataset(examples),
        data_collator=lambda rows: collate(rows, pad), callbacks=[_Interrupt()],
        objective=config.objective, lam=config.lam, pair_reduction=config.pair_reduction)
    if not verbose:
        trainer.remove_callback(PrinterCallback)  # the Trainer prints every log line; the history keeps them
    start = time.perf_counter()
    checkpoint = last_checkpoint(folder) if resume else None
    if checkpoint is None and folder.is_dir() and not resume:
        shutil.rmtree(folder)
    if verbose and checkpoint is not None:
        print(f"minirank.train: resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - start
    finished = trainer.state.global_step >= trainer.state.max_steps
    peft_model.eval()
    saved = None
    if finished and adapter_dir is not None:
        saved = save_adapter(peft_model, adapter_dir, config, digest, len(examples),
                             {"final_loss": _last(trainer.state.log_history, "loss"),
                              "steps": trainer.state.global_step, "train_seconds": round(seconds, 1)})
    if finished and not keep_checkpoints:
        shutil.rmtree(folder, ignore_errors=True)
    return TrainResult(peft_model, tokenizer, config, digest, len(examples), list(trainer.state.log_history),
                       folder, saved, finished, seconds)


def _last(history: Sequence[Mapping], key: str):
    values = [row[key] for row in history if key in row]
    return values[-1] if values else None


def lora_state(model) -> dict[str, torch.Tensor]:
    """The adapter's weights (the only ones training changes), as CPU tensors."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k}


def measure_throughput(examples: Sequence[Mapping], config: TrainConfig, model=None, tokenizer=None,
                       batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32), steps: int = 3) -> list[dict]:
    """Training speed and memory per batch size: tokens/s, seconds/step and (on CUDA) peak memory.

    Each batch size runs ``steps`` optimizer steps of the joint loss after one warm-up step, on a
    fresh LoRA model, until the GPU runs out of memory: the last row that fits is the largest batch.
    (Chapter 5's GPU section; on a CPU it still runs, without memory numbers.)
    """
    from peft import LoraConfig, get_peft_model

    from minirank.device import pick_dtype, synchronize
    from minirank.models import load

    if model is None:
        model, tokenizer = load(config.model)
    dev = next(model.parameters()).device
    dtype = pick_dtype(dev)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, task_type="CAUSAL_LM")
    _quiet()
    peft_model = get_peft_model(model, lora)
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
                    loss, _ = joint_loss(peft_model, batch, config.objective, config.lam, config.pair_reduction)
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


# ====================================================================== 7. evaluation and the ablation

def rerank_and_score(model, tokenizer, collection, candidates: Run, window: int, max_passage_tokens: int | None,
                     batch_size: int = 4, metric: str = "ndcg@10") -> tuple[Run, dict[str, float]]:
    """FIRST-rerank ``candidates`` with ``model`` (stride window // 2); per-query ``metric``."""
    from minirank.evaluate import evaluate
    from minirank.listwise import FirstReranker

    reranker = FirstReranker(model, tokenizer, window=window, max_passage_tokens=max_passage_tokens,
                             batch_size=batch_size)
    run = reranker.rerank(collection, candidates)
    per_query = evaluate(run, collection.qrels, (metric,))
    return run, {q: s[metric] for q, s in per_query.items()}


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _std(values) -> float:
    values = list(values)
    if len(values) < 2:
        return 0.0
    mu = _mean(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


def ablation_rows(zero_shot: Mapping[str, float], bm25: Mapping[str, float],
                  results: Mapping[str, Mapping[int, Mapping[str, float]]], reference: str = "joint") -> list[dict]:
    """Rows of the ablation table: mean nDCG@10 over seeds, the spread (sample std over seeds), the
    difference from ``reference`` and the paired randomisation test over test queries (per-query
    nDCG@10 averaged over seeds), and the same test against the zero-shot model."""
    from minirank.evaluate import paired_test

    def seed_mean(per_seed):
        qids = sorted(next(iter(per_seed.values())))
        return {q: _mean(per_seed[s][q] for s in per_seed) for q in qids}

    rows = [{"method": "bm25 (no reranking)", "ndcg@10": _mean(bm25.values()), "+/-": "", "seeds": "",
             "vs joint": "", "p vs joint": "", "p vs zero-shot": ""},
            {"method": "first zero-shot", "ndcg@10": _mean(zero_shot.values()), "+/-": "", "seeds": "",
             "vs joint": "", "p vs joint": "", "p vs zero-shot": ""}]
    ref = seed_mean(results[reference]) if reference in results else None
    for name, per_seed in results.items():
        per_query = seed_mean(per_seed)
        means = [_mean(per_seed[s].values()) for s in sorted(per_seed)]
        row = {"method": name, "ndcg@10": _mean(per_query.values()), "+/-": f"{_std(means):.3f}",
               "seeds": len(means), "vs joint": "", "p vs joint": "",
               "p vs zero-shot": paired_test(per_query, zero_shot)["p_randomization"]}
        if ref is not None and name != reference:
            test = paired_test(per_query, ref)
            row["vs joint"] = f"{test['mean_diff']:+.3f}"
            row["p vs joint"] = test["p_randomization"]
        rows.append(row)
    return rows


def bench_main(argv: Sequence[str] | None = None) -> int:
    """``minirank bench finetune``: the ablation of FIRST Tables 2-3 on the course collection.

    Trains one LoRA adapter per objective and seed on the train split, FIRST-reranks the test split's
    BM25 candidates with each, and prints mean nDCG@10 +/- spread over seeds with paired tests against
    the joint loss. Each finished run is cached (``$MINIRANK_CACHE/bench_finetune``), so an interrupted
    benchmark picks up where it stopped. ``--save-adapter DIR`` also keeps the adapter of the first
    objective and seed (how ``data/adapters/first-lora-smollm2`` was made).
    """
    from minirank.data import load_course
    from minirank.device import describe
    from minirank.evaluate import format_table
    from minirank.models import DEFAULT_MODEL, cache_dir, load
    from minirank.retrieval import BM25, top_k
    from minirank.latency import CONFIGS, build_random_model

    parser = argparse.ArgumentParser(prog="minirank bench finetune", description=bench_main.__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", default=",".join(OBJECTIVES),
                        help=f"comma-separated subset of {','.join(OBJECTIVES)} (default: all)")
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
    parser.add_argument("--measure", action="store_true",
                        help="measure training speed and peak memory per batch size instead (chapter 5, GPU)")
    parser.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="batch sizes for --measure")
    parser.add_argument("--config", default=None, choices=sorted(CONFIGS),
                        help="with --measure: a model shape from minirank.latency.CONFIGS (e.g. mistral-7b) with "
                             "random weights instead of --model: speed and memory need the shape, not the weights, "
                             "and nothing is downloaded")
    args = parser.parse_args(list(argv) if argv is not None else None)

    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    unknown = [o for o in objectives if o not in OBJECTIVES]
    if unknown:
        raise ValueError(f"unknown objective(s) {unknown}: expected some of {list(OBJECTIVES)}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.config is not None and not args.measure:
        raise ValueError("--config builds a model with random weights, which can be timed but not evaluated: "
                         "use it with --measure")
    if args.json_path and Path(args.json_path).exists() and not args.force:
        raise FileExistsError(f"{args.json_path} exists; minirank does not overwrite results: choose another "
                              f"path or pass --force")
    if args.save_adapter:
        _refuse_existing(Path(args.save_adapter))
    base = dict(model=args.model, window=args.window, max_passage_tokens=args.max_passage_tokens,
                depth=args.depth, windows_per_query=args.windows_per_query, learning_rate=args.lr, lam=args.lam,
                lora_r=args.lora_r, lora_alpha=2 * args.lora_r, max_steps=args.steps, epochs=args.epochs,
                batch_size=args.batch_size, grad_accum=args.grad_accum, neftune_alpha=args.neftune,
                gradient_checkpointing=args.gradient_checkpointing)
    if args.paper_scale:
        base = paper_scale(args.model if args.model != DEFAULT_MODEL else "HuggingFaceTB/SmolLM2-1.7B-Instruct").to_dict()

    if args.eval_depth is None:
        args.eval_depth = base["window"]
    machine = describe()
    print(f"minirank bench finetune on {machine}")
    train_set, test_set = load_course(args.train_split), load_course(args.eval_split)
    train_cands = top_k(BM25(train_set.passages).search(train_set.queries, base["depth"]), base["depth"])
    test_cands = top_k(BM25(test_set.passages).search(test_set.queries, args.eval_depth), args.eval_depth)
    from minirank.evaluate import evaluate
    bm25 = {q: s["ndcg@10"] for q, s in evaluate(test_cands, test_set.qrels, ("ndcg@10",)).items()}

    if args.config:
        from minirank.models import load_tokenizer

        tokenizer = load_tokenizer()  # the default model's: its ids fit the random model's vocabulary
        model = build_random_model(args.config, len(tokenizer))
        base["model"] = f"random weights, shape {args.config}"
    else:
        model, tokenizer = load(base["model"])
    windows = teacher_windows(train_set, train_cands, base["window"], base["windows_per_query"], seed=0)
    examples = build_examples(windows, tokenizer, base["max_passage_tokens"], context_length(model))
    digest = data_hash(examples)
    if args.measure:
        config = TrainConfig(**{**base, "objective": objectives[0]})
        sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
        rows = measure_throughput(examples, config, model, tokenizer, sizes)
        print(f"model: {base['model']} ({sum(p.numel() for p in model.parameters()) / 1e6:,.0f}M parameters), "
              f"{len(examples)} windows of about {statistics.median(len(e['input_ids']) for e in examples):.0f} tokens")
        print(f"LoRA r={config.lora_r} on {config.target_modules}, activation checkpointing "
              f"{'on' if config.gradient_checkpointing else 'off'}, windows of {config.window} passages")
        print(format_table(rows))
        if args.json_path:
            Path(args.json_path).write_text(json.dumps({"machine": machine, "config": config.to_dict(),
                                                        "rows": rows}, indent=2) + "\n", encoding="utf-8")
        return 0
    print(f"training data: {len(examples)} windows of {base['window']} passages from {len(train_set.queries)} "
          f"{args.train_split} queries, hash {digest[:12]}; test: {len(test_set.queries)} {args.eval_split} "
          f"queries, BM25 top {args.eval_depth}")
    store = cache_dir() / "bench_finetune"
    store.mkdir(parents=True, exist_ok=True)
    eval_key = f"{args.eval_split}:{args.eval_depth}:{base['window']}:{base['max_passage_tokens']}"
    zs_file = store / f"zero-shot-{hashlib.sha256(json.dumps([eval_key, base_signature(model)]).encode()).hexdigest()[:16]}.json"
    if zs_file.is_file() and not args.no_cache:
        zero_shot = json.loads(zs_file.read_text())
    else:
        start = time.perf_counter()
        _, zero_shot = rerank_and_score(model, tokenizer, test_set, test_cands, base["window"], base["max_passage_tokens"])
        zs_file.write_text(json.dumps(zero_shot))
        print(f"  zero-shot: nDCG@10 {_mean(zero_shot.values()):.3f} ({time.perf_counter() - start:.0f} s)")

    results: dict[str, dict[int, dict[str, float]]] = {}
    runs_meta = []
    for objective in objectives:
        for seed in seeds:
            config = TrainConfig(**{**base, "objective": objective, "seed": seed})
            key = run_id(config, digest, base_signature(model)) + "-" + hashlib.sha256(eval_key.encode()).hexdigest()[:8]
            cached = store / f"{key}.json"
            keep = args.save_adapter if (objective, seed) == (objectives[0], seeds[0]) else None
            if cached.is_file() and not args.no_cache and not keep:
                record = json.loads(cached.read_text())
            else:
                fresh, _ = load(base["model"])  # peft changes the model it wraps: a fresh base per run
                result = train(examples, config, keep, model=fresh, tokenizer=tokenizer)
                start = time.perf_counter()
                _, scores = rerank_and_score(result.model, tokenizer, test_set, test_cands, config.window,
                                             config.max_passage_tokens)
                record = {"objective": objective, "seed": seed, "per_query": scores,
                          "train_seconds": round(result.seconds, 1), "eval_seconds": round(time.perf_counter() - start, 1),
                          "final_loss": _last(result.log_history, "loss"), "log_history": result.log_history,
                          "config": config.to_dict(), "data_hash": digest, "machine": machine}
                cached.write_text(json.dumps(record))
            results.setdefault(objective, {})[seed] = record["per_query"]
            runs_meta.append({k: record[k] for k in ("objective", "seed", "train_seconds", "eval_seconds", "final_loss")})
            print(f"  {objective} seed {seed}: nDCG@10 {_mean(record['per_query'].values()):.3f} "
                  f"(train {record['train_seconds']} s, eval {record['eval_seconds']} s)")

    rows = ablation_rows(zero_shot, bm25, results, reference=objectives[0] if "joint" not in results else "joint")
    print(format_table(rows))
    print(f"+/-: sample std of the per-seed means; p: paired randomisation test over {len(zero_shot)} "
          f"{args.eval_split} queries (per-query nDCG@10 averaged over seeds), two-sided")
    if args.json_path:
        out = {"machine": machine, "model": base["model"], "data_hash": digest, "config": base, "seeds": seeds,
               "eval": {"split": args.eval_split, "bm25_depth": args.eval_depth}, "rows": rows, "runs": runs_meta,
               "per_query": {"bm25": bm25, "zero_shot": zero_shot,
                             **{f"{o}/seed{s}": v for o, per in results.items() for s, v in per.items()}}}
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_path}")
    if args.save_adapter:
        print(f"adapter saved in {args.save_adapter}")
    return 0


if __name__ == "__main__":
    sys.exit(bench_main(sys.argv[1:]))
