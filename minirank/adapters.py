"""LoRA adapters on disk (chapter 5.5): save one with what made it, and load it only onto its own base model.

An adapter folder holds peft's ``adapter_model.safetensors`` (the LoRA weights) and
``adapter_config.json``, plus minirank's :data:`META_FILE`: the base model's name and signature
(:func:`base_signature`), the training config, the data hash, the seed and the library versions.
:func:`save_adapter` never overwrites a folder (:func:`minirank.records.refuse_existing`);
:func:`load_adapter` refuses a base model the adapter was not trained on, a model that already carries
an adapter, and an adapter file whose tensors do not all load.
"""
from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minirank import __version__
from minirank.data import DATA_DIR
from minirank.records import new_folder

if TYPE_CHECKING:
    from minirank.train import TrainConfig

#: The adapter shipped with the book (made by ``minirank bench finetune --save-adapter ...``, see data/README.md).
SHIPPED_ADAPTER = DATA_DIR / "adapters" / "first-lora-smollm2"
#: The file of an adapter folder that says what made it, and its format version.
META_FILE = "minirank_adapter.json"
META_FORMAT = 1
#: peft's file of LoRA weights in an adapter folder.
WEIGHTS_FILE = "adapter_model.safetensors"


def quiet_peft() -> None:
    """peft 0.21 calls a transformers method that transformers 5 deprecates; the warning is not the user's."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def lora_config(config: "TrainConfig"):
    """The ``peft.LoraConfig`` of a :class:`minirank.train.TrainConfig`: rank, alpha, dropout and target
    modules, no bias, causal LM (FIRST's adapters: :func:`minirank.train.paper_scale`)."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM")


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
                                f"(made by minirank.adapters.save_adapter)")
    return json.loads(meta_file.read_text(encoding="utf-8"))


def save_adapter(model, path: str | Path, config: "TrainConfig", digest: str, examples: int,
                 extra: Mapping | None = None) -> Path:
    """Save LoRA weights (``adapter_model.safetensors``), peft's ``adapter_config.json`` and
    ``minirank_adapter.json`` (base model, config, data hash, seed, versions) into a new folder (:func:`save_lora`)."""
    return save_lora(model, path, config.model, "minirank.train",
                     {"config": config.to_dict(), "data_hash": digest, "examples": examples, "seed": config.seed,
                      **(dict(extra) if extra else {})})


def save_lora(model, path: str | Path, base_model: str, made_by: str, meta: Mapping | None = None) -> Path:
    """Save the LoRA adapter of the peft ``model`` into the new folder ``path``: its weights, peft's
    ``adapter_config.json`` and :data:`META_FILE` (``made_by``, the ``base_model`` name that
    :func:`minirank.models.load` takes, its :func:`base_signature`, versions, then ``meta``).

    The folder is written as ``path.partial`` and renamed, so a crash leaves no half adapter; an existing
    non-empty ``path`` is a FileExistsError (:func:`minirank.records.refuse_existing`). Used by
    :func:`save_adapter` (chapter 5) and by PE-Rank's :func:`minirank.perank.save_perank` (chapter 7).
    """
    import peft
    import transformers

    with new_folder(path, "adapter folder") as partial:
        for cfg in model.peft_config.values():
            cfg.base_model_name_or_path = base_model  # not this machine's cache path
        model.save_pretrained(str(partial), safe_serialization=True, save_embedding_layers=False)
        card = partial / "README.md"
        if card.exists():
            card.unlink()  # peft's empty model card; minirank_adapter.json says what this is
        header = {"format": META_FORMAT, "made_by": made_by, "minirank": __version__,
                  "base_model": base_model, "base_signature": base_signature(model.get_base_model())}
        versions = {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
        meta = {**header, "versions": versions, **(dict(meta) if meta else {})}
        (partial / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return Path(path)


def _adapted_layers(model) -> list[str]:
    """Names of the modules of ``model`` that peft replaced by LoRA layers (none on a plain base model)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]


def _listed(keys: list[str], most: int = 4) -> str:
    return ", ".join(keys[:most]) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def _check_complete(peft_model, path: Path) -> None:
    """Every tensor of the adapter file is in the model with its value, and every LoRA weight of the model
    came from the file; else peft's adapter is taken off again and a ValueError names the keys."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import load_file

    stored = load_file(path / WEIGHTS_FILE)
    loaded = get_peft_model_state_dict(peft_model, save_embedding_layers=False)  # as save_adapter writes them
    not_loaded = sorted(set(stored) - set(loaded))
    not_stored = sorted(set(loaded) - set(stored))
    changed = sorted(k for k in set(stored) & set(loaded)
                     if not torch.equal(stored[k].to(loaded[k].dtype), loaded[k].detach().cpu()))
    if not_loaded or not_stored or changed:
        peft_model.unload()  # the base model as it was before this call
        problems = [f"{len(keys)} {what}: {_listed(keys)}" for keys, what in (
            (not_loaded, "tensor(s) of the file fit no layer of the model"),
            (not_stored, "LoRA weight(s) of the model are not in the file (they would keep their random start)"),
            (changed, "tensor(s) differ from the file after loading")) if keys]
        raise ValueError(f"adapter {path} did not load completely: {'; '.join(problems)}. Its {WEIGHTS_FILE} does "
                         f"not match its adapter_config.json (edited, cut short, or from another adapter): "
                         f"save the adapter again")


def load_adapter(model, path: str | Path):
    """Put the LoRA adapter at ``path`` on ``model`` (eval mode) and return the ``peft.PeftModel``, after
    checking that it was made for this base model and that every tensor of its file was loaded.

    Errors (ValueError): a base model the adapter was not trained on (:func:`base_signature` differs);
    a model that already carries a LoRA adapter (peft would stack the second on the first, computing
    neither, with a warning only); an adapter file whose tensors do not all load. Note that peft
    modifies ``model`` in place: load a fresh base model for each adapter (:func:`load_with_adapter`).
    """
    from peft import PeftModel

    path = Path(path)
    meta = read_adapter_meta(path)
    if not (path / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"adapter folder {path} has no {WEIGHTS_FILE} (minirank saves adapters as safetensors)")
    carried = _adapted_layers(model)
    if carried or hasattr(model, "peft_config"):
        raise ValueError(f"this model already carries a LoRA adapter ({len(carried)} adapted layers, e.g. "
                         f"{carried[0] if carried else 'peft_config'}); putting {path} on it as well would compute "
                         f"neither adapter. Put each adapter on a fresh base model (load_with_adapter does), or "
                         f"take this one off first: base = model.unload() (merge_and_unload() instead keeps it "
                         f"in the weights).")
    mine = base_signature(model)
    theirs = meta.get("base_signature", {})
    if not _same_base(theirs, mine):
        shape = lambda s: (f"{s.get('model_type')}, vocab {s.get('vocab_size')}, hidden {s.get('hidden_size')}, "
                           f"{s.get('num_hidden_layers')} layers")
        raise ValueError(f"adapter {path} was trained on base model {meta.get('base_model')!r} ({shape(theirs)}), "
                         f"but this model ({shape(mine)}) is a different one"
                         f"{' (same shape, different weights)' if shape(theirs) == shape(mine) else ''}. "
                         f"Load {meta.get('base_model')!r} and put the adapter on it.")
    quiet_peft()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Found missing adapter keys")  # checked below, with the keys
        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    _check_complete(peft_model, path)
    peft_model.eval()
    peft_model.minirank_meta = meta
    return peft_model


def load_with_adapter(path: str | Path, device=None):
    """``(model, tokenizer, meta)``: a fresh copy of the adapter's base model with the adapter on it."""
    from minirank.models import load

    meta = read_adapter_meta(path)
    model, tokenizer = load(meta["base_model"], device=device)
    return load_adapter(model, path), tokenizer, meta


def lora_state(model) -> dict[str, torch.Tensor]:
    """The adapter's weights (the only ones training changes), as CPU tensors by state-dict name."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k}
