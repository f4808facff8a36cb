"""Fine-tuning a FIRST reranker with LoRA and FIRST's joint objective (chapter 5).

FIRST (Reddy et al., 2024, §3.2) trains a listwise reranker on two signals at once:

* eq. 1, the language-modelling loss ``L_LM`` on the target permutation ``[B] > [A] > [C]``, token by
  token, as RankZephyr does;
* eq. 2, a weighted RankNet ``L_Rank`` on the logits of the identifier tokens at the *first* answer
  position, the one position FIRST reads at inference;
* eq. 3, ``L = L_LM + lambda * L_Rank`` with lambda = 10 (§4.1).

The training set (windows, token ids, loss positions, the ``datasets.Dataset``) is :mod:`minirank.trainset`,
re-exported here. This module trains LoRA adapters (``peft``) through ``trl``'s ``SFTTrainer``, whose
``compute_loss`` is eq. 3 (:func:`minirank.objective.joint_loss`, re-exported here with the ablation's objectives
and protocols), resuming interrupted runs. Adapters are saved with what made them by :mod:`minirank.adapters`;
the ablation of FIRST Table 2/3 on the course collection is a program of its own, :mod:`minirank.bench.finetune`,
and the shipped adapter's recipe is :mod:`minirank.recipes.first_lora`. The device and dtype are the model's
(chosen by :mod:`minirank.models` through :mod:`minirank.device`), never decided here.

Heavy libraries (transformers, peft, trl, datasets) are imported inside functions: ``minirank demo`` imports this
module only to learn whether the shipped adapter adds its row ``first-lora``.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from minirank import prompts as P
from minirank.adapters import (META_FILE, SHIPPED_ADAPTER, base_signature, load_adapter, lora_config, quiet_peft,  # noqa: F401
                               read_adapter_meta, save_adapter)
from minirank.data import BENCH_DIR
from minirank.forward import context_length  # noqa: F401  (used by the notebook and bench)
from minirank.harness import quiet, stop_after, trainer_args
from minirank.objective import (OBJECTIVES, PROTOCOLS, first_targets, first_token_scores,  # noqa: F401  (the loss
                                forward_logits, joint_loss, lm_loss, rank_loss, ranking_term)  # lives there)
from minirank.records import claim_folder, refuse_existing
from minirank.trainset import (DATASET_FOLDER, EXAMPLE_COLUMNS, Window, as_dataset, build_examples,  # noqa: F401
                               check_permutation, collate, data_hash, examples_dataset, load_from_disk,
                               make_example, make_window, quiet_datasets, teacher_windows, windows_dataset)

quiet_peft()  # at import, so notebooks that call peft themselves (notebook 05) get the quiet that train() has

#: The stored ablation under FIRST's protocol, the default: ``minirank bench finetune --protocol first --seeds 0,1,2
#: --json ...`` (lesson 5.8, notebook 05).
STORED_ABLATION = BENCH_DIR / "finetune-ablation-first-cpu.json"
#: The same six objectives under the ``uniform`` protocol (lambda = 10 on every ranking loss, targets from the grades),
#: run before the protocols existed and kept as the named alternative (lesson 5.8 reads both).
STORED_ABLATION_UNIFORM = BENCH_DIR / "finetune-ablation-cpu.json"

#: The shipped adapter's dev curve and test comparison, written by ``minirank train first-lora --json ...``
#: (notebook 05 plots it, lesson 5.7 reads it).
STORED_CURVE = BENCH_DIR / "first-lora-training-cpu.json"

#: The same recipe on the first 10 and 20 training queries (``--queries N``): with :data:`STORED_CURVE` (all 40), the
#: learning curve against the number of training queries (:func:`queries_curve`).
STORED_QUERIES_CURVES = [BENCH_DIR / f"first-lora-queries-{n}-cpu.json" for n in (10, 20)]


def queries_curve(paths: Sequence[str | Path] = ()) -> list[dict]:
    """One row per stored run of ``minirank train first-lora`` (default: :data:`STORED_QUERIES_CURVES` that exist,
    then :data:`STORED_CURVE`), fewest training queries first: the training queries and windows, the chosen step,
    dev nDCG@10 at step 0 (zero-shot) and at the chosen step, test nDCG@10 and the paired difference with BM25
    (95% interval, exact sign-flip p). Lesson 5.7 quotes it; notebook 05 plots it."""
    paths = list(paths) or [p for p in STORED_QUERIES_CURVES if Path(p).exists()] + [STORED_CURVE]
    rows = []
    for path in paths:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        dev = {p["step"]: p["ndcg@10"] for p in record["dev_curve"]}
        paired = record["test"]["first-lora - bm25"]
        rows.append({"training queries": record["training_queries"], "windows": record["windows"],
                     "steps": record["steps"], "chosen step": record["chosen_step"], "dev zero-shot": dev[0],
                     "dev chosen": dev[record["chosen_step"]], "test ndcg@10": record["test"]["first-lora"],
                     "vs bm25": f"{paired['mean_diff']:+.3f}",
                     "95% CI": f"[{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}]", "p": paired["p"]})
    return sorted(rows, key=lambda row: row["training queries"])


# ====================================================================== 1. the trainer (the loss: minirank.objective)

def _trainer_class():
    from minirank.harness import loss_trainer_class

    return _first_trainer(loss_trainer_class())


@functools.cache
def _first_trainer(base):
    class FirstTrainer(base):
        """``trl``'s ``SFTTrainer`` whose loss is FIRST's eq. 3 (:func:`joint_loss`), through the harness chapters 5
        and 8 share (:func:`minirank.harness.loss_trainer_class`): data order, optimizer, schedule, LoRA through
        ``peft_config``, NEFTune, checkpoints and resume are the library's; only the loss is the chapter's, because
        eq. 2 reads the identifier logits at one position that SFTTrainer's token-level loss does not know about.

        The LM and ranking parts are logged as ``loss_lm`` and ``loss_rank`` (``loss_lm`` is logged even when the
        objective leaves it out).
        """

        def __init__(self, *args, objective: str = "joint", lam: float = 10.0, pair_reduction: str = "mean",
                     protocol: str = "first", **kwargs):
            super().__init__(*args, **kwargs)
            self.objective, self.lam, self.pair_reduction, self.protocol = objective, lam, pair_reduction, protocol

        def chapter_loss(self, model, inputs):
            return joint_loss(model, inputs, self.objective, self.lam, self.pair_reduction, self.protocol)

    return FirstTrainer


def __getattr__(name):  # `minirank.train.FirstTrainer` without importing transformers at module import
    if name == "FirstTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ====================================================================== 2. configuration

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


# ====================================================================== 3. training

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


def train(examples, config: TrainConfig | None = None, adapter_dir: str | Path | None = None,
          model=None, tokenizer=None, checkpoint_dir: str | Path | None = None, resume: bool = True,
          stop_after_steps: int | None = None, keep_checkpoints: bool = False, device=None,
          verbose: bool = False, callbacks: Sequence = ()) -> TrainResult:
    """Fine-tune LoRA adapters on ``examples`` with FIRST's joint loss, through ``trl``'s ``SFTTrainer``.

    * ``examples``: the Dataset of :func:`examples_dataset`, or a list of :func:`build_examples` dicts (made
      into a Dataset). The run keeps its rows in ``checkpoint_dir/dataset`` (``save_to_disk``) and trains on
      them as read back (``load_from_disk``), so a resumed run reads exactly what the first start saved.

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
    * ``callbacks``: more ``transformers.TrainerCallback`` objects (a recipe's dev evaluation, for instance).
    """
    from minirank.models import cache_dir, load

    config = config or TrainConfig()
    ranking_term(config.objective, config.protocol)  # an unknown objective or protocol: refused before any work
    if examples is None or len(examples) == 0:
        raise ValueError("no training examples")
    adapter_dir = Path(adapter_dir) if adapter_dir is not None else None
    if adapter_dir is not None:
        refuse_existing(adapter_dir, "adapter folder", hint="remove it yourself")
    if model is None:
        model, loaded_tokenizer = load(config.model, device=device)
        tokenizer = tokenizer or loaded_tokenizer
    if tokenizer is None:
        raise ValueError("train() got a model but no tokenizer")
    dataset = as_dataset(examples)
    limit = context_length(model)
    for qid, ids in zip(dataset["qid"] if "qid" in dataset.column_names else [None] * len(dataset),
                        dataset["input_ids"]):
        if limit is not None and len(ids) > limit:
            raise ValueError(f"query {qid!r}: example of {len(ids)} tokens is longer than "
                             f"the model's context of {limit}; rebuild the examples with a smaller window "
                             f"or max_passage_tokens")
    digest = data_hash(dataset)
    signature = base_signature(model)
    run = {"id": run_id(config, digest, signature), "config": config.to_dict(), "data_hash": digest,
           "base_model": config.model, "base_signature": signature}
    folder = Path(checkpoint_dir) if checkpoint_dir else cache_dir() / "checkpoints" / run["id"]
    claim_folder(folder, run, adopt=checkpoint_dir is None)  # another run's checkpoints: refused, never resumed
    if not resume:
        shutil.rmtree(folder)  # this run's own checkpoints (the claim says so): start over
        claim_folder(folder, run)
    saved_data = folder / DATASET_FOLDER
    with quiet_datasets():
        if not saved_data.exists():  # the run keeps what it trains on: a resumed run reads the same rows back
            dataset.save_to_disk(str(saved_data))
        rows = load_from_disk(saved_data)

    quiet_peft()
    # The rows are tokenized already, by make_example, exactly as the reranker's prompt is at inference (the rank
    # position must be the prompt's last token, which SFTTrainer's joint tokenization of prompt + completion cannot
    # promise); the labels there already mask the prompt (the assistant-only loss: SmolLM2's chat template has no
    # {% generation %} markers for trl to compute it from). Nothing is cut: a window longer than the context was
    # refused above.
    args = trainer_args(folder, model, learning_rate=config.learning_rate, batch_size=config.batch_size,
                        grad_accum=config.grad_accum, epochs=config.epochs, max_steps=config.max_steps,
                        warmup=config.warmup_ratio,  # a float < 1: a fraction of all steps
                        weight_decay=config.weight_decay, scheduler=config.lr_scheduler,
                        logging_steps=config.logging_steps, save_steps=config.save_steps, seed=config.seed,
                        neftune_alpha=config.neftune_alpha, gradient_checkpointing=config.gradient_checkpointing,
                        verbose=verbose)

    pad = P.pad_token_id(tokenizer)
    trainer = _trainer_class()(
        model=model, args=args, train_dataset=rows, processing_class=tokenizer,
        peft_config=lora_config(config),  # SFTTrainer seeds (config.seed), then draws LoRA's A matrices
        data_collator=lambda rows: collate(rows, pad), callbacks=[stop_after(stop_after_steps), *callbacks],
        objective=config.objective, lam=config.lam, pair_reduction=config.pair_reduction, protocol=config.protocol)
    peft_model = quiet(trainer, verbose).model
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
        saved = save_adapter(peft_model, adapter_dir, config, digest, len(dataset),
                             {"final_loss": last_logged(trainer.state.log_history, "loss"),
                              "steps": trainer.state.global_step, "train_seconds": round(seconds, 1)})
    if finished and not keep_checkpoints:
        shutil.rmtree(folder, ignore_errors=True)
    return TrainResult(peft_model, tokenizer, config, digest, len(dataset), list(trainer.state.log_history),
                       folder, saved, finished, seconds)


def last_logged(history: Sequence[Mapping], key: str):
    """The last value of ``key`` in a Trainer's ``log_history`` (e.g. the final ``loss``), None if never logged."""
    values = [row[key] for row in history if key in row]
    return values[-1] if values else None


