"""The dev curve every recipe takes: score the model on the dev split every few steps, keep the best state.

A recipe trains on the train split and must not look at the test split to decide anything, so the step it ships is
the one with the best dev score (the earliest of equals), as FIRST §4.1 holds out 300 MS MARCO queries for the
same purpose. :class:`DevCurve` is a ``transformers.TrainerCallback`` factory around the recipe's own scorer.
"""
from __future__ import annotations

from collections.abc import Callable


class DevCurve:
    """Calls ``score(model) -> float`` (the dev nDCG@10 of the model being trained) before the first step and every
    ``every`` steps (and at the last), and keeps a copy of the adapter's weights at the best step.

    ``points``: one ``{"step", "windows_seen", "epochs", "ndcg@10"}`` per evaluation (``windows_seen`` is steps x
    ``batch``, ``epochs`` that over ``examples``); step 0 is the model before training (the zero-shot point, never
    the one kept). ``best_state`` (the LoRA tensors, :func:`minirank.adapters.lora_state`), ``best_step``,
    ``best_score``: the best trained step so far. ``callback``: the object to give the Trainer.
    """

    def __init__(self, score: Callable[[object], float], every: int, examples: int, batch: int = 1,
                 echo: Callable[[str], None] = print):
        from transformers import TrainerCallback

        self.score, self.every, self.examples, self.batch, self.echo = score, every, examples, batch, echo
        self.points: list[dict] = []
        self.best_state, self.best_step, self.best_score = None, None, None
        outer = self

        class _Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, model=None, **kwargs):
                if state.global_step == 0:
                    outer.evaluate(model, 0)

            def on_step_end(self, args, state, control, model=None, **kwargs):
                if state.global_step % outer.every == 0 or state.global_step >= state.max_steps:
                    outer.evaluate(model, state.global_step)

        self.callback = _Callback()

    def evaluate(self, model, step: int) -> None:
        from minirank.adapters import lora_state

        if any(p["step"] == step for p in self.points):
            return
        was_training = model.training
        model.eval()
        try:
            score = float(self.score(model))
        finally:
            model.train(was_training)
        self.points.append({"step": step, "windows_seen": step * self.batch,
                            "epochs": round(step * self.batch / self.examples, 3), "ndcg@10": round(score, 4)})
        if step > 0 and (self.best_step is None or score > self.best_score):  # the earliest of equals
            self.best_state, self.best_step, self.best_score = lora_state(model), step, score
        self.echo(f"  step {step:>4}: dev nDCG@10 {score:.4f}" + ("  (best so far)" if self.best_step == step else ""))

    def restore_best(self, model) -> None:
        """Put the best step's adapter weights back into the peft ``model`` (a RuntimeError if none was kept)."""
        from peft import set_peft_model_state_dict

        if self.best_state is None:
            raise RuntimeError("no trained step was evaluated on dev: nothing to restore")
        result = set_peft_model_state_dict(model, self.best_state)
        if getattr(result, "unexpected_keys", None):
            raise RuntimeError(f"restoring the dev-chosen step: unexpected keys {result.unexpected_keys[:3]}")
