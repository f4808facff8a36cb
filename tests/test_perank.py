"""PE-Rank (chapter 7): projector, spliced prompt, constrained decoding, losses, stages, reranker, provenance.

Tiny random-weight LLMs and a hashing encoder: every test runs in seconds, offline.
"""
from __future__ import annotations

import os
import zlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minirank import losses
from minirank import perank as PR
from minirank import perank_train as T
from minirank.constrained import MASKED, constrained_decode
from minirank.listwise import Window
from minirank.models import tiny_model
from minirank.retrieval import ranked


class HashEncoder:
    """A deterministic stand-in for the retrieval encoder: a unit vector seeded by each text."""

    def __init__(self, dim: int = 16, name: str = "hash-encoder"):
        self.dim, self.name = dim, name

    def encode(self, texts):
        rows = []
        for text in texts:
            g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
            v = torch.randn(self.dim, generator=g)
            rows.append(v / v.norm())
        return torch.stack(rows) if rows else torch.zeros(0, self.dim)


@pytest.fixture(scope="module")
def setup(tok):
    model = tiny_model(len(tok), seed=0)
    encoder = HashEncoder()
    return model, PR.with_perank_tokens(tok), encoder, PR.new_projector(encoder, model, seed=0)


def _batch(setup, queries, windows):
    model, tok, encoder, projector = setup
    vectors = [encoder.encode(w) for w in windows]
    embeds, mask, cands = T.ranking_inputs(model, tok, projector, vectors, queries)
    return embeds, mask, cands


QUERIES = ["why does bread dough rise", "how does a telescope work"]
TEXTS = [[f"passage {i} about bread and yeast {i * 'x'}" for i in range(6)],
         [f"telescope passage {i}" for i in range(4)]]


# ---------------------------------------------------------------- pieces of §3.1

def test_projector_shape_and_parameter_count():
    projector = PR.Projector(384, 576)  # MiniLM -> SmolLM2-135M
    assert sum(p.numel() for p in projector.parameters()) == 554_112
    assert [type(m).__name__ for m in projector.net] == ["Linear", "GELU", "Linear"]
    assert projector(torch.randn(2, 5, 384)).shape == (2, 5, 576)
    with pytest.raises(ValueError, match="384-d encoder embeddings, got 16-d"):
        projector(torch.randn(3, 16))
    with pytest.raises(ValueError, match="encoder_dim must be a positive integer"):
        PR.Projector(0, 576)


def test_special_tokens_are_added_to_a_copy(tok):
    before = len(tok)
    extended = PR.with_perank_tokens(tok)
    assert len(tok) == before and len(extended) == before + 2 and extended.base_vocab_size == before
    placeholder, rank = PR.special_ids(extended)
    assert {placeholder, rank} == {before, before + 1}
    assert extended.encode("[1] <PLACEHOLDER>\n<RANK>", add_special_tokens=False).count(placeholder) == 1
    with pytest.raises(ValueError, match="with_perank_tokens"):
        PR.special_ids(tok)


def test_prompt_has_one_placeholder_per_passage_and_splice_puts_vectors_there(setup):
    model, tok, encoder, projector = setup
    placeholder, _ = PR.special_ids(tok)
    prompt = PR.ranking_prompt("a query", 6, tok)
    assert prompt.count(PR.PLACEHOLDER) == 6 and prompt.endswith("<|im_start|>assistant\n")
    with_text = PR.ranking_prompt("a query", 2, tok, contents=["first text", "second text"])
    assert "<PLACEHOLDER> first text" in with_text
    embeds, mask, cands = _batch(setup, QUERIES, TEXTS)
    ids, _, slots = PR.encode_prompts(tok, [PR.ranking_prompt(q, len(w), tok) for q, w in zip(QUERIES, TEXTS)], "cpu")
    for b, n in enumerate((6, 4)):
        assert torch.equal(embeds[b, slots[b]], cands[b, :n])
        table = model.get_input_embeddings().weight
        assert torch.equal(embeds[b, ~slots[b]], table[ids[b, ~slots[b]]])
    assert bool((ids[slots] == placeholder).all())


# ---------------------------------------------------------------- §3.2: dynamic-constrained decoding

class RandomHidden(torch.nn.Module):
    """A 'model' whose final hidden states are arbitrary: decoding must still give permutations."""

    def __init__(self, hidden, scale):
        super().__init__()
        self.hidden, self.scale, self.dummy = hidden, scale, torch.nn.Parameter(torch.zeros(1))
        self.model = self

    def forward(self, inputs_embeds, attention_mask, position_ids=None, use_cache=False, **kw):
        g = torch.Generator().manual_seed(int(inputs_embeds.shape[1]) * 7919 + self.hidden)
        h = torch.randn(inputs_embeds.shape[0], inputs_embeds.shape[1], inputs_embeds.shape[2], generator=g)

        class Out(dict):
            pass
        out = Out(last_hidden_state=h * self.scale)
        out.last_hidden_state = out["last_hidden_state"]
        return out


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4), seed=st.integers(0, 10_000),
       scale=st.sampled_from([0.0, 1e-6, 1.0, 1e4]))
def test_constrained_decoding_returns_a_permutation_of_exactly_n_for_any_logits(sizes, seed, scale):
    """Whatever the hidden states (ties when scale is 0, huge logits at 1e4), each window's output is a
    permutation of exactly its n passages, padding never chosen, and every step is one pick."""
    fake = RandomHidden(seed, scale)
    n, d = max(sizes), 8
    g = torch.Generator().manual_seed(seed)
    cands = torch.randn(len(sizes), n, d, generator=g)
    embeds, mask = torch.randn(len(sizes), 5, d, generator=g), torch.ones(len(sizes), 5, dtype=torch.long)
    orders, logits, calls = constrained_decode(fake, embeds, mask, cands, sizes)
    assert [sorted(o) for o in orders] == [list(range(s)) for s in sizes]
    assert logits.shape == (len(sizes), n, n) and calls == n
    for b, size in enumerate(sizes):  # at step i exactly size - i candidates are open
        open_per_step = (logits[b, :size] > MASKED / 2).sum(-1).tolist()
        assert open_per_step == list(range(size, 0, -1))


def test_decoding_a_tiny_model_never_starts_with_anything_but_a_passage(setup):
    model, tok, *_ = setup
    embeds, mask, cands = _batch(setup, QUERIES, TEXTS)
    orders, logits, calls = constrained_decode(model, embeds, mask, cands, [6, 4])
    assert [sorted(o) for o in orders] == [list(range(6)), list(range(4))] and calls == 6
    assert orders[0][0] == int(logits[0, 0].argmax())  # the first output is a candidate, not a BOS


def test_teacher_forced_step_logits_equal_greedy_decoding_fed_the_gold_order(setup):
    model, *_ = setup
    embeds, mask, cands = _batch(setup, QUERIES, TEXTS)
    gold = PR.orders_tensor([[3, 0, 5, 1, 4, 2], [2, 3, 0, 1]], 6)
    with torch.no_grad():
        forced_orders, forced, _ = constrained_decode(model, embeds, mask, cands, [6, 4], forced=gold)
        taught = PR.teacher_forced_logits(model, embeds, mask, cands, gold, [6, 4])
    assert forced_orders == [[3, 0, 5, 1, 4, 2], [2, 3, 0, 1]]
    assert torch.allclose(taught, forced, atol=1e-5)
    greedy_orders, greedy, _ = constrained_decode(model, embeds, mask, cands, [6, 4])
    with torch.no_grad():  # and greedy's own output, taught back, gives greedy's own logits
        again = PR.teacher_forced_logits(model, embeds, mask, cands, PR.orders_tensor(greedy_orders, 6), [6, 4])
    assert torch.allclose(again, greedy, atol=1e-5)


def test_orders_must_be_permutations():
    with pytest.raises(ValueError, match="not a permutation"):
        PR.orders_tensor([[0, 0, 1]], 3)
    assert PR.orders_tensor([[1, 0]], 4).tolist() == [[1, 0, 2, 3]]


# ---------------------------------------------------------------- §3.3: the losses

def test_listmle_over_steps_equals_chapter_4_listmle_when_every_step_sees_the_same_scores():
    torch.manual_seed(0)
    scores = torch.randn(3, 5)
    orders = torch.stack([torch.randperm(5) for _ in range(3)])
    ranks = torch.empty_like(orders)
    ranks.scatter_(1, orders, torch.arange(1, 6).expand(3, -1).contiguous())
    steps = torch.arange(5)
    placed = ranks[:, None, :] - 1 < steps[None, :, None]              # (B, step, candidate)
    logits = scores[:, None, :].expand(-1, 5, -1).masked_fill(placed, MASKED)
    ours = PR.listmle_over_steps(logits, orders, [5, 5, 5])
    assert torch.allclose(ours, losses.listmle_loss(scores, ranks), atol=1e-5)


def test_kl_is_zero_for_identical_passes_and_takes_the_content_pass_as_teacher(setup):
    model, *_ = setup
    embeds, mask, cands = _batch(setup, QUERIES, TEXTS)
    gold = PR.orders_tensor([[0, 1, 2, 3, 4, 5], [3, 2, 1, 0]], 6)
    with torch.no_grad():
        logits = PR.teacher_forced_logits(model, embeds, mask, cands, gold, [6, 4])
    assert float(PR.kl_between_passes(logits, logits, gold, [6, 4])) == 0.0
    other = logits + torch.randn_like(logits)
    kl = PR.kl_between_passes(logits, other, gold, [6, 4])
    p, q = other.log_softmax(-1).exp(), logits.log_softmax(-1).exp()
    by_hand = sum(float((p[b, i] * (p[b, i].log() - q[b, i].log())).nan_to_num().sum())
                  for b, n in enumerate((6, 4)) for i in range(n)) / 2
    assert torch.isfinite(kl) and abs(float(kl) - by_hand) < 1e-3
    student = logits.detach().clone().requires_grad_(True)
    teacher = other.detach().clone().requires_grad_(True)
    PR.kl_between_passes(student, teacher, gold, [6, 4]).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0  # the content pass is detached


# ---------------------------------------------------------------- the two training stages

def test_alignment_stage_changes_only_the_projector(tok):
    model = tiny_model(len(tok), seed=1)
    encoder = HashEncoder()
    projector = PR.new_projector(encoder, model, seed=1)
    llm_before = {k: v.clone() for k, v in model.state_dict().items()}
    proj_before = {k: v.clone() for k, v in projector.state_dict().items()}
    probe = encoder.encode(["probe"])
    history = T.align(model, tok, encoder, projector, [t for w in TEXTS for t in w], steps=3, batch_size=2)
    assert [h["step"] for h in history] == [1, 2, 3] and all(h["loss"] > 0 for h in history)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in llm_before.items())
    assert all(p.requires_grad for p in model.parameters())  # restored afterwards
    assert any(not torch.equal(v, projector.state_dict()[k]) for k, v in proj_before.items())
    assert torch.equal(encoder.encode(["probe"]), probe)
    out = T.reconstruct(model, tok, encoder, projector, TEXTS[0][:2], max_new_tokens=4)
    assert len(out) == 2 and all(isinstance(s, str) for s in out)


def test_alignment_loss_is_on_the_answer_only(tok):
    tok2 = PR.with_perank_tokens(tok)
    ids, mask, labels, slots = T.alignment_batch(["short text", "a somewhat longer text here"], tok2, [0, 4])
    answer = tok2.encode("short text", add_special_tokens=False) + [tok2.eos_token_id]
    assert labels[0][labels[0] != -100].tolist() == answer
    assert slots.sum(-1).tolist() == [1, 1] and bool((labels[slots] == -100).all())


def test_learning_to_rank_trains_the_projector_and_lora_only(tok, tiny_collection):
    from minirank.retrieval import BM25
    from minirank.train import teacher_windows

    model = tiny_model(len(tok), seed=2)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    encoder = HashEncoder()
    projector = PR.new_projector(encoder, model, seed=2)
    before = {k: v.clone() for k, v in projector.state_dict().items()}
    candidates = BM25(tiny_collection.passages).search(tiny_collection.queries, k=4)
    windows = teacher_windows(tiny_collection, candidates, window=3)
    lora = T.add_lora(model, r=2, alpha=4)
    history = T.learn_to_rank(lora, tok, encoder, projector, windows, steps=2, batch_size=2)
    assert len(history) == 2 and {"rank", "content", "kl", "loss"} <= set(history[0])
    h = history[0]
    assert abs(h["loss"] - (h["rank"] + h["content"] + 0.2 * h["kl"])) < 1e-4
    assert any(not torch.equal(v, projector.state_dict()[k]) for k, v in before.items())
    merged = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in lora.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base[k], merged[k]) for k in base)  # the base weights did not move
    only = T.ranking_losses(lora, PR.with_perank_tokens(tok), projector,
                            [encoder.encode(list(w.texts)) for w in windows[:1]], windows[:1], content=False)
    assert set(only) == {"rank", "loss"}


# ---------------------------------------------------------------- the reranker

def test_reranker_meets_the_interface_and_counts_tokens_exactly(setup, tiny_collection):
    model, tok, encoder, projector = setup
    reranker = PR.PERankReranker(model, tok, encoder, projector, window=3, stride=1, batch_size=4)
    candidates = {"q1": {"d1": 4.0, "d3": 3.0, "d4": 2.0, "d2": 1.0}, "q2": {"d5": 2.0, "d2": 1.0}}
    run = reranker.rerank(tiny_collection, candidates)
    assert {q: sorted(s) for q, s in run.items()} == {q: sorted(s) for q, s in candidates.items()}
    stats = reranker.stats
    # windows: q1 has (1, 4) then (0, 3); q2 one window of 2. Each prompt: its text tokens + one per passage.
    assert stats["windows"] == 3 and stats["tokens_generated"] == 3 + 3 + 2
    text_only = 0  # a special token splits the text: the pieces between placeholders are tokenized apart
    for q, n in (("q1", 3), ("q1", 3), ("q2", 2)):
        pieces = PR.ranking_prompt(tiny_collection.queries[q], n, tok).split(PR.PLACEHOLDER)
        assert len(pieces) == n + 1
        text_only += sum(len(tok.encode(piece, add_special_tokens=False)) for piece in pieces)
    assert stats["tokens_processed"] == text_only + 3 + 3 + 2
    assert stats["model_calls"] == 3 + 3  # step 1: both queries' first windows (width 3); step 2: q1's second
    assert stats["encoded_passages"] == 5  # each passage text encoded once per call


def test_reranker_ranks_by_the_step_logits(setup, tiny_collection):
    """One window reranked through the interface gives the decoder's own order."""
    model, tok, encoder, projector = setup
    reranker = PR.PERankReranker(model, tok, encoder, projector, window=4)
    pids = ["d1", "d3", "d4", "d2"]
    window = Window("q1", tiny_collection.queries["q1"], tuple(pids),
                    tuple(tiny_collection.passages[p] for p in pids), 0, 4)
    order, = reranker.order_windows([window])
    run = reranker.rerank(tiny_collection, {"q1": {p: 4.0 - i for i, p in enumerate(pids)}})
    assert ranked(run["q1"]) == [pids[i] for i in order]


def test_bad_input_is_a_clear_error(setup, tmp_path, tok):
    model, tok2, encoder, projector = setup
    reranker = PR.PERankReranker(model, tok2, encoder, projector, window=3)
    big = Window("q", "query", tuple("abcd"), tuple("abcd"), 0, 4)
    with pytest.raises(ValueError, match="a window of 4 passages .* at most window=3"):
        reranker.order_windows([big])
    with pytest.raises(ValueError, match="16-d embeddings but the encoder .* makes 8-d"):
        PR.PERankReranker(model, tok2, HashEncoder(8), projector)
    short = tiny_model(len(tok), seed=0, max_position_embeddings=64)
    with pytest.raises(ValueError, match="more than the model's context of 64"):
        PR.PERankReranker(short, tok2, encoder, projector, window=20)

    saved = PR.save_projector(projector, tmp_path / "proj", encoder, model, tok)
    loaded = PR.load_projector(saved, encoder, model, tok2)  # the extended tokenizer counts as the same
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), projector.state_dict().values()))
    assert loaded.minirank_meta["encoder"] == "hash-encoder" and loaded.minirank_meta["llm_hidden_size"] == 32
    with pytest.raises(FileExistsError, match="never overwrites"):
        PR.save_projector(projector, saved, encoder, model, tok)
    with pytest.raises(ValueError, match="encoder 'hash-encoder' \\(16-d\\), but this encoder is 'hash-encoder' \\(8-d\\)"):
        PR.load_projector(saved, HashEncoder(8), model, tok)
    with pytest.raises(ValueError, match="trained on encoder 'hash-encoder'.*'other'"):
        PR.load_projector(saved, HashEncoder(16, "other"), model, tok)
    wider = tiny_model(len(tok), seed=0, hidden_size=64)
    with pytest.raises(ValueError, match="another LLM: llm_hidden_size 32 there, 64 here"):
        PR.load_projector(saved, encoder, wider, tok)
    class OtherTokenizer:  # a tokenizer with another vocabulary (only its size is read)
        def __len__(self):
            return len(tok) - 5
    with pytest.raises(ValueError, match="tokenizer_vocab_size 49152 there, 49147 here"):
        PR.load_projector(saved, encoder, model, OtherTokenizer())
    with pytest.raises(FileNotFoundError, match="not a minirank projector"):
        PR.load_projector(tmp_path, encoder, model, tok)


@pytest.mark.skipif(os.environ.get("MINIRANK_SKIP_REAL_MODEL") == "1", reason="loads all-MiniLM-L6-v2")
def test_default_encoder_is_minilm_mean_pooled_and_normalised():
    encoder = PR.PassageEncoder()
    vectors = encoder.encode(["yeast makes dough rise", "a telescope gathers light"])
    assert encoder.name == PR.DEFAULT_ENCODER and encoder.dim == 384 and encoder.max_length == 256
    assert vectors.shape == (2, 384) and torch.allclose(vectors.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert [type(m).__name__ for m in encoder.model] == ["Transformer", "Pooling", "Normalize"]
    assert encoder.model[1].get_config_dict()["pooling_mode"] == "mean"


# ---------------------------------------------------------------- a trained PE-Rank in one folder (the shipped one)

def _tiny_recipe(tok, out, seed=4, **overrides):
    from minirank.recipes import perank as R

    settings = dict(align_steps=2, align_batch=2, align_tokens=8, rank_steps=4, rank_batch=1, eval_every=2)
    return R.make_perank(out, model_name="tiny", model=tiny_model(len(tok), seed=seed), tokenizer=tok,
                         encoder=HashEncoder(), echo=lambda s: None, **{**settings, **overrides})


def test_recipe_saves_the_checkpoint_it_chose_on_dev_with_its_provenance(tok, tmp_path):
    """Both stages on a tiny model; the folder reloads into exactly the checkpoint of the chosen step."""
    from minirank.data import load_course
    from minirank.evaluate import evaluate, mean
    from minirank.retrieval import BM25

    out = tmp_path / "perank"
    made = _tiny_recipe(tok, out)
    curve = made["dev"]["curve"]
    assert [c["step"] for c in curve] == [0, 2, 4] and curve[0]["train_loss"] is None
    best = max(c["ndcg@10"] for c in curve)
    assert made["chosen_step"] == next(c["step"] for c in curve if c["ndcg@10"] == best)  # the earliest best
    meta = PR.read_perank_meta(out)
    assert meta["base_model"] == "tiny" and meta["encoder"] == "hash-encoder" and meta["window"] == 20
    assert meta["stage1"]["steps"] == 2 and len(meta["stage1"]["loss"]) == 2 and meta["stage2"]["steps"] == 4
    assert meta["stage2"]["split"] == "train" and meta["stage2"]["windows"] == 40 and meta["dev"]["queries"] == 10
    assert len(meta["data_hash"]) == 64 and meta["seed"] == 0 and meta["budget_s"] == 600
    assert {"load", "stage1", "stage2", "dev_evaluation", "total"} <= set(meta["seconds"])
    assert {"torch", "transformers", "peft", "minirank"} <= set(meta["versions"]) and meta["machine"]["device"]
    assert sorted(p.name for p in out.iterdir()) == ["lora", "minirank_perank.json", "projector"]

    reranker = PR.load_perank(out, model=tiny_model(len(tok), seed=4), tokenizer=tok, encoder=HashEncoder())
    assert isinstance(reranker, PR.PERankReranker) and reranker.window == 20
    dev = load_course("dev")
    run = reranker.rerank(dev, BM25(dev.passages).search(dev.queries, k=20))
    assert mean(evaluate(run, dev.qrels, ["ndcg@10"]), "ndcg@10") == pytest.approx(made["chosen_dev_ndcg@10"], abs=1e-12)

    with pytest.raises(FileExistsError, match="never overwrites"):
        _tiny_recipe(tok, out)
    with pytest.raises(ValueError, match="trained on encoder 'hash-encoder' \\(16-d\\)"):
        PR.load_perank(out, model=tiny_model(len(tok), seed=4), tokenizer=tok, encoder=HashEncoder(8))
    with pytest.raises(ValueError, match="same shape, different weights"):
        PR.load_perank(out, model=tiny_model(len(tok), seed=5), tokenizer=tok, encoder=HashEncoder())
    with pytest.raises(ValueError, match="a model but no tokenizer"):
        PR.load_perank(out, model=tiny_model(len(tok), seed=4))
    with pytest.raises(FileNotFoundError, match="not a PE-Rank folder"):
        PR.load_perank(tmp_path)


def test_a_projector_for_another_llm_in_a_perank_folder_is_refused(tok, tmp_path):
    """The adapter fits (same base model) but the projector was written for a wider LLM: load_projector says so."""
    import json

    model = T.add_lora(tiny_model(len(tok), seed=6), r=2, alpha=4)
    encoder = HashEncoder()
    folder = PR.save_perank(model, PR.new_projector(encoder, model), tmp_path / "p", encoder, tok, "tiny", {"window": 3})
    meta_file = folder / "projector" / PR.META_FILE
    meta = json.loads(meta_file.read_text())
    meta["llm_hidden_size"] = 64
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="another LLM: llm_hidden_size 64 there, 32 here"):
        PR.load_perank(folder, model=tiny_model(len(tok), seed=6), tokenizer=tok, encoder=encoder)


def test_train_pe_rank_has_help_and_refuses_an_existing_folder_before_any_work(tmp_path, capsys):
    from minirank import cli

    assert cli.RECIPES["pe-rank"] == "minirank.recipes.perank"
    with pytest.raises(SystemExit) as done:
        cli.main(["train", "pe-rank", "--help"])
    assert done.value.code == 0 and "usage: minirank train pe-rank" in capsys.readouterr().out
    assert cli.main(["train", "--help"]) == 0 and "  pe-rank " in capsys.readouterr().out
    (tmp_path / "keep.txt").write_text("mine")
    assert cli.main(["train", "pe-rank", "--out", str(tmp_path)]) == 2
    assert "never overwrites" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.skipif(os.environ.get("MINIRANK_SKIP_REAL_MODEL") == "1", reason="loads the default model")
def test_shipped_perank_is_small_and_loads_on_the_default_model():
    from minirank.demo import RERANKERS
    from minirank.models import DEFAULT_MODEL

    assert "pe-rank" in RERANKERS
    files = [f for f in PR.SHIPPED_PERANK.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 5 * 2**20
    meta = PR.read_perank_meta(PR.SHIPPED_PERANK)
    assert meta["base_model"] == DEFAULT_MODEL and meta["encoder"] == PR.DEFAULT_ENCODER
    assert meta["chosen_step"] in [c["step"] for c in meta["dev"]["curve"]]
    assert meta["stage2"]["split"] == "train" and meta["dev"]["split"] == "dev"
    reranker = PR.load_perank()  # the adapter's base-model check and the projector's encoder/LLM check pass
    assert reranker.window == meta["window"] == 20
    assert sum(p.numel() for p in reranker.projector.parameters()) == 554_112
