"""Chapter 2: the sliding window, parsing generated permutations, and the shared reranking loop (FIRST §3.1)."""
import random
import re
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirank import first as F
from minirank import listwise as L
from minirank import prompts as P
from minirank.data import Collection
from minirank.models import tiny_model
from minirank.retrieval import ranked


# ---------------------------------------------------------------- window schedule

def test_window_schedule_examples():
    assert L.window_schedule(100) == [(s, s + 20) for s in range(80, -1, -10)]
    assert L.window_schedule(25, 20, 10) == [(5, 25), (0, 20)]  # RankGPT's loop never reaches the top here
    assert L.window_schedule(5, 20, 10) == [(0, 5)]  # shorter than a window: one window (RankGPT: none)
    assert L.window_schedule(20, 20, 10) == [(0, 20)]
    assert L.window_schedule(21, 20, 20) == [(1, 21), (0, 20)]
    assert L.window_schedule(1) == [] and L.window_schedule(0) == []  # nothing to compare


def test_window_schedule_exhaustive():
    for k in range(0, 61):
        for window in range(1, 21):
            for stride in range(1, window + 1):
                schedule = L.window_schedule(k, window, stride)
                where = (k, window, stride, schedule)
                if k <= 1:
                    assert schedule == [], where
                    continue
                if k <= window:
                    assert schedule == [(0, k)], where
                assert schedule[0][1] == k, where  # starts at the back
                assert schedule[-1] == (0, min(window, k)), where  # the top window starts at 0, full width
                covered = set()
                for i, (start, end) in enumerate(schedule):
                    assert 0 <= start < end <= k and end - start == min(window, k), where
                    covered.update(range(start, end))
                    if i + 1 < len(schedule):
                        nxt = schedule[i + 1]
                        assert nxt[0] < start and nxt[1] < end, where  # back to front
                        assert nxt[1] >= start, where  # no gap between consecutive windows
                        if nxt[0] > 0:
                            assert (start - nxt[0], end - nxt[1]) == (stride, stride), where
                assert covered == set(range(k)), where


@pytest.mark.parametrize("window,stride", [(0, 1), (-3, 1), (5, 0), (5, -1), (5, 6), (2.5, 1), (True, 1)])
def test_window_schedule_rejects_bad_parameters(window, stride):
    with pytest.raises(ValueError, match="window|stride"):
        L.window_schedule(10, window, stride)


def test_window_schedule_rejects_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        L.window_schedule(-1)
    with pytest.raises(ValueError, match="k must be"):
        L.window_schedule(3.0)


# ---------------------------------------------------------------- parsing permutations

NO_REPAIRS = {"duplicates": 0, "out_of_range": 0, "missing": 0, "no_identifiers": 0}


def test_parse_clean_answer():
    assert L.parse_permutation("[C] > [A] > [B]", 3) == ([2, 0, 1], NO_REPAIRS)
    assert L.parse_permutation("[ B ]>[A]>[C]", 3)[0] == [1, 0, 2]
    assert L.parse_permutation("[3] > [1] > [2]", 3, "numeric") == ([2, 0, 1], NO_REPAIRS)
    assert L.parse_permutation("[12] > [10] > [1]", 12, "numeric")[0][:3] == [11, 9, 0]


@pytest.mark.parametrize("text,order,repairs", [
    ("[B] > [B] > [A] > [C]", [1, 0, 2], {"duplicates": 1}),
    ("[C] > [A]", [2, 0, 1], {"missing": 1}),
    ("[D] > [B] > [Z] > [A] > [C]", [1, 0, 2], {"out_of_range": 2}),
    ("I think [B] is best, then [C]. Passage a is off topic.", [1, 2, 0], {"missing": 1}),
    ("", [0, 1, 2], {"missing": 3, "no_identifiers": 1}),
    ("The passages are all relevant.", [0, 1, 2], {"missing": 3, "no_identifiers": 1}),
    ("[b] > [a] > [C]", [2, 0, 1], {"missing": 2}),  # lower case is free text
    ("[A] Paris is ... \n[B] Berlin", [0, 1, 2], {"missing": 1}),  # a model copying the passages
])
def test_parse_repairs_malformed_answers(text, order, repairs):
    got, counts = L.parse_permutation(text, 3)
    assert got == order
    assert counts == {**NO_REPAIRS, **repairs}


def test_parse_numeric_out_of_range_and_leading_zeros():
    assert L.parse_permutation("[0] > [04] > [2] > [5]", 4, "numeric") == (
        [3, 1, 0, 2], {**NO_REPAIRS, "out_of_range": 2, "missing": 2})


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="[]>ABCDEFZ0123456789 ab\n", max_size=60), st.integers(0, 8),
       st.sampled_from(P.STYLES))
def test_parse_always_returns_a_permutation(text, n, style):
    order, repairs = L.parse_permutation(text, n, style)
    assert sorted(order) == list(range(n))
    tail = order[n - repairs["missing"]:]
    assert tail == sorted(tail)  # never-mentioned passages follow in input order


# ---------------------------------------------------------------- fake models

def oracle_values(prompt: str) -> dict[str, int]:
    """The hidden relevance written into each passage of a window: '[C] doc p7 rel 42' -> {'C': 42}."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^\[(\w+)\] doc \S+ rel (\d+)", prompt, re.M)}


class OracleLM(torch.nn.Module):
    """A fake causal LM that knows each passage's relevance from its text.

    At the first answer position, identifier tokens get logit = relevance (what FIRST reads), and
    the model then 'writes' ``reply(prompt)`` token by token (what generation reads). It returns a
    step counter as its cache, so the reranker feeds it one token at a time like a real model;
    ``cache=False`` makes it cacheless (the reranker then feeds the whole sequence each step).
    """

    def __init__(self, tokenizer, style="alpha", reply=None, cache=True):
        super().__init__()
        self.tokenizer, self.style, self.cache = tokenizer, style, cache
        self.reply = reply or self.oracle_reply
        self.vocab = len(tokenizer)
        self.calls = []

    def oracle_reply(self, prompt):
        values = oracle_values(prompt)
        best = sorted(values, key=lambda label: -values[label])  # stable: ties keep input order
        return " > ".join(P.bracket(x) for x in best)[1:]  # the prompt already holds the first '['

    def forward(self, input_ids, attention_mask, past_key_values=None, **kwargs):
        self.calls.append((tuple(input_ids.shape), past_key_values))
        if self.cache:
            step = 0 if past_key_values is None else past_key_values + 1
        else:  # a continuation of the last prompt, or a new prompt?
            known = getattr(self, "prompt_ids", None)
            step = 0
            if known is not None and input_ids.shape[0] == known.shape[0] and input_ids.shape[1] > known.shape[1] \
                    and torch.equal(input_ids[:, :known.shape[1]], known):
                step = input_ids.shape[1] - known.shape[1]
        if step == 0:
            self.prompt_ids = input_ids.clone()
            self.prompts = [self.tokenizer.decode(row[mask.bool()]) for row, mask in zip(input_ids, attention_mask)]
            self.scripts = [self.tokenizer.encode(self.reply(p), add_special_tokens=False) + [self.tokenizer.eos_token_id]
                            for p in self.prompts]
        logits = torch.full((input_ids.shape[0], 1, self.vocab), -100.0)
        for row, prompt in enumerate(self.prompts):
            for label, value in oracle_values(prompt).items():
                token = self.tokenizer.encode(label, add_special_tokens=False)
                if len(token) == 1:  # '10' and up have no single logit
                    logits[row, 0, token[0]] = float(value)
            script = self.scripts[row]
            logits[row, 0, script[min(step, len(script) - 1)]] += 1000.0
        return SimpleNamespace(logits=logits, past_key_values=step if self.cache else None)


def make_collection(n_queries=3, n_passages=30, seed=0, ties=False):
    rng = random.Random(seed)
    passages, queries, candidates, relevance = {}, {}, {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        queries[qid] = f"query number {q}"
        candidates[qid] = {}
        for i in range(n_passages):
            pid = f"p{q}_{i:02d}"
            relevance[pid] = rng.randrange(5) if ties else rng.randrange(100)
            passages[pid] = f"doc {pid} rel {relevance[pid]}"
            candidates[qid][pid] = float(n_passages - i) + rng.random() * 0.5
    return Collection("fake", passages, queries, {}), candidates, relevance


def simulate(order, relevance, k, window, stride):
    """What a perfect window ranker does: sort each window of the schedule by relevance, in turn."""
    order = list(order)
    for s, e in L.window_schedule(min(k, len(order)), window, stride):
        order[s:e] = sorted(order[s:e], key=lambda pid: -relevance[pid])
    return order


# ---------------------------------------------------------------- the shared reranking loop

@pytest.mark.parametrize("k,window,stride,ties", [(30, 8, 4, False), (25, 10, 3, True), (30, 26, 26, False),
                                                 (7, 20, 10, False), (12, 5, 5, True)])
def test_generation_and_first_rerank_like_a_perfect_window_ranker(tok, k, window, stride, ties):
    collection, candidates, relevance = make_collection(ties=ties)
    runs = {}
    for cls in (L.GenerationReranker, F.FirstReranker):
        reranker = cls(OracleLM(tok), tok, window=window, stride=stride, batch_size=2)
        runs[cls.name] = reranker.rerank(collection, candidates, k=k)
        schedule = L.window_schedule(k, window, stride)
        assert reranker.stats["windows"] == len(schedule) * 3
        assert reranker.stats["repaired_windows"] == 0 and reranker.stats["seconds"] > 0
    for qid, scores in candidates.items():
        expected = simulate(ranked(scores), relevance, k, window, stride)
        assert ranked(runs["first"][qid]) == expected
        assert ranked(runs["listwise-gen"][qid]) == expected
        assert sorted(runs["first"][qid].values(), reverse=True) == [float(30 - i) for i in range(30)]
    if k == 30 and window == 26:  # one pass with a window of 26 then 26 again: top 26 sorted exactly
        assert ranked(runs["first"]["q0"])[:4] == sorted(ranked(candidates["q0"]), key=lambda p: -relevance[p])[:4]


def test_same_prompts_for_both_methods(tok):
    collection, candidates, _ = make_collection(n_queries=2, n_passages=12)
    seen = {}
    for cls in (L.GenerationReranker, F.FirstReranker):
        model = OracleLM(tok)
        prompts = []
        model.reply = lambda p, model=model, prompts=prompts: prompts.append(p) or model.oracle_reply(p)
        cls(model, tok, window=6, stride=3).rerank(collection, candidates)
        seen[cls.name] = prompts
    assert seen["first"] == seen["listwise-gen"] and len(seen["first"]) == 2 * len(L.window_schedule(12, 6, 3))


def test_generation_counts_repairs(tok):
    collection, candidates, _ = make_collection(n_queries=2, n_passages=5)
    replies = iter(["B] > [B] > [A]", "E] > [D] > [C] > [B] > [A]"])
    model = OracleLM(tok, reply=lambda prompt: next(replies))
    reranker = L.GenerationReranker(model, tok, window=5, batch_size=1)
    run = reranker.rerank(collection, candidates)
    assert reranker.stats["windows"] == 2 and reranker.stats["repaired_windows"] == 1
    assert reranker.stats["repairs"] == {"duplicates": 1, "out_of_range": 0, "missing": 3, "no_identifiers": 0}
    order = ranked(candidates["q0"])
    assert ranked(run["q0"]) == [order[1], order[0], order[2], order[3], order[4]]


def test_generation_without_a_cache_and_budget(tok):
    collection, candidates, relevance = make_collection(n_queries=1, n_passages=4)
    model = OracleLM(tok, cache=False)
    reranker = L.GenerationReranker(model, tok, window=4)
    run = reranker.rerank(collection, candidates)
    assert ranked(run["q0"]) == sorted(candidates["q0"], key=lambda p: -relevance[p])
    assert all(past is None for _, past in model.calls)
    widths = [shape[1] for shape, _ in model.calls]
    assert widths == list(range(widths[0], widths[0] + len(widths)))  # the whole sequence, one longer each step
    assert reranker.answer_budget(4) == len(tok.encode("A] > [B] > [C] > [D]", add_special_tokens=False)) + 4
    short = L.GenerationReranker(OracleLM(tok), tok, window=4, max_new_tokens=3)
    assert short.generate_windows([reranker.prompt("q", ["doc a rel 1", "doc b rel 9"])], 2) == ["B] >"]


def test_rerank_depth_and_edge_cases(tok):
    collection, candidates, relevance = make_collection(n_queries=2, n_passages=10)
    first = F.FirstReranker(OracleLM(tok), tok, window=4, stride=2)
    run = first.rerank(collection, candidates, k=5)
    order = ranked(candidates["q0"])
    assert ranked(run["q0"])[5:] == order[5:]  # below k: first-stage order kept
    assert ranked(run["q0"])[:5] == simulate(order, relevance, 5, 4, 2)[:5]
    assert first.rerank(collection, candidates, k=0) == first.rerank(collection, {q: c for q, c in candidates.items()}, k=1)
    assert ranked(first.rerank(collection, candidates, k=0)["q1"]) == ranked(candidates["q1"])
    one = {"q0": {"p0_03": 1.0}, "q1": {}}
    assert first.rerank(collection, one) == {"q0": {"p0_03": 1.0}, "q1": {}}
    assert first.stats["windows"] == 0
    # a mapping of queries plus passages works like a collection
    again = first.rerank(collection.queries, candidates, k=5, passages=collection.passages)
    assert again == run


def test_rerank_bad_input_is_a_clear_error(tok):
    collection, candidates, _ = make_collection(n_queries=1, n_passages=4)
    first = F.FirstReranker(OracleLM(tok), tok, window=4, stride=2)
    with pytest.raises(ValueError, match="candidate run is empty"):
        first.rerank(collection, {})
    with pytest.raises(KeyError, match="query 'q9'"):
        first.rerank(collection, {"q9": {"p0_00": 1.0}})
    with pytest.raises(KeyError, match="passage 'nope'"):
        first.rerank(collection, {"q0": {"nope": 2.0, "p0_00": 1.0}})
    with pytest.raises(ValueError, match="no passages"):
        first.rerank(collection.queries, candidates)
    with pytest.raises(ValueError, match="k must be"):
        first.rerank(collection, candidates, k=-1)
    with pytest.raises(ValueError, match="stride 5 > window 4"):
        F.FirstReranker(OracleLM(tok), tok, window=4, stride=5)
    with pytest.raises(ValueError, match="27 identifiers"):
        L.GenerationReranker(OracleLM(tok), tok, window=27)
    # numeric identifiers: fine for generation up to any window, FIRST stops at [10]
    L.GenerationReranker(OracleLM(tok), tok, window=20, style="numeric")
    with pytest.raises(ValueError, match=r"'\[10\]'"):
        F.FirstReranker(OracleLM(tok), tok, window=20, style="numeric")


def test_numeric_generation(tok):
    collection, candidates, relevance = make_collection(n_queries=1, n_passages=12)
    model = OracleLM(tok, style="numeric")
    run = L.GenerationReranker(model, tok, window=12, style="numeric").rerank(collection, candidates)
    assert ranked(run["q0"]) == sorted(candidates["q0"], key=lambda p: (-relevance[p], -candidates["q0"][p]))


# ---------------------------------------------------------------- on a real (tiny, random) transformer

def test_greedy_loop_matches_transformers_generate(tok):
    model = tiny_model(len(tok), seed=1)
    gen = L.GenerationReranker(model, tok, window=3, max_new_tokens=6, batch_size=2)
    prompts = [gen.prompt("capital of france", ["Paris is in France.", "Berlin.", "Bananas."]),
               gen.prompt("q", ["a much longer passage " * 5, "b"])]
    ours = gen.generate_windows(prompts, [3, 2])
    for prompt, text in zip(prompts, ours):
        ids, mask = P.encode(tok, [prompt])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        assert text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
    assert gen.stats["tokens_generated"] == 12


def test_demo_rows_are_registered():
    from minirank import demo

    assert {"listwise-gen", "first", "first-lora"} <= set(demo.RERANKERS)
    assert list(demo.METHODS)[:2] == ["bm25", "dense"] and set(demo.RERANKERS) <= set(demo.METHODS)


class FixedRun:
    """A retriever that returns a fixed run (the protocol is just ``search(queries, k)``)."""

    def __init__(self, run):
        self.run = run

    def search(self, queries, k=100):
        from minirank.retrieval import top_k

        return top_k({q: self.run[q] for q in queries if q in self.run}, k)


def test_demo_rerankers_run_in_an_experiment_with_the_shared_model(tok):
    from minirank import demo, evaluate
    from minirank.rerank import Cascade

    collection, candidates, relevance = make_collection(n_queries=2, n_passages=30)
    collection.qrels = {q: {p: int(relevance[p] > 50) for p in c} for q, c in candidates.items()}
    ctx = demo.Context(collection, None, depth=30)
    ctx.__dict__["llm"] = (OracleLM(tok), tok)  # the cached property, filled with a fake model
    first_stage = FixedRun(candidates)
    systems = {"fixed": first_stage}
    systems |= {m: Cascade(first_stage, demo.RERANKERS[m](ctx), 30, collection.passages) for m in ("first", "listwise-gen")}
    result = evaluate.experiment(systems, collection, ["ndcg@10"], baseline="fixed")
    for row in result.rows[1:]:
        assert row["windows"] == 4 and "repairs" not in row and row["seconds"] > 0  # (10, 30), (0, 20) per query
        assert row["ndcg@10"] >= result.rows[0]["ndcg@10"] and set(row) >= {"vs fixed", "95% CI", "p"}
        assert ranked(result.runs[row["method"]]["q1"]) == simulate(ranked(candidates["q1"]), relevance, 30, 20, 10)


def test_stride_equal_to_window_warns(tok):
    with pytest.warns(UserWarning, match="windows do not overlap"):
        F.FirstReranker(OracleLM(tok), tok, window=4, stride=4)


def test_generation_uses_no_deprecated_model_arguments(tok):
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` and warns on the old name, which then
    printed in the middle of `minirank demo` and in stored notebook outputs (issue 12)."""
    import logging
    import warnings

    from minirank import forward

    model = tiny_model(len(tok), seed=1)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    hf_logger = logging.getLogger("transformers")
    hf_logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            reranker = L.GenerationReranker(model, tok, window=3, max_new_tokens=3)
            reranker.generate_windows([P.build_prompt("q", ["Paris is in France.", "Berlin.", "Bananas."], tok)], [3])
    finally:
        hf_logger.removeHandler(handler)
    assert not [r for r in records if "deprecated" in r.getMessage()]
    import inspect

    expected = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    assert forward.cache_argument(model) == expected


def test_a_prompt_longer_than_the_context_is_refused_before_any_model_call(tok):
    """A 5,000-word passage with no cut built a 14k-token prompt for an 8k model and ran for minutes (issue 12)."""
    model = tiny_model(len(tok), max_position_embeddings=256)
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append(1))
    long = " ".join(["word"] * 5000)
    collection = Collection("fake", {"a": long, "b": "short"}, {"q": "query"}, {})
    for cls in (F.FirstReranker, L.GenerationReranker):
        reranker = cls(model, tok, window=2, max_passage_tokens=None)
        with pytest.raises(ValueError, match="does not fit the model's context of 256 tokens"):
            reranker.rerank(collection, {"q": {"a": 2.0, "b": 1.0}})
    assert calls == []
    # with a passage cut it fits and runs
    F.FirstReranker(model, tok, window=2, max_passage_tokens=16).rerank(collection, {"q": {"a": 2.0, "b": 1.0}})


def test_unknown_candidate_ids_are_an_error_even_without_a_window(tok):
    """A single candidate 'nope' (no window to rank) came back ranked (issue 12)."""
    collection = Collection("fake", {"a": "text"}, {"q": "query"}, {})
    with pytest.raises(KeyError, match="candidate passage 'nope'"):
        F.FirstReranker(OracleLM(tok), tok, window=4).rerank(collection, {"q": {"nope": 1.0}})


def test_every_generation_of_a_run_is_kept(tok):
    collection, candidates, _ = make_collection(n_queries=3, n_passages=12)
    reranker = L.GenerationReranker(OracleLM(tok), tok, window=6, stride=3, batch_size=2)
    reranker.rerank(collection, candidates)
    kept = reranker.stats["generations"]
    assert len(kept) == reranker.stats["windows"] == 3 * len(L.window_schedule(12, 6, 3))
    assert {g["qid"] for g in kept} == set(candidates) and all(g["text"].startswith("[") for g in kept)


# ---------------------------------------------------------------- malformed answers are normal input

def _malformed_answers(style_of_prompt):
    """Answers a small model writes: valid identifiers mixed with repeats, identifiers outside the
    window, numbers to a letter prompt, wrong bracket styles, free text and nothing at all."""
    letter = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    number = st.integers(0, 30).map(str)
    ident = letter if style_of_prompt == "alpha" else number
    piece = st.one_of(
        ident.map(lambda x: f"[{x}]"),                                    # valid or out of range
        ident.map(lambda x: f"[ {x} ]"),                                  # spaced brackets
        st.one_of(letter, number).map(lambda x: f"[{x}]"),                # the other style's identifiers
        ident.map(lambda x: f"({x})"), ident.map(lambda x: f"{{{x}}}"),   # wrong bracket styles
        ident,                                                            # no brackets at all
        st.sampled_from([" > ", ">", ", ", "\n", " ", "I think ", "is the best. ", "[", "]", "[]"]),
        st.text(alphabet="abc xyz.,!?", max_size=12),                     # free text
    )
    return st.lists(piece, max_size=30).map("".join)


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_a_thousand_malformed_answers_all_become_counted_permutations(data):
    style = data.draw(st.sampled_from(P.STYLES))
    n = data.draw(st.integers(1, 20))
    text = data.draw(_malformed_answers(style))
    order, repairs = L.parse_permutation(text, n, style)
    assert sorted(order) == list(range(n))                      # always a permutation of the window
    found = P.IDENTIFIER_PATTERNS[style].findall(text)
    labels = P.identifiers(n, style)
    valid = [str(int(x)) if style == "numeric" else x for x in found]
    valid = [x for x in valid if x in labels]
    assert repairs["out_of_range"] == len(found) - len(valid)    # every dropped identifier is counted
    assert repairs["duplicates"] == len(valid) - len(set(valid))
    assert repairs["missing"] == n - len(set(valid))
    assert repairs["no_identifiers"] == int(not found)
    assert order[:len(set(valid))] == [labels.index(x) for x in dict.fromkeys(valid)]  # first mentions, in order


@settings(max_examples=40, deadline=None)
@given(st.lists(_malformed_answers("alpha"), min_size=2, max_size=2))
def test_the_reranker_repairs_and_counts_what_the_model_writes(tok, answers):
    collection, candidates, _ = make_collection(n_queries=2, n_passages=5)
    replies = iter(answers)
    reranker = L.GenerationReranker(OracleLM(tok, reply=lambda prompt: next(replies)), tok, window=5, batch_size=1,
                                    max_new_tokens=200)
    run = reranker.rerank(collection, candidates)
    assert all(sorted(run[q]) == sorted(candidates[q]) for q in candidates)
    kept = [g["text"] for g in reranker.stats["generations"]]
    expected = [L.parse_permutation(t, 5)[1] for t in kept]
    assert reranker.stats["repaired_windows"] == sum(any(r.values()) for r in expected)
    for kind in L.REPAIR_KINDS:
        assert reranker.stats["repairs"][kind] == sum(r[kind] for r in expected)
