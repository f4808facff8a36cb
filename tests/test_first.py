"""Chapter 3: FIRST single-token ranking (FIRST §3.2) and the agreement analysis of its Figure 2."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from minirank import agreement as A
from minirank import forward
from minirank import first as F
from minirank import listwise as L
from minirank import prompts as P
from minirank.data import Collection
from minirank.models import tiny_model
from minirank.retrieval import ranked

PASSAGES = ["Paris is the capital and largest city of France.", "Berlin is the capital of Germany.",
            "Bananas are yellow when ripe.", "The Eiffel Tower is in Paris.", "Rome is in Italy."]


class KnownLogits(torch.nn.Module):
    """A fake LM whose last-position logits are a fixed table ``{token id: value}`` (-50 elsewhere).

    It checks what FIRST must give it: left-padded batches (every row ends in the last column) and
    position ids that start at 0 on each row's first real token.
    """

    def __init__(self, vocab, table):
        super().__init__()
        self.vocab, self.table, self.batches = vocab, table, []

    def forward(self, input_ids, attention_mask, position_ids=None, **kwargs):
        assert attention_mask[:, -1].all(), "prompts must be left-padded"
        assert position_ids is not None and position_ids[:, -1].tolist() == (attention_mask.sum(-1) - 1).tolist()
        self.batches.append(input_ids.shape[0])
        logits = torch.full((input_ids.shape[0], input_ids.shape[1], self.vocab), -50.0)
        for token, value in self.table.items():
            logits[:, -1, token] = value
        return SimpleNamespace(logits=logits)


def test_first_reads_the_identifier_logits_and_sorts_them(tok):
    a, b, c, d, e = P.identifier_token_ids(tok, "ABCDE")
    model = KnownLogits(len(tok), {a: 1.0, b: 3.5, c: -2.0, d: 7.25, e: 3.5, 0: 99.0})  # token 0 is no identifier
    first = F.FirstReranker(model, tok, window=5, batch_size=2)
    prompts = [first.prompt("paris", PASSAGES), first.prompt("paris", PASSAGES[:3]), first.prompt("x", PASSAGES[:4])]
    scores = first.score_windows(prompts, [5, 3, 4])
    assert scores == [[1.0, 3.5, -2.0, 7.25, 3.5], [1.0, 3.5, -2.0], [1.0, 3.5, -2.0, 7.25]]
    assert model.batches == [2, 1]
    windows = [L.Window("q", "paris", tuple(f"p{i}" for i in range(n)), tuple(PASSAGES[:n]), 0, n) for n in (5, 3, 4)]
    windows[2] = L.Window("q", "x", windows[2].pids, windows[2].texts, 0, 4)
    assert first.order_windows(windows) == [[3, 1, 4, 0, 2], [1, 0, 2], [3, 1, 0, 2]]  # tie B=E: input order
    assert first.stats["model_calls"] == 4 and first.stats["tokens_processed"] > 0


def test_first_rerank_with_known_logits(tok):
    a, b, c, d, e = P.identifier_token_ids(tok, "ABCDE")
    model = KnownLogits(len(tok), {a: 0.0, b: 2.0, c: 1.0, d: 4.0, e: 3.0})
    collection = Collection("fake", {f"p{i}": t for i, t in enumerate(PASSAGES)}, {"q": "paris"}, {})
    candidates = {"q": {f"p{i}": 10.0 - i for i in range(5)}}
    first = F.FirstReranker(model, tok, window=5)
    run = first.rerank(collection, candidates)
    assert ranked(run["q"]) == ["p3", "p4", "p1", "p2", "p0"]
    assert run["q"] == {"p3": 5.0, "p4": 4.0, "p1": 3.0, "p2": 2.0, "p0": 1.0}
    assert first.stats["windows"] == 1 and first.stats["tokens_generated"] == 0


def test_numeric_identifiers_work_below_ten_and_fail_from_ten(tok):
    ids = P.identifier_token_ids(tok, P.identifiers(9, "numeric"))
    model = KnownLogits(len(tok), {token: float(-i) for i, token in enumerate(ids)} | {ids[4]: 10.0})
    first = F.FirstReranker(model, tok, window=9, style="numeric")
    prompt = first.prompt("q", [f"passage {i}" for i in range(6)])
    assert "[6] passage 5" in prompt
    texts = tuple(f"passage {i}" for i in range(6))
    assert first.order_windows([L.Window("q", "q", tuple("abcdef"), texts, 0, 6)]) == [[4, 0, 1, 2, 3, 5]]
    for window in (10, 20):
        with pytest.raises(ValueError, match=r"'\[10\]': '10' is 2 tokens"):
            F.FirstReranker(model, tok, window=window, style="numeric")


def test_score_windows_rejects_bad_sizes(tok):
    first = F.FirstReranker(KnownLogits(len(tok), {}), tok, window=3)
    prompt = first.prompt("q", PASSAGES[:3])
    with pytest.raises(ValueError, match="2 prompts but 1 window sizes"):
        first.score_windows([prompt, prompt], [3])
    with pytest.raises(ValueError, match="a window of 4 passages: expected 1..3"):
        first.score_windows([prompt], [4])
    with pytest.raises(ValueError, match="a window of 0"):
        first.score_windows([prompt], 0)


def test_batched_equals_unbatched_on_a_tiny_transformer(tok):
    model = tiny_model(len(tok), seed=3)
    assert forward.last_logits_kwargs(model) == {"logits_to_keep": 1}
    assert forward.last_logits_kwargs(KnownLogits(3, {})) == {}
    prompts = [P.build_prompt("capital of france", PASSAGES, tok),
               P.build_prompt("q", PASSAGES[2:4], tok),
               P.build_prompt("a much longer query about european capitals", PASSAGES[:3], tok, max_passage_tokens=4)]
    sizes = [5, 2, 3]
    one = F.FirstReranker(model, tok, window=5, batch_size=1).score_windows(prompts, sizes)
    three = F.FirstReranker(model, tok, window=5, batch_size=3).score_windows(prompts, sizes)
    for a, b in zip(one, three):
        assert np.allclose(a, b, atol=1e-5, rtol=0), (a, b)
    # and unbatched scores are exactly the next-token logits of a plain forward pass
    ids = torch.tensor([tok.encode(prompts[0], add_special_tokens=False)])
    with torch.no_grad():
        plain = model(ids).logits[0, -1, P.identifier_token_ids(tok, "ABCDE")]
    assert np.allclose(one[0], plain.tolist(), atol=1e-5, rtol=0)


REAL_MODEL = pytest.mark.skipif(os.environ.get("MINIRANK_SKIP_REAL_MODEL") == "1",
                                reason="uses the real 135M model weights (MINIRANK_SKIP_REAL_MODEL=1)")


@REAL_MODEL
def test_real_model_three_passage_window(tok):
    """The default SmolLM2-135M-Instruct on one 3-passage window: the prompt's last token is '[' and
    the model's favourite next token is an identifier letter; both methods give a permutation."""
    from minirank.models import load

    model, _ = load()
    first = F.FirstReranker(model, tok, window=3, max_passage_tokens=32)
    gen = L.GenerationReranker(model, tok, window=3, max_passage_tokens=32)
    prompt = first.prompt("what is the capital of france", PASSAGES[:3])
    ids, mask = P.encode(tok, [prompt])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[0, -1]
    assert tok.convert_ids_to_tokens(int(logits.argmax())) in {"A", "B", "C"}
    scores, = first.score_windows([prompt], [3])
    assert np.allclose(scores, logits[[49, 50, 51]].tolist(), atol=1e-4)
    result = A.compare_windows(first, gen, [prompt], [3])
    assert sorted(result["first"][0]) == sorted(result["generated"][0]) == [0, 1, 2]
    assert result["generated"][0][0] == result["first"][0][0]  # greedy's first letter is the logits' argmax


# ---------------------------------------------------------------- agreement (FIRST Figure 2)

def test_agreement_by_rank():
    first = [[0, 1, 2], [2, 1, 0], [1, 0, 2, 3]]
    gen = [[0, 1, 2], [2, 0, 1], [0, 1, 2, 3]]
    out = A.agreement_by_rank(first, gen)
    assert out["rank"].tolist() == [1, 2, 3, 4]
    assert out["windows"].tolist() == [3, 3, 3, 1]
    assert np.allclose(out["agreement"], [2 / 3, 1 / 3, 2 / 3, 1.0])
    short = A.agreement_by_rank(first, gen, m=2)
    assert short["rank"].tolist() == [1, 2]
    empty = A.agreement_by_rank([[0]], [[0]], m=3)
    assert empty["agreement"][0] == 1.0 and np.isnan(empty["agreement"][1:]).all()
    with pytest.raises(ValueError, match="2 FIRST rankings but 1"):
        A.agreement_by_rank(first[:2], gen[:1])
    with pytest.raises(ValueError, match="permutations"):
        A.agreement_by_rank([[0, 1]], [[0, 0]])
    assert A.order_from_scores([1.0, 3.0, 3.0, -1.0]) == [1, 2, 0, 3]


def test_compare_windows_with_a_model_whose_logits_and_text_agree(tok):
    a, b, c = P.identifier_token_ids(tok, "ABC")
    table = {c: 5.0, a: 4.0, b: 1.0}

    class Writer(KnownLogits):
        """Logits from the table at the first step; then writes 'C] > [A] > [B]' and stops."""

        def __init__(self, vocab, table):
            super().__init__(vocab, table)
            self.script = tok.encode("C] > [A] > [B]", add_special_tokens=False) + [tok.eos_token_id]

        def forward(self, input_ids, attention_mask, position_ids=None, past_key_values=None, **kwargs):
            step = 0 if past_key_values is None else past_key_values + 1
            out = super().forward(input_ids, attention_mask, position_ids) if step == 0 else \
                SimpleNamespace(logits=torch.full((input_ids.shape[0], 1, self.vocab), -50.0))
            out.logits[:, -1, self.script[min(step, len(self.script) - 1)]] += 100.0
            out.past_key_values = step
            return out

    model = Writer(len(tok), table)
    first, gen = F.FirstReranker(model, tok, window=3), L.GenerationReranker(model, tok, window=3)
    collection = Collection("fake", {f"p{i}": t for i, t in enumerate(PASSAGES)}, {"q1": "paris", "q2": "rome"}, {})
    candidates = {"q1": {"p0": 3.0, "p1": 2.0, "p2": 1.0, "p3": 0.5}, "q2": {"p4": 1.0}}
    prompts, sizes = A.first_windows(collection, candidates, first)
    assert sizes == [3] and "[C] Bananas" in prompts[0]  # q2 has a single candidate: nothing to compare
    result = A.compare_windows(first, gen, prompts, sizes)
    assert result["texts"] == ["C] > [A] > [B]"]
    assert result["first"] == result["generated"] == [[2, 0, 1]]
    assert result["repairs"][0]["missing"] == 0
    assert A.agreement_by_rank(result["first"], result["generated"])["agreement"].tolist() == [1.0, 1.0, 1.0]


def test_plot_agreement():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    out = A.agreement_by_rank([[0, 1, 2]], [[0, 2, 1]])
    A.plot_agreement(ax, out, label="tiny")
    line, = ax.get_lines()
    assert line.get_xdata().tolist() == [1, 2, 3] and line.get_ydata().tolist() == [100.0, 0.0, 0.0]
    assert ax.get_legend() is not None
    plt.close(fig)
