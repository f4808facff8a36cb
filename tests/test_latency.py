"""Chapter 6: measuring latency. No test here asserts anything about real wall-clock time: the timer
statistics run on a fake clock (so they are exact), the split and the cost model are checked on token
counts and synthetic data. The benchmark that runs them (minirank.bench.latency) is tested in test_bench.py."""
import functools

import numpy as np
import pytest
import torch

from minirank import latency as LT
from minirank.models import load_tokenizer, tiny_model


class FakeClock:
    """A clock that returns the given readings in order (and fails loudly if read too often)."""

    def __init__(self, readings):
        self.readings, self.reads = list(readings), 0

    def __call__(self):
        self.reads += 1
        return self.readings.pop(0)


@functools.lru_cache(maxsize=1)
def tokenizer():
    return load_tokenizer()


# ---------------------------------------------------------------- the timer

def test_measure_on_a_fake_clock_gives_exact_statistics():
    calls, events = [], []
    clock = FakeClock([0.0, 1.0, 10.0, 13.0, 20.0, 22.0, 30.0, 30.5, 40.0, 44.0])
    timing = LT.measure(lambda: calls.append(1), repeats=5, warmup=2, clock=clock, sync=lambda: events.append("s"))
    assert timing.samples == (1.0, 3.0, 2.0, 0.5, 4.0)
    assert len(calls) == 7 and clock.reads == 10  # warm-up calls run but never read the clock
    assert events == ["s"] * 14  # synchronised before the clock starts and before it stops, warm-up included
    assert timing.median == 2.0 and timing.min == 0.5 and timing.max == 4.0 and timing.mean == 2.1
    assert timing.quartiles == (1.0, 3.0)
    assert timing.rel_spread == 1.75
    d = timing.as_dict()
    assert d["median_s"] == 2.0 and d["n"] == 5 and d["warmup"] == 2 and d["samples_s"] == [1.0, 3.0, 2.0, 0.5, 4.0]
    assert "2.00 s" in str(timing)


def test_timing_edge_cases():
    one = LT.Timing((0.25,))
    assert one.median == one.min == one.max == 0.25 and one.quartiles == (0.25, 0.25) and one.rel_spread == 0
    two = LT.Timing((1.0, 3.0))
    assert two.median == 2.0 and two.quartiles == (1.5, 2.5)
    with pytest.raises(ValueError, match="at least one sample"):
        LT.Timing(())
    with pytest.raises(ValueError, match="repeats"):
        LT.measure(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        LT.measure(lambda: None, warmup=-1)


def test_interleaved_rotates_the_order_and_pairs_samples_by_round():
    order = []
    # each call of a/b/c is one clock step of 1, 2, 4 seconds: the fake clock advances inside the calls
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731

    def call(name, cost):
        def fn():
            order.append(name)
            now[0] += cost
        return fn

    t = LT.interleaved({"a": call("a", 1.0), "b": call("b", 2.0), "c": call("c", 4.0)}, repeats=3, warmup=1,
                       clock=clock, sync=lambda: None)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]  # rotated by one each round
    assert t["a"].samples == (1.0, 1.0, 1.0) and t["c"].samples == (4.0, 4.0, 4.0) and t["b"].warmup == 1
    ratio = LT.paired_ratios(t["c"], t["a"])
    assert ratio.samples == (4.0, 4.0, 4.0) and ratio.median == 4.0
    # pairing by round: a round slow for both methods does not move the ratio
    assert LT.paired_ratios([2.0, 20.0, 3.0], [1.0, 10.0, 1.0]).median == 2.0
    with pytest.raises(ValueError, match="as many samples"):
        LT.paired_ratios([1.0], [1.0, 2.0])


# ---------------------------------------------------------------- the prefill/decode split

def test_split_generation_counts_tokens_and_matches_generate():
    # a larger initialisation than the default makes the greedy tokens vary, so a wrong position id
    # or cache step would show up as a different sequence (the default init repeats one token)
    model = tiny_model(300, seed=3, hidden_size=64, intermediate_size=128, initializer_range=0.5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 300, (2, 12), generator=g)
    mask = torch.ones_like(ids)
    ids[1, :4], mask[1, :4] = 0, 0  # the second prompt is 8 tokens, left-padded
    ticks = [float(i) ** 2 for i in range(2 * 7)]  # readings 0, 1, 4, 9, ...: every interval differs
    split = LT.split_generation(model, ids, mask, new_tokens=7, clock=FakeClock(ticks), sync=lambda: None)
    assert split.tokens_processed == 12 + 8 and split.tokens_generated == 7 and split.batch == 2
    assert split.prefill_s == 1.0  # 1 - 0
    assert split.step_s == [9.0 - 4.0, 25.0 - 16.0, 49.0 - 36.0, 81.0 - 64.0, 121.0 - 100.0, 169.0 - 144.0]
    assert len(split.step_s) == split.tokens_generated - 1  # the first token comes from the prefill's logits
    assert split.decode_s == sum(split.step_s) and split.total_s == split.prefill_s + split.decode_s
    with torch.inference_mode():
        ref = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=7, min_new_tokens=7,
                             do_sample=False, pad_token_id=0)
    assert split.token_ids == ref[:, 12:].tolist()
    assert all(len(set(row)) > 3 for row in split.token_ids)  # the check above is not trivially satisfied
    static = LT.split_generation(model, ids, mask, new_tokens=7, cache="static")
    assert static.token_ids == split.token_ids
    with pytest.raises(ValueError, match="new_tokens"):
        LT.split_generation(model, ids, mask, new_tokens=0)


def test_answer_tokens_is_the_length_of_a_complete_answer():
    tok = tokenizer()
    assert LT.answer_tokens(tok, 3) == len(tok.encode("A] > [B] > [C]", add_special_tokens=False))
    assert LT.answer_tokens(tok, 1) == 2  # 'A', ']'
    lengths = [LT.answer_tokens(tok, n) for n in range(1, 21)]
    assert all(b > a for a, b in zip(lengths, lengths[1:]))
    assert lengths[-1] == 78  # 20 identifiers: about 4 tokens each (PE-Rank §5.2: m ~ 4.5 per passage)


def test_decode_bytes_per_step_counts_weights_and_kv_cache():
    model = tiny_model(300)  # tied embeddings: the output layer reads the whole table
    weights = sum(p.numel() * 4 for p in model.parameters())
    kv_per_token = 2 * 2 * 2 * (32 // 4) * 4  # K and V, 2 layers, 2 KV heads, head_dim 8, float32
    assert LT.decode_bytes_per_step(model, 0) == weights
    assert LT.decode_bytes_per_step(model, 100, batch=3) == weights + 100 * 3 * kv_per_token
    untied = tiny_model(300, tie_word_embeddings=False)
    embed = untied.get_input_embeddings().weight.numel() * 4
    assert LT.decode_bytes_per_step(untied, 0) == sum(p.numel() * 4 for p in untied.parameters()) - embed


# ---------------------------------------------------------------- the cost model

def test_cost_model_recovers_known_coefficients():
    true = LT.CostModel(intercept_s=0.02, prefill_s_per_token=3e-3, decode_s_per_token=0.07)
    processed = [250, 250, 400, 400, 800, 800, 1500]
    generated = [0, 10, 0, 30, 0, 78, 78]
    seconds = [true.predict(p, g) for p, g in zip(processed, generated)]
    for relative in (True, False):
        fit = LT.CostModel.fit(processed, generated, seconds, relative=relative)
        assert fit.intercept_s == pytest.approx(0.02, abs=1e-9)
        assert fit.prefill_s_per_token == pytest.approx(3e-3, rel=1e-9)
        assert fit.decode_s_per_token == pytest.approx(0.07, rel=1e-9)
    assert fit.prefill_tokens_per_s == pytest.approx(1 / 3e-3)
    assert np.allclose(fit.rel_errors(processed, generated, seconds), 0, atol=1e-9)
    # 5% multiplicative noise: coefficients within a few percent, predictions within 10%
    rng = np.random.default_rng(0)
    noisy = np.array(seconds) * rng.uniform(0.95, 1.05, len(seconds))
    fit = LT.CostModel.fit(processed, generated, noisy)
    assert fit.decode_s_per_token == pytest.approx(0.07, rel=0.1)
    assert np.abs(fit.rel_errors(processed, generated, noisy)).max() < 0.1
    assert isinstance(fit.predict(100, 5), float) and fit.predict([100, 200], [0, 5]).shape == (2,)


def test_cost_model_refuses_data_that_cannot_pin_it_down():
    with pytest.raises(ValueError, match="at least 3"):
        LT.CostModel.fit([1, 2], [0, 1], [1.0, 2.0])
    with pytest.raises(ValueError, match="do not pin down"):
        LT.CostModel.fit([100, 200, 300], [0, 0, 0], [1.0, 2.0, 3.0])  # FIRST rows only: no decode cost


def test_predicted_query_seconds_sums_the_sliding_windows():
    cost = LT.CostModel(1.0, 0.0, 0.0)  # one second per window
    assert LT.predicted_query_seconds(cost, 20, 10, 5, lambda n: 0, lambda n: 0) == 3.0
    assert LT.predicted_query_seconds(cost, 10, 10, None, lambda n: 0, lambda n: 0) == 1.0
    cost = LT.CostModel(0.0, 1.0, 10.0)
    assert LT.predicted_query_seconds(cost, 5, 10, 5, lambda n: 10 * n, lambda n: 2 * n) == 50 + 100
    # one second per window: 1 window up to depth 10, then one more per 5 candidates
    per_window = LT.CostModel(1.0, 0.0, 0.0)
    assert LT.deepest_within_budget(per_window, 1.0, 10, 5, lambda n: 0, lambda n: 0, max_depth=50) == 10
    assert LT.deepest_within_budget(per_window, 3.0, 10, 5, lambda n: 0, lambda n: 0, max_depth=50) == 20
    assert LT.deepest_within_budget(per_window, 0.5, 10, 5, lambda n: 0, lambda n: 0) == 0


def test_interleaved_groups_visit_every_group_each_round():
    order = []
    now = [0.0]

    def call(tag, cost):
        def fn():
            order.append(tag)
            now[0] += cost
        return fn

    groups = {"w1": {"a": call("1a", 1.0), "b": call("1b", 2.0)}, "w2": {"a": call("2a", 3.0), "b": call("2b", 5.0)}}
    t = LT.interleaved_groups(groups, repeats=2, warmup=0, clock=lambda: now[0], sync=lambda: None)
    assert order == ["1a", "1b", "2a", "2b", "1b", "1a", "2b", "2a"]
    assert t["w1"]["b"].samples == (2.0, 2.0) and t["w2"]["a"].samples == (3.0, 3.0)
    with pytest.raises(ValueError, match="nothing to time"):
        LT.interleaved_groups({"w": {}})
