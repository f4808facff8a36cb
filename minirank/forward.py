"""How minirank calls a causal language model: the few conventions every chapter shares.

One home for each of them, so that inference (chapters 2-3), training (chapter 5) and the latency
benchmark (chapter 6) cannot drift apart:

* :func:`positions` — position ids that ignore left padding (a batch of prompts is left-padded so
  that every prompt's last token sits in the last column, where FIRST reads its logits);
* :func:`last_logits_kwargs` — ask for the last position's logits only (or the last ``n``: query
  likelihood, chapter 8, reads one per query token), when the model can: a 20-passage window's full
  logits are ``tokens x vocabulary`` floats (300 MB for the default model);
* :func:`cache_kwargs` / :func:`returned_cache` — pass and read the key/value cache under the name the
  installed transformers uses (``cache`` from 5.24 on, ``past_key_values`` before; the old name now
  prints a deprecation warning on every run).
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Mapping

import torch


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids ``(batch, tokens)`` from an attention mask: 0 at each row's first real token.

    Left padding gets position 0 too (it is masked out anyway), so a left-padded prompt sees the
    same positions as the same prompt alone.
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)


def device_of(model) -> torch.device:
    """The device of the model's first parameter (CPU for parameter-less fakes in tests)."""
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def context_length(model) -> int | None:
    """The longest sequence the model takes (``config.max_position_embeddings``), None if it does not say."""
    config = getattr(model, "config", None)
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def _core(model):
    """The model whose ``forward`` declares the arguments (a peft wrapper hides them behind ``**kwargs``)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@functools.lru_cache(maxsize=64)
def _parameters_of(forward_type: type, forward_name: str) -> frozenset[str]:
    try:
        return frozenset(inspect.signature(getattr(forward_type, forward_name)).parameters)
    except (TypeError, ValueError, AttributeError):
        return frozenset()


def forward_parameters(model) -> frozenset[str]:
    """The names ``model.forward`` accepts (looked up once per model class)."""
    return _parameters_of(type(_core(model)), "forward")


def logits_kwargs(model, keep: int) -> dict:
    """``{"logits_to_keep": keep}`` (logits of the last ``keep`` positions only) where the model supports
    it, else ``{}`` (all positions: slower and larger, the same values)."""
    return {"logits_to_keep": int(keep)} if "logits_to_keep" in forward_parameters(model) else {}


def last_logits_kwargs(model, n: int = 1) -> dict:
    """The last ``n`` positions' logits only (FIRST and greedy decoding need the last one):
    :func:`logits_kwargs`; callers that may get full logits slice ``logits[:, -n:]``."""
    return logits_kwargs(model, n)


def cache_argument(model) -> str:
    """The name under which this model's ``forward`` takes the key/value cache: ``cache`` or ``past_key_values``."""
    params = forward_parameters(model)
    if "cache" in params:
        return "cache"
    return "past_key_values"


def cache_kwargs(model, cache) -> dict:
    """Keyword arguments that hand ``cache`` (or None, for the first step) to ``model.forward``."""
    return {cache_argument(model): cache, "use_cache": True}


def returned_cache(output):
    """The key/value cache a forward pass returned, or None (a model without a cache)."""
    keys = list(output.keys()) if isinstance(output, Mapping) else None  # a plain list: no renaming, no warning
    for name in ("cache", "past_key_values"):
        if keys is not None:
            if name in keys:
                return output[name]
        else:
            value = getattr(output, name, None)
            if value is not None:
                return value
    return None


def decoder_of(model):
    """The transformer under the language-model head (``model.model`` for Llama), LoRA layers included.

    Its ``last_hidden_state`` is the hidden state after the final norm, the vector the LM head would
    multiply by the vocabulary; PE-Rank (chapter 7) multiplies it by projected passage vectors instead,
    so it needs the hidden states, not the logits over the vocabulary.
    """
    core = _core(model)
    get = getattr(core, "get_decoder", None)
    decoder = get() if callable(get) else getattr(core, "model", None)
    if decoder is None:
        raise TypeError(f"{type(core).__name__} has no decoder (get_decoder() or .model) under its LM head")
    return decoder
