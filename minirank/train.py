"""Fine-tuning a FIRST reranker with LoRA and FIRST's joint objective (chapter 5).

FIRST (Reddy et al., 2024, §3.2) trains a listwise reranker on two signals at once:

* eq. 1, the language-modelling loss ``L_LM`` on the target permutation ``[B] > [A] > [C]``, token by
  token, as RankZephyr does;
* eq. 2, a weighted RankNet ``L_Rank`` on the logits of the identifier tokens at the *first* answer
  position, the one position FIRST reads at inference;
* eq. 3, ``L = L_LM + lambda * L_Rank`` with lambda = 10 (§4.1).

This module builds the training windows (from graded qrels or from a teacher reranker's run), turns
them into token ids with the loss positions marked and trains LoRA adapters (``peft``) with a
``transformers.Trainer`` whose ``compute_loss`` is eq. 3 (:func:`minirank.objective.joint_loss`, re-exported
here with the ablation's objectives and protocols), resuming interrupted runs. Adapters are saved
with what made them by :mod:`minirank.adapters`; the ablation of FIRST Table 2/3 on the course collection
is a program of its own, :mod:`minirank.bench.finetune`. The device and dtype are the model's (chosen
by :mod:`minirank.models` through :mod:`minirank.device`), never decided here.

Heavy libraries (transformers, peft) are imported inside functions: ``minirank demo`` imports this
module only to learn whether the shipped adapter adds its row ``first-lora``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from minirank import prompts as P
from minirank.adapters import (META_FILE, SHIPPED_ADAPTER, base_signature, load_adapter, lora_config, quiet_peft,
                               read_adapter_meta, save_adapter)
from minirank.data import BENCH_DIR
from minirank.forward import context_length  # noqa: F401  (used by the notebook and bench)
from minirank.objective import (OBJECTIVES, PROTOCOLS, first_targets, first_token_scores,  # noqa: F401  (the loss
                                forward_logits, joint_loss, lm_loss, rank_loss, ranking_term)  # lives there)
from minirank.records import claim_folder, refuse_existing
from minirank.retrieval import Run, ranked

quiet_peft()  # at import, so notebooks that call peft themselves (notebook 05) get the quiet that train() has

#: The stored output of ``minirank bench finetune --seeds 0,1,2 --json ...`` (lesson 5.8, notebook 05).
STORED_ABLATION = BENCH_DIR / "finetune-ablation-cpu.json"

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
    target = P.answer_text(window.order, style)  # 'B] > [A] > [C]': what follows the prompt's '['
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


# ====================================================================== 3. the trainer (the loss: minirank.objective)

def _trainer_class():
    from transformers import Trainer

    class FirstTrainer(Trainer):
        """A ``transformers.Trainer`` whose loss is FIRST's eq. 3 (:func:`joint_loss`).

        The loss is a per-batch mean, so the Trainer divides it by the gradient-accumulation steps
        (``loss_is_scaled_for_ga = False``). The LM and ranking parts are logged as ``loss_lm`` and
        ``loss_rank`` (``loss_lm`` is logged even when the objective leaves it out).
        """

        def __init__(self, *args, objective: str = "joint", lam: float = 10.0, pair_reduction: str = "mean",
                     protocol: str = "first", **kwargs):
            super().__init__(*args, **kwargs)
            self.objective, self.lam, self.pair_reduction, self.protocol = objective, lam, pair_reduction, protocol
            self.loss_is_scaled_for_ga = False
            self._parts: dict[str, list[float]] = defaultdict(list)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, parts = joint_loss(model, inputs, self.objective, self.lam, self.pair_reduction, self.protocol)
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
    protocol: str = "first"                 # how the ranking term is scaled and targeted (minirank.objective)
    lam: float = 10.0                       # FIRST §4.1
    pair_reduction: str = "mean"            # FIRST's released training code averages over pairs
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
    (1e-4), not FIRST's 5e-6, which is for full fine-tuning. bf16/fp16: :func:`minirank.device.pick_dtype`."""
    values = dict(model=model, window=20, max_passage_tokens=100, depth=50, windows_per_query=8, lora_r=16,
                  lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", learning_rate=1e-4, epochs=3.0,
                  batch_size=4, grad_accum=8, warmup_ratio=0.03, neftune_alpha=5.0, gradient_checkpointing=True,
                  save_steps=20, logging_steps=5)
    values.update(overrides)
    return TrainConfig(**values)


# ====================================================================== 5. training

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
      last checkpoint: same optimizer, schedule, data order and RNG state; ``resume=False`` starts the
      run over. The folder records whose run it is (:func:`minirank.records.claim_folder`): a folder of
      another run, or one holding other files, is a FileExistsError naming both runs, never resumed or
      emptied.
    * ``stop_after_steps`` stops (after saving a checkpoint) as an interruption would; the result says
      ``finished=False`` and no adapter is saved.
    * ``adapter_dir``: where the finished adapter goes; an existing non-empty folder is refused before
      training starts.
    """
    from peft import get_peft_model
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments, set_seed

    from minirank.models import cache_dir, load

    config = config or TrainConfig()
    ranking_term(config.objective, config.protocol)  # an unknown objective or protocol: refused before any work
    if not examples:
        raise ValueError("no training examples")
    adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
    if adapter_dir is not None:
        refuse_existing(adapter_dir, "adapter folder", hint="remove it yourself")
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
    dev, dtype = next(model.parameters()).device, model.dtype  # as loaded: minirank.models chose them
    digest = data_hash(examples)
    signature = base_signature(model)
    run = {"id": run_id(config, digest, signature), "config": config.to_dict(), "data_hash": digest,
           "base_model": config.model, "base_signature": signature}
    folder = Path(checkpoint_dir) if checkpoint_dir else cache_dir() / "checkpoints" / run["id"]
    claim_folder(folder, run, adopt=checkpoint_dir is None)  # another run's checkpoints: refused, never resumed
    if not resume:
        shutil.rmtree(folder)  # this run's own checkpoints (the claim says so): start over
        claim_folder(folder, run)

    quiet_peft()
    set_seed(config.seed)  # LoRA's A matrices are drawn now: the seed decides them
    peft_model = get_peft_model(model, lora_config(config))  # adapter weights in float32 even on a bf16/fp16 base
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
        model=peft_model, args=args, train_dataset=list(examples),
        data_collator=lambda rows: collate(rows, pad), callbacks=[_Interrupt()],
        objective=config.objective, lam=config.lam, pair_reduction=config.pair_reduction, protocol=config.protocol)
    if not verbose:
        trainer.remove_callback(PrinterCallback)  # the Trainer prints every log line; the history keeps them
    start = time.perf_counter()
    checkpoint = last_checkpoint(folder) if resume else None
    if verbose and checkpoint is not None:
        print(f"minirank.train: resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - start
    finished = trainer.state.global_step >= trainer.state.max_steps
    peft_model.eval()
    saved = None
    if finished and adapter_dir is not None:
        saved = save_adapter(peft_model, adapter_dir, config, digest, len(examples),
                             {"final_loss": last_logged(trainer.state.log_history, "loss"),
                              "steps": trainer.state.global_step, "train_seconds": round(seconds, 1)})
    if finished and not keep_checkpoints:
        shutil.rmtree(folder, ignore_errors=True)
    return TrainResult(peft_model, tokenizer, config, digest, len(examples), list(trainer.state.log_history),
                       folder, saved, finished, seconds)


def last_logged(history: Sequence[Mapping], key: str):
    """The last value of ``key`` in a Trainer's ``log_history`` (e.g. the final ``loss``), None if never logged."""
    values = [row[key] for row in history if key in row]
    return values[-1] if values else None


