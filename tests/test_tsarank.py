"""Chapter 8: two-stage adaptation in miniature (TSARankLLM §2.2-2.3) on a tiny random-weight model."""
from __future__ import annotations

import pytest
import torch

from minirank import pointwise as Q
from minirank import prompts as P
from minirank import tsarank as T
from minirank.data import Collection
from minirank.models import tiny_model

PAIRS = [("Bread rises in a warm oven.", "The yeast in the dough eats sugar and makes carbon dioxide, so the loaf grows."),
         ("Telescopes gather light.", "A large curved mirror collects the faint light of distant stars and galaxies.")]


def test_weak_pairs_take_the_first_sentence_as_the_query():
    passages = {"a": "The cup is old. It was first won in 1851 by the schooner America off the Isle of Wight.",
                "b": "One sentence only, with no second part to act as a document.",
                "c": "Too short. But the rest is long enough to be a document of ten words or more."}
    assert T.weak_pairs(passages) == [("The cup is old.", "It was first won in 1851 by the schooner America off "
                                                           "the Isle of Wight.")]
    assert len(T.weak_pairs(passages, min_query_words=2)) == 2


def test_sft_groups_draw_negatives_from_unjudged_candidates(tiny_collection):
    candidates = {"q1": {"d1": 5, "d2": 4, "d3": 3, "d4": 2, "d5": 1}, "q2": {"d5": 3, "d2": 2, "d1": 1}}
    groups = T.sft_groups(tiny_collection, candidates, negatives=2)
    positives = {g.positive for g in groups}
    assert positives == {tiny_collection.passages[p] for p in ("d1", "d3", "d5")}
    for g in groups:
        assert len(g.candidates) == 3 and g.positive not in g.negatives
    with pytest.raises(ValueError, match="no SFT group"):
        T.sft_groups(tiny_collection, candidates, negatives=9)


def test_only_the_top_blocks_train(tok):
    model = tiny_model(len(tok), num_hidden_layers=4)
    n = T.train_top_layers(model, 2)
    blocks = T.decoder_layers(model)
    assert n == sum(p.numel() for b in blocks[2:] for p in b.parameters())
    assert not any(p.requires_grad for p in blocks[0].parameters())
    assert not model.get_input_embeddings().weight.requires_grad
    with pytest.raises(ValueError, match="top_layers"):
        T.train_top_layers(model, 5)


def test_cpt_loss_is_the_query_and_eos_likelihood(tok):
    model = tiny_model(len(tok), seed=2)
    loss = T.cpt_loss(model, tok, PAIRS[:1], max_passage_tokens=None)
    q = Q.query_token_ids(tok, PAIRS[0][0], eos=True)
    assert q[-1] == tok.eos_token_id
    prompt = tok.encode(Q.QL_PROMPT.format(doc=PAIRS[0][1]))
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + q])).logits[0], -1)
    by_hand = -sum(logp[len(prompt) + j - 1, q[j]] for j in range(len(q))) / len(q)
    assert float(loss.detach()) == pytest.approx(float(by_hand), abs=1e-4)


def test_continual_pretraining_lowers_its_loss(tok):
    model = tiny_model(len(tok), seed=2, num_hidden_layers=3)
    stage = T.continual_pretraining(model, tok, PAIRS, steps=8, batch_size=2, lr=3e-3, top_layers=2)
    history = [h["loss"] for h in stage.history]
    assert len(history) == 8 and history[-1] < history[0]
    assert stage.model is model and not model.training
    assert stage.trainable == sum(p.numel() for b in T.decoder_layers(model)[1:] for p in b.parameters())


def test_continual_pretraining_with_lora_merges_into_the_model(tok):
    model = tiny_model(len(tok), seed=2, num_hidden_layers=3)
    bottom = T.decoder_layers(model)[0].self_attn.q_proj.weight.detach().clone()
    top = T.decoder_layers(model)[2].self_attn.q_proj.weight.detach().clone()
    before = float(T.cpt_loss(model, tok, PAIRS).detach())
    stage = T.continual_pretraining(model, tok, PAIRS, steps=8, batch_size=2, lr=1e-2, top_layers=2, lora_r=4)
    assert stage.model is model and not hasattr(model, "peft_config")  # merged: a plain model again
    assert torch.equal(T.decoder_layers(model)[0].self_attn.q_proj.weight, bottom)  # below the top blocks: untouched
    assert not torch.equal(T.decoder_layers(model)[2].self_attn.q_proj.weight, top)
    assert float(T.cpt_loss(model, tok, PAIRS).detach()) < before
    assert stage.trainable < sum(p.numel() for b in T.decoder_layers(model)[1:] for p in b.parameters()) / 4


def test_training_sets_are_datasets_with_the_cut_counted(tok):
    cpt = T.cpt_dataset(PAIRS, tok, max_passage_tokens=5)
    assert cpt.column_names == ["query", "document", "prompt_ids", "query_ids", "passage"]
    assert list(cpt["passage"]) == ["cut", "cut"] and cpt[0]["query_ids"][-1] == tok.eos_token_id
    assert cpt[0]["query_ids"] == Q.query_token_ids(tok, PAIRS[0][0], eos=True)
    group = T.Group("bread rises", PAIRS[0][1], (PAIRS[1][1], "Stock markets rose."))
    sft = T.sft_dataset([group], tok, max_passage_tokens=None)
    assert sft[0]["passage"] == ["whole"] * 3 and len(sft[0]["prompt_ids"]) == 3
    assert sft[0]["query_ids"] == Q.query_token_ids(tok, "bread rises")
    with pytest.raises(ValueError, match="at least one"):
        T.cpt_dataset([], tok)
    with pytest.raises(ValueError, match="tokenises to no tokens"):
        T.cpt_dataset([("   ", "a document")], tok)


def test_sft_terms_match_the_paper_and_switch_off(tok):
    model = tiny_model(len(tok), seed=4)
    reference = T.frozen_copy(model)
    group = T.Group("bread rises", PAIRS[0][1], (PAIRS[1][1], "Stock markets rose."))
    terms = T.sft_losses(model, reference, tok, group)
    assert float(terms["dp"]) == pytest.approx(0.0, abs=1e-6)  # the model still is its reference
    ql = Q.QueryLikelihoodReranker(model, tok).score_pairs([(group.query, c) for c in group.candidates])
    logits = torch.tensor(ql).exp() / 0.001  # S = exp(mean log p), over tau (released sft.py)
    assert float(terms["rank"]) == pytest.approx(float(-torch.log_softmax(logits, 0)[0]), rel=1e-4)
    assert float(terms["ntp"]) == pytest.approx(-ql[0], rel=1e-4)  # mean NLL of the positive's query tokens
    assert float(terms["total"]) == pytest.approx(0.6 * float(terms["rank"]) + 0.4 * float(terms["ntp"]), rel=1e-5)
    summed = T.sft_losses(model, reference, tok, group, T.SFTConfig(alpha=None))
    assert float(summed["total"]) == pytest.approx(float(terms["rank"] + terms["ntp"]), rel=1e-5)
    only_rank = T.sft_losses(model, None, tok, group, T.SFTConfig(ntp=False, dp=False))
    assert float(only_rank["ntp"]) == 0.0 and float(only_rank["dp"]) == 0.0
    with pytest.raises(ValueError, match="every term off"):
        T.SFTConfig(rank=False, ntp=False, dp=False)
    with pytest.raises(ValueError, match="reference"):
        T.sft_losses(model, None, tok, group, T.SFTConfig())


def test_supervised_fine_tuning_raises_the_positive(tok):
    model = tiny_model(len(tok), seed=5, num_hidden_layers=3)
    group = T.Group("bread rises", PAIRS[0][1], (PAIRS[1][1], "Stock markets rose after the decision."))
    before = Q.QueryLikelihoodReranker(model, tok).score_pairs([(group.query, c) for c in group.candidates])
    stage = T.supervised_fine_tuning(model, tok, [group], steps=6, lr=3e-3, top_layers=2, config=T.SFTConfig(tau=1.0))
    history = stage.history
    after = Q.QueryLikelihoodReranker(model, tok).score_pairs([(group.query, c) for c in group.candidates])
    assert len(history) == 6 and history[-1]["loss"] < history[0]["loss"]
    assert history[0]["dp"] == pytest.approx(0.0, abs=1e-6) and history[-1]["dp"] > 0
    assert after[0] - max(after[1:]) > before[0] - max(before[1:])


def test_lora_fine_tuning_uses_the_adapter_free_model_as_its_reference(tok):
    model = tiny_model(len(tok), seed=5, num_hidden_layers=3)
    group = T.Group("bread rises", PAIRS[0][1], (PAIRS[1][1], "Stock markets rose after the decision."))
    before = Q.QueryLikelihoodReranker(model, tok).score_pairs([(group.query, c) for c in group.candidates])
    stage = T.supervised_fine_tuning(model, tok, [group], steps=6, lr=1e-2, top_layers=2, lora_r=4,
                                     config=T.SFTConfig(tau=1.0))
    tuned = stage.model
    assert hasattr(tuned, "disable_adapter") and not tuned.training
    assert stage.history[0]["dp"] == pytest.approx(0.0, abs=1e-6) and stage.history[-1]["dp"] > 0
    after = Q.QueryLikelihoodReranker(tuned, tok).score_pairs([(group.query, c) for c in group.candidates])
    assert after[0] - max(after[1:]) > before[0] - max(before[1:])
    with tuned.disable_adapter():  # the reference: the model as it was before stage two
        again = Q.QueryLikelihoodReranker(tuned, tok).score_pairs([(group.query, c) for c in group.candidates])
    assert again == pytest.approx(before, abs=1e-5)
    with pytest.raises(TypeError, match="peft model"):
        T.sft_losses(tiny_model(len(tok)), T.BASE, tok, group)
