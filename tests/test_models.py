"""Chapter 0: model resolution, device and dtype in one place."""
from __future__ import annotations

import pytest
import torch

from minirank import device, models


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model name 'not a model'"):
        models.resolve("not a model")


def test_missing_gguf_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.resolve(tmp_path / "x.gguf")


def test_folder_without_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        models.resolve(tmp_path)


def test_hf_id_passes_through():
    assert models.resolve("HuggingFaceTB/SmolLM2-360M-Instruct") == "HuggingFaceTB/SmolLM2-360M-Instruct"


def test_cpu_dtype_is_float32():
    assert device.pick_dtype("cpu") == torch.float32


def test_cuda_requested_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        device.pick_device("cuda")


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIRANK_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"


def test_default_model_loads_from_cache():
    """The default GGUF converts once; after that loading is fast and gives the known architecture."""
    model, tokenizer = models.load()
    assert model.config.num_hidden_layers == 30 and model.config.hidden_size == 576
    assert tokenizer.padding_side == "left"
    assert len(tokenizer.encode("A", add_special_tokens=False)) == 1


def test_tiny_model_is_deterministic():
    a, b = models.tiny_model(100, seed=3), models.tiny_model(100, seed=3)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(a(ids).logits, b(ids).logits)


def test_gpu_dtype_by_compute_capability(monkeypatch):
    """bf16 from Ampere (8.x) on, fp16 on a Colab T4 (7.5), even though torch reports emulated bf16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert device.pick_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert device.pick_dtype("cuda") == torch.bfloat16
