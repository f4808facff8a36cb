"""The main job: `minirank demo` and its JSON."""
from __future__ import annotations

import json

import pytest

from minirank.cli import main
from minirank.demo import run_demo


def test_demo_rows_and_json(tiny_collection, tmp_path):
    out = tmp_path / "out.json"
    result = run_demo(methods=["bm25", "dense"], collection=tiny_collection, json_path=out, echo=lambda s: None)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert written["split"] == "test" and written["model"]
    assert [r["method"] for r in written["rows"]] == ["bm25", "dense"]
    for row in written["rows"]:
        assert 0.0 <= row["ndcg@10"] <= 1.0 and 0.0 <= row["recall@20"] <= 1.0 and row["seconds"] >= 0


def test_demo_never_overwrites_results(tiny_collection, tmp_path):
    out = tmp_path / "out.json"
    out.write_text("{}")
    with pytest.raises(FileExistsError, match="never overwrites"):
        run_demo(methods=["bm25"], collection=tiny_collection, json_path=out, echo=lambda s: None)
    assert out.read_text() == "{}"


def test_demo_unknown_method(tiny_collection):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['bm26'\]"):
        run_demo(methods=["bm26"], collection=tiny_collection, echo=lambda s: None)


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["demo", "--methods", "bm26"]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_demo_refuses_impossible_depths_before_any_work(tiny_collection, capsys):
    """`--depth -3` silently reranked the top 97 and `--depth 0` printed a row of zeros (issue 12)."""
    for depth in (-3, 0):
        with pytest.raises(SystemExit):
            main(["demo", "--depth", str(depth)])
        assert "expected a positive integer" in capsys.readouterr().err
        with pytest.raises(ValueError, match="--depth must be a positive integer"):
            run_demo(methods=["bm25", "first"], depth=depth, collection=tiny_collection, echo=lambda s: None)


def test_demo_checks_the_model_before_the_first_row(tiny_collection, tmp_path, capsys):
    """A missing --model path failed only after BM25 and dense had run, as 'unknown model name' (issue 12)."""
    lines = []
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_demo(methods=["bm25", "dense", "first"], model=missing, collection=tiny_collection, echo=lines.append)
    assert lines == []  # nothing ran
    assert main(["demo", "--methods", "bm25,first", "--model", missing]) == 2
    assert f"model path {missing!r} does not exist" in capsys.readouterr().err


def test_demo_help_lists_the_methods_and_bench_help_works(capsys):
    from minirank.demo import METHODS

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = capsys.readouterr().out
    assert all(m in out.replace("\n", "").replace(" ", "") for m in METHODS)
    assert main(["bench", "--help"]) == 0 and "latency" in capsys.readouterr().out
    assert main(["bench"]) == 2 and "latency" in capsys.readouterr().err


def test_demo_pe_rank_row_is_the_shipped_folder_loaded_by_load_perank(tiny_collection, tmp_path, monkeypatch, tok):
    """The pe-rank row reranks BM25's candidates with the folder at SHIPPED_PERANK, loaded by load_perank; here a
    tiny folder written by save_perank (a tiny LLM and a hashing encoder stand in for the real ones)."""
    from test_perank import HashEncoder

    from minirank import perank as PR
    from minirank import perank_train as T
    from minirank.models import tiny_model

    encoder = HashEncoder()
    model = T.add_lora(tiny_model(len(tok), seed=3), r=2, alpha=4, target_modules=("q_proj", "v_proj"))
    folder = PR.save_perank(model, PR.new_projector(encoder, model, seed=3), tmp_path / "perank", encoder, tok,
                            "tiny", {"window": 3})
    real, asked = PR.load_perank, []

    def load_tiny(path, **kwargs):
        asked.append(path)
        return real(path, model=tiny_model(len(tok), seed=3), tokenizer=tok, encoder=encoder)

    monkeypatch.setattr(PR, "SHIPPED_PERANK", folder)
    monkeypatch.setattr(PR, "load_perank", load_tiny)
    result = run_demo(methods=["bm25", "pe-rank"], depth=4, collection=tiny_collection, echo=lambda s: None)
    assert asked == [folder]
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["bm25", "pe-rank"] and 0.0 <= rows["pe-rank"]["ndcg@10"] <= 1.0
    assert rows["pe-rank"]["windows"] >= 1  # the folder's reranker ran on BM25's candidates


def test_demo_ql_two_stage_row_is_the_shipped_folder(tiny_collection, tmp_path, monkeypatch, tok):
    """The ql-two-stage row reranks BM25's candidates with the folder at SHIPPED_TSARANK, loaded by load_tsarank
    (here a tiny folder made by the recipe's own steps: a stage-one LoRA saved, merged, a stage-two LoRA on top)."""
    from minirank import tsarank as T
    from minirank.adapters import save_lora
    from minirank.models import tiny_model

    pairs = [("Bread rises.", "The yeast in the dough makes gas, so the loaf grows in the oven.")]
    base = tiny_model(len(tok), seed=6, num_hidden_layers=2)
    stage1 = T.continual_pretraining(base, tok, pairs, steps=1, batch_size=1, top_layers=1, lora_r=2, merge=False)
    cpt = save_lora(stage1.model, tmp_path / "cpt", "tiny", "test")
    group = T.Group("bread", pairs[0][1], ("Stock markets rose.",))
    stage2 = T.supervised_fine_tuning(stage1.model.merge_and_unload(), tok, [group], steps=1, top_layers=1, lora_r=2)
    folder = T.save_tsarank(cpt, stage2.model, tmp_path / "ql", "tiny", {"passage_tokens": 8})
    real, asked = T.load_tsarank, []

    def load_tiny(path, **kwargs):
        asked.append(path)
        return real(path, model=tiny_model(len(tok), seed=6, num_hidden_layers=2), tokenizer=tok)

    monkeypatch.setattr(T, "SHIPPED_TSARANK", folder)
    monkeypatch.setattr(T, "load_tsarank", load_tiny)
    result = run_demo(methods=["bm25", "ql-two-stage"], depth=4, collection=tiny_collection, echo=lambda s: None)
    assert asked == [folder]
    rows = {r["method"]: r for r in result["rows"]}
    assert list(rows) == ["bm25", "ql-two-stage"] and 0.0 <= rows["ql-two-stage"]["ndcg@10"] <= 1.0


def test_demo_default_rows_leave_out_only_the_optional_ones():
    from minirank import demo

    assert demo.default_methods() == [m for m in demo.METHODS if m not in demo.OPTIONAL]
    assert "query-likelihood" not in demo.default_methods() and "query-likelihood" in demo.METHODS
    assert "listwise-gen" not in demo.default_methods() and "first" in demo.default_methods()
    assert {"ql-two-stage", "feedback", "pe-rank", "first-lora"} <= set(demo.default_methods())


def test_demo_says_under_the_table_when_a_trained_row_does_not_beat_bm25():
    from minirank.demo import trained_row_notes

    rows = [{"method": "bm25"}, {"method": "first-lora", "vs bm25": "+0.010", "p": 0.39},
            {"method": "pe-rank", "vs bm25": "-0.417", "p": 0.0001}, {"method": "ql-two-stage", "vs bm25": "+0.099", "p": 0.0001},
            {"method": "first", "vs bm25": "-0.054", "p": 0.003}]
    notes = trained_row_notes(rows)
    assert len(notes) == 2 and "first-lora" in notes[0] and "not shown to beat" in notes[0] and "5.7" in notes[0]
    assert "pe-rank" in notes[1] and "is below" in notes[1]
