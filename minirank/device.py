"""Where the tensors live: the one place that chooses device and dtype.

Every model load, training step and benchmark in minirank asks this module, so a notebook runs
unchanged on a laptop CPU (float32), a Colab T4 (float16) and an Ampere/Hopper GPU (bfloat16).
Set ``MINIRANK_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) to override the choice.
"""
from __future__ import annotations

import os
import platform

import torch


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """The device to use: ``prefer``, else ``$MINIRANK_DEVICE``, else CUDA, then Apple MPS, then CPU."""
    choice = prefer if prefer is not None else os.environ.get("MINIRANK_DEVICE")
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {str(choice)!r} was asked for, but torch sees no CUDA GPU "
                             f"(torch {torch.__version__}); use 'cpu' or install a CUDA build of torch")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """bfloat16 on GPUs that support it (Ampere, Hopper), float16 on older GPUs (Colab's T4), float32 on CPU."""
    device = torch.device(device) if device is not None else pick_device()
    if device.type == "cuda":
        # Native bf16 needs compute capability 8.0 (Ampere) or newer. torch.cuda.is_bf16_supported()
        # alone says yes on a T4 (7.5) too, because it counts slow emulation, hence the explicit check.
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def pick_batch_size(device: torch.device | str | None = None, accelerator: int = 8) -> int:
    """How many windows (or prompts) go to the model at once when the caller does not say.

    1 on a CPU: a prompt's prefill is compute-bound there from the first window, so batching buys
    little (left padding even adds work), and a progress bar then moves window by window.
    ``accelerator`` (8) on a GPU or Apple MPS, where batching fills the chip. FIRST uses it; the
    generation reranker keeps 8 everywhere, because its decode steps are overhead-bound.
    """
    device = torch.device(device) if device is not None else pick_device()
    return 1 if device.type == "cpu" else accelerator


def describe(device: torch.device | None = None) -> str:
    """One line naming the machine, for benchmark tables and notebook headers."""
    device = device or pick_device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    return f"{device} ({name}), dtype {str(pick_dtype(device)).replace('torch.', '')}, torch {torch.__version__}"


def synchronize(device: torch.device | None = None) -> None:
    """Wait for queued GPU work, so that wall-clock timings mean what they say (no-op on CPU)."""
    device = device or pick_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
