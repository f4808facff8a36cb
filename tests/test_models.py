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


def test_random_configs_have_the_shapes_they_claim():
    spec = models.CONFIGS["mistral-7b"]
    config = models.random_config("mistral-7b", 32000)
    assert config.model_type == spec["model_type"] and config.vocab_size == 32000
    shape = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "head_dim")
    assert all(getattr(config, k) == spec[k] for k in shape)
    assert models.parameter_count(config) == 7_241_732_096  # Mistral-7B-v0.1's parameter count
    with pytest.raises(ValueError, match="too big for a CPU"):
        models.build_random_model("mistral-7b", 49152, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="unknown model config"):
        models.build_random_model("gpt-5", 100, device="cpu")


def test_one_tiny_shape_for_tests_and_benchmarks():
    """tiny_model (tests) and build_random_model("tiny") (benchmarks) build the same shape, whose parameter
    count computed from the config is the one counted on the model; the dtype is minirank.device's."""
    tiny = models.tiny_model(300)
    built = models.build_random_model("tiny", 300, device="cpu")
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads"):
        assert getattr(tiny.config, key) == getattr(built.config, key) == models.CONFIGS["tiny"][key]
    assert models.parameter_count(tiny) == models.parameter_count(built) == models.parameter_count(tiny.config)
    assert built.dtype == device.pick_dtype("cpu") and tiny.dtype == torch.float32
    untied = models.tiny_model(300, tie_word_embeddings=False)
    assert models.parameter_count(untied) == models.parameter_count(untied.config) > models.parameter_count(tiny)


def test_gpu_dtype_by_compute_capability(monkeypatch):
    """bf16 from Ampere (8.x) on, fp16 on a Colab T4 (7.5), even though torch reports emulated bf16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert device.pick_dtype("cuda") == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert device.pick_dtype("cuda") == torch.bfloat16


def test_an_unreachable_hub_id_fails_fast_with_one_message(monkeypatch):
    """A hub id offline took 76 s and printed 12 retry lines before failing (issue 12 item 6)."""
    import huggingface_hub

    from minirank import models

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    calls = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, name, timeout=None: calls.append(timeout) or offline())
    with pytest.raises(ConnectionError, match="not in the local Hugging Face cache and the hub could not be reached"):
        models.check_available("HuggingFaceTB/SmolLM2-360M-Instruct")
    assert len(calls) == 1 and calls[0] is not None and calls[0] <= 30  # one request, with a timeout, no retries


def test_a_missing_model_path_says_so(tmp_path):
    from minirank import models

    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.check_available(str(tmp_path / "nothing-here"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        models.resolve("./not/a/model")
