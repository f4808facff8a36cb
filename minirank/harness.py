"""The training harness chapters 5 and 8 share: ``trl``'s ``SFTTrainer`` with the chapter's own loss.

Both chapters train with a loss that a token-level SFT loss does not express (FIRST's ranking term reads the
identifier logits at one position, chapter 5; TSARankLLM's contrastive term compares a group of sequences and its
differential penalty needs a frozen reference, chapter 8). Everything around the loss is the library's: data
order, optimizer, schedule, gradient clipping, LoRA through ``peft_config``, NEFTune, checkpoints and resume.
So the harness is three small pieces:

* :func:`loss_trainer_class`: an ``SFTTrainer`` whose ``compute_loss`` is a function the chapter gives,
  ``loss_fn(model, inputs) -> (loss, parts)``; the float ``parts`` are logged next to ``loss``;
* :func:`trainer_args`: the ``trl.SFTConfig`` for pre-tokenized rows, from the chapter's settings and the
  model's device and dtype (chosen once, by :mod:`minirank.device`, never here);
* :func:`stop_after`: a callback that stops a run after a number of steps, as an interruption would.

Heavy libraries are imported inside the functions.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable

import torch


@functools.cache
def loss_trainer_class():
    """``LossTrainer(SFTTrainer)``: ``LossTrainer(..., loss_fn=f)`` trains on ``f(model, inputs) -> (loss, parts)``.

    ``loss`` is a per-batch mean (a 0-dim tensor), so the Trainer divides it by the gradient-accumulation
    steps itself (``loss_is_scaled_for_ga = False``). ``parts`` (name -> float) are averaged over the
    logging interval and logged with ``loss``. The class is made once (importing trl takes seconds).
    """
    from trl import SFTTrainer

    class LossTrainer(SFTTrainer):
        def __init__(self, *args, loss_fn: Callable | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_fn = loss_fn
            self.loss_is_scaled_for_ga = False
            self._parts: dict[str, list[float]] = defaultdict(list)

        def chapter_loss(self, model, inputs):
            if self.loss_fn is None:
                raise TypeError(f"{type(self).__name__} needs loss_fn=... (or a chapter_loss method)")
            return self.loss_fn(model, inputs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, parts = self.chapter_loss(model, inputs)
            if model.training:
                for key, value in parts.items():
                    self._parts[key].append(float(value))
            return (loss, parts) if return_outputs else loss

        def log(self, logs, *args, **kwargs):
            for key, values in self._parts.items():
                if values:
                    logs[key] = round(sum(values) / len(values), 6)
            self._parts.clear()
            super().log(logs, *args, **kwargs)

    return LossTrainer


def trainer_args(output_dir, model, *, learning_rate: float, batch_size: int = 1, grad_accum: int = 1,
                 epochs: float = 1.0, max_steps: int = -1, warmup: float = 0.0, weight_decay: float = 0.0,
                 scheduler: str = "linear", logging_steps: int = 1, save_steps: int | None = None, seed: int = 0,
                 neftune_alpha: float | None = None, gradient_checkpointing: bool = False,
                 verbose: bool = False, max_grad_norm: float = 1.0):
    """The ``trl.SFTConfig`` of a chapter's run on rows it has tokenized itself.

    ``warmup``: a fraction of all steps when below 1 (``warmup_steps`` takes both). ``save_steps=None``
    saves no checkpoint (a run too short to resume). Mixed precision follows the model's dtype on CUDA;
    on a CPU the run stays in the model's dtype (``use_cpu``). The rows are used as they are
    (``skip_prepare_dataset``, ``max_length=None``, no column removed): a chapter's collator builds the batch.
    """
    from trl import SFTConfig

    parameter = next(model.parameters())
    dev, dtype = parameter.device, parameter.dtype
    return SFTConfig(
        output_dir=str(output_dir), per_device_train_batch_size=batch_size, gradient_accumulation_steps=grad_accum,
        learning_rate=learning_rate, num_train_epochs=epochs, max_steps=max_steps, warmup_steps=warmup,
        weight_decay=weight_decay, lr_scheduler_type=scheduler, logging_steps=logging_steps,
        save_strategy="no" if save_steps is None else "steps", save_steps=save_steps or 500, save_total_limit=2,
        seed=seed, data_seed=seed, report_to="none",
        bf16=dtype == torch.bfloat16 and dev.type == "cuda", fp16=dtype == torch.float16 and dev.type == "cuda",
        use_cpu=dev.type == "cpu", remove_unused_columns=False, label_names=["labels"],
        neftune_noise_alpha=neftune_alpha, activation_checkpointing=gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if gradient_checkpointing else None,
        dataloader_num_workers=0, disable_tqdm=not verbose, max_grad_norm=max_grad_norm,
        dataset_kwargs={"skip_prepare_dataset": True}, max_length=None)


def stop_after(steps: int | None):
    """A ``TrainerCallback`` that saves a checkpoint and stops once ``steps`` optimizer steps are done
    (``None``: never), as an interruption would: the run can then be resumed."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if steps is not None and state.global_step >= steps:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopAfter()


def quiet(trainer, verbose: bool = False):
    """Without ``verbose``, the trainer does not print every log line (its ``log_history`` keeps them)."""
    from transformers import PrinterCallback

    if not verbose:
        trainer.remove_callback(PrinterCallback)
    return trainer
