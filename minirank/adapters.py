"""LoRA adapters on disk (chapter 5.5): save one with what made it, and load it only onto its own base model.

An adapter folder holds peft's ``adapter_model.safetensors`` (the LoRA weights) and
``adapter_config.json``, plus minirank's :data:`META_FILE`: the base model's name and signature
(:func:`base_signature`), the training config, the data hash, the seed and the library versions.
:func:`save_adapter` never overwrites a folder (:func:`minirank.records.refuse_existing`);
:func:`load_adapter` refuses a base model the adapter was not trained on.
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from minirank import __version__
from minirank.data import DATA_DIR
from minirank.records import refuse_existing

if TYPE_CHECKING:
    from minirank.train import TrainConfig

#: The adapter shipped with the book (made by ``minirank bench finetune --save-adapter ...``, see data/README.md).
SHIPPED_ADAPTER = DATA_DIR / "adapters" / "first-lora-smollm2"
#: The file of an adapter folder that says what made it, and its format version.
META_FILE = "minirank_adapter.json"
META_FORMAT = 1


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
    ``minirank_adapter.json`` (base model, config, data hash, seed, versions). Refuses to overwrite."""
    import peft
    import transformers

    path = Path(path)
    refuse_existing(path, "adapter folder", hint="remove it yourself")
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
    quiet_peft()
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


def lora_state(model) -> dict[str, torch.Tensor]:
    """The adapter's weights (the only ones training changes), as CPU tensors by state-dict name."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if "lora_" in k}
