"""The recipes (minirank train NAME): programs that make the shipped adapters, checked on tiny random-weight
models with the real tokenizer and the course collection (a few seconds each)."""
import json

import pytest

from minirank import cli
from minirank import models as M
from minirank.models import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_load(monkeypatch, tok):
    monkeypatch.setattr(M, "load", lambda name=None, device=None, **kw: (tiny_model(len(tok), seed=0), tok))


def test_train_lists_the_recipes(capsys):
    assert cli.main(["train", "--help"]) == 0
    assert "first-lora" in capsys.readouterr().out
    assert cli.main(["train", "nope"]) == 2


def test_first_lora_recipe_chooses_the_step_on_dev_and_records_what_made_it(tiny_load, tmp_path, capsys):
    out, curve = tmp_path / "adapter", tmp_path / "curve.json"
    argv = ["train", "first-lora", "--out", str(out), "--json", str(curve), "--steps", "3", "--eval-every", "1",
            "--queries", "2", "--windows-per-query", "2", "--window", "4", "--depth", "6", "--passage-tokens", "8"]
    assert cli.main(argv) == 0
    record = json.loads(curve.read_text())
    assert [p["step"] for p in record["dev_curve"]] == [0, 1, 2, 3]  # step 0: the base model, zero-shot FIRST
    trained = [p for p in record["dev_curve"] if p["step"] > 0]
    best = max(p["ndcg@10"] for p in trained)
    assert record["chosen_step"] == min(p["step"] for p in trained if p["ndcg@10"] == best)  # earliest of equals
    assert record["training_queries"] == 2 and record["dev_queries"] == 10 and record["test"]["queries"] == 20
    paired = record["test"]["first-lora - bm25"]
    assert paired["ci_low"] <= paired["mean_diff"] <= paired["ci_high"] and 0 <= paired["p"] <= 1
    meta = json.loads((out / "minirank_adapter.json").read_text())
    assert meta["chosen_step"] == record["chosen_step"] and meta["command"].startswith("minirank train first-lora")
    assert meta["config"]["window"] == 4 and meta["config"]["max_passage_tokens"] == 8
    assert {"seconds", "data_hash", "seed", "machine", "dev_curve"} <= set(meta)
    # nothing a user made is overwritten: the same command again is refused before any work
    capsys.readouterr()
    assert cli.main(argv) == 2
    assert "exists" in capsys.readouterr().err


def test_first_lora_recipe_refuses_bad_options(capsys):
    assert cli.main(["train", "first-lora", "--out", "x", "--steps", "0"]) == 2
    assert "--steps must be a positive integer" in capsys.readouterr().err


def test_query_likelihood_recipe_ships_both_stages_and_chooses_on_dev(tiny_load, tmp_path, capsys):
    from minirank import tsarank as T
    from minirank.pointwise import QueryLikelihoodReranker

    out, record_file = tmp_path / "ql", tmp_path / "ql.json"
    argv = ["train", "query-likelihood", "--out", str(out), "--json", str(record_file), "--sft-steps", "2",
            "--eval-every", "1", "--limit-pairs", "8", "--limit-groups", "3", "--top-layers", "1", "--depth", "5",
            "--passage-tokens", "8"]
    assert cli.main(argv) == 0
    record = json.loads(record_file.read_text())
    assert record["stage1"]["steps"] == 2 and len(record["stage1"]["loss"]) == 2  # 8 pairs at batch 4, one pass
    assert [p["step"] for p in record["dev"]["curve"]] == [0, 1, 2]  # step 0: after stage one
    trained = [p for p in record["dev"]["curve"] if p["step"] > 0]
    best = max(p["ndcg@10"] for p in trained)
    assert record["chosen_step"] == min(p["step"] for p in trained if p["ndcg@10"] == best)
    assert {"bm25", "query-likelihood", "ql-two-stage", "ql-two-stage - bm25"} <= set(record["test"])
    assert record["command"].startswith("minirank train query-likelihood")
    meta = T.read_tsarank_meta(out)
    assert meta["chosen_step"] == record["chosen_step"] and (out / "cpt").is_dir() and (out / "sft").is_dir()
    model, tok, _ = T.load_tsarank(out)  # through the monkeypatched load: a fresh tiny model
    scores = QueryLikelihoodReranker(model, tok, max_passage_tokens=8).score_pairs([("a query", "a passage")])
    assert len(scores) == 1
    capsys.readouterr()
    assert cli.main(argv) == 2 and "exists" in capsys.readouterr().err  # never overwritten
    with pytest.raises(FileNotFoundError, match="two-stage"):
        T.load_tsarank(tmp_path)


def test_query_likelihood_recipe_refuses_bad_options(capsys):
    assert cli.main(["train", "query-likelihood", "--out", "x", "--sft-steps", "0"]) == 2
    assert "--sft-steps must be a positive integer" in capsys.readouterr().err
