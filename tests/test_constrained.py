"""Constrained text generation (chapter 7, issue 14 part 4): only permutations can be written."""
from __future__ import annotations

import os
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirank import prompts as P
from minirank.constrained import PermutationLogitsProcessor
from minirank.data import Collection
from minirank.listwise import GenerationReranker, parse_permutation
from minirank.models import tiny_model

REAL_MODEL = pytest.mark.skipif(os.environ.get("MINIRANK_SKIP_REAL_MODEL") == "1",
                                reason="uses the real 135M model weights (MINIRANK_SKIP_REAL_MODEL=1)")


def _walk(processor, sizes, seed, vocab):
    """Greedy decoding with random logits through the processor; returns each row's generated ids."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(sizes), 3, dtype=torch.long)  # a 3-token 'prompt'
    done = [False] * len(sizes)
    out = [[] for _ in sizes]
    for _ in range(4 * max(sizes) + 2):
        scores = processor(ids, torch.randn(len(sizes), vocab, generator=g) * 50)
        nxt = scores.argmax(-1)
        for row, token in enumerate(nxt.tolist()):
            if not done[row]:
                if token == processor.eos:
                    done[row] = True
                else:
                    out[row].append(token)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if all(done):
            break
    assert all(done), "constrained generation did not stop"
    return out


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=3), seed=st.integers(0, 10_000))
def test_any_logits_give_a_complete_permutation_and_then_stop(tok, sizes, seed):
    processor = PermutationLogitsProcessor(tok, sizes, prompt_length=3, eos_token_id=tok.eos_token_id)
    for m, generated in zip(sizes, _walk(processor, sizes, seed, len(tok))):
        text = "[" + tok.decode(generated)
        order, repairs = parse_permutation(text, m)
        assert not any(repairs.values()) and sorted(order) == list(range(m))
        assert text == "[" + P.answer_text(order)  # nothing before, between or after: stops after the m-th


def test_processor_structure_for_the_default_tokenizer(tok):
    processor = PermutationLogitsProcessor(tok, [3], 0, tok.eos_token_id)
    assert tok.convert_ids_to_tokens(processor.separator) == ["]", "Ġ>", "Ġ["]
    assert tok.convert_ids_to_tokens(processor.closing) == ["]"]
    a, b, c = processor.identifier_ids[:3]
    assert processor.allowed([], 3) == [a, b, c]
    assert processor.allowed([b], 3) == [processor.separator[0]]
    assert processor.allowed([b, *processor.separator], 3) == [a, c]
    assert processor.allowed([b, *processor.separator, c, *processor.separator, a, *processor.closing], 3) == [tok.eos_token_id]


def test_processor_refuses_what_it_cannot_constrain(tok):
    with pytest.raises(ValueError, match=r"identifier '\[10\]'.* 2 tokens"):
        PermutationLogitsProcessor(tok, [12], 0, tok.eos_token_id, style="numeric")
    with pytest.raises(ValueError, match="end-of-turn token"):
        PermutationLogitsProcessor(tok, [3], 0, None)
    with pytest.raises(ValueError, match="window sizes"):
        PermutationLogitsProcessor(tok, [0], 0, 2)


def _collection(n_queries=3, n_passages=12, seed=0):
    rng = random.Random(seed)
    words = "bread yeast telescope mirror river stone garden winter music paper light glass".split()
    passages, queries, candidates = {}, {}, {}
    for q in range(n_queries):
        queries[f"q{q}"] = " ".join(rng.sample(words, 3))
        candidates[f"q{q}"] = {}
        for i in range(n_passages):
            pid = f"p{q}_{i}"
            passages[pid] = " ".join(rng.choices(words, k=12))
            candidates[f"q{q}"][pid] = float(n_passages - i)
    return Collection("fake", passages, queries, {}), candidates


def test_constrained_generation_on_a_tiny_random_model_never_needs_repair(tok):
    collection, candidates = _collection(n_queries=2, n_passages=8)
    model = tiny_model(len(tok), seed=3)
    free = GenerationReranker(model, tok, window=6, stride=3, max_passage_tokens=16, batch_size=2)
    free.rerank(collection, candidates)
    assert free.stats["repaired_windows"] == free.stats["windows"]  # a random model writes junk
    constrained = GenerationReranker(model, tok, window=6, stride=3, max_passage_tokens=16, batch_size=2,
                                     constrained=True)
    constrained.rerank(collection, candidates)
    stats = constrained.stats
    assert stats["repaired_windows"] == 0 and not any(stats["repairs"].values())
    for g in stats["generations"]:
        order, _ = parse_permutation(g["text"], g["end"] - g["start"])
        assert g["text"] == "[" + P.answer_text(order)
    ideal = len(tok.encode(P.ideal_answer(6), add_special_tokens=False))
    assert stats["tokens_generated"] == stats["windows"] * ideal  # the stop token is not counted


def test_constrained_option_checks_its_budget(tok):
    model = tiny_model(len(tok), seed=3)
    collection, candidates = _collection(1, 6)
    short = GenerationReranker(model, tok, window=6, max_new_tokens=5, constrained=True)
    with pytest.raises(ValueError, match="too short for a constrained answer of 6 identifiers"):
        short.rerank(collection, candidates)


@REAL_MODEL
def test_constrained_generation_on_the_default_model_and_course_windows(tok):
    """The default model on the first course test query's top-20 BM25 window: a valid permutation each
    time, nothing repaired, and the answer stops right after the 20th identifier."""
    from minirank.data import load_course
    from minirank.models import load
    from minirank.retrieval import BM25

    model, _ = load()
    course = load_course("test")
    qids = sorted(course.queries)[:1]
    queries = {q: course.queries[q] for q in qids}
    candidates = BM25(course.passages).search(queries, k=20)
    reranker = GenerationReranker(model, tok, window=20, max_passage_tokens=8, constrained=True)
    reranker.rerank(queries, candidates, course.passages)
    stats = reranker.stats
    assert stats["windows"] == 1 and stats["repaired_windows"] == 0
    for g in stats["generations"]:
        order, _ = parse_permutation(g["text"], 20)
        assert g["text"] == "[" + P.answer_text(order)
