"""The benchmarks (minirank.bench): programs that run chapters 5 and 6. Checked on tiny random-weight models
for the structure of what they print and store, never for timings; and the command line that starts them."""
import json

import pytest

from minirank import cli
from minirank.bench import finetune as BF
from minirank import latency as L
from minirank.bench import latency as BL
from minirank.latency import answer_tokens

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- minirank bench latency

def test_bench_json_has_the_required_keys_on_a_tiny_model(tmp_path, tok):
    path = tmp_path / "latency.json"
    argv = ["--config", "tiny", "--device", "cpu", "--queries", "1", "--sizes", "2,3,4", "--repeats", "2",
            "--batch", "1,2", "--passage-tokens", "8", "--bandwidth-gbs", "10", "--json", str(path)]
    assert cli.main(["bench", "latency", *argv]) == 0
    result = json.loads(path.read_text())
    for key in ("first_over_prefill", "speedup_first_vs_generation", "cost_model_max_rel_error",
                "speedup_first_vs_default_generate", "speedup_first_vs_static_generate", "machine", "model",
                "dtype", "batch", "windows", "per_query", "decode", "cost_model", "throughput"):
        assert key in result, key
    assert result["cost_model"]["held_out_sizes"] == [3] and result["cost_model"]["fitted_on_sizes"] == [2, 4]
    assert result["cost_model_max_rel_error"] >= 0 and result["dtype"] == "float32" and result["batch"] == 1
    assert result["machine"]["device"] == "cpu" and result["machine"]["threads"] >= 1
    assert result["decode"]["bandwidth_bytes_per_s"] == 10e9 and not result["decode"]["bandwidth_measured"]
    assert sorted({w["m"] for w in result["windows"]}) == [2, 3, 4]
    for w in result["windows"]:
        assert w["tokens_generated"] == answer_tokens(tok, w["m"])
        assert w["tokens_processed"] > 0
        assert set(w["seconds"]) == set(BL.METHODS)
        assert all(w["seconds"][m]["n"] == 2 for m in BL.METHODS)
    assert {(r["batch"], r["method"]) for r in result["throughput"]} >= {(2, "first"), (2, "generate_static"),
                                                                          (2, "perank")}
    assert result["command"].startswith("minirank bench latency")
    # query likelihood (chapter 8) on the same windows' candidates, paired with FIRST round by round
    assert result["query_likelihood_over_first"] > 0
    assert all(w["ql_tokens_processed"] > w["m"] for w in result["windows"])
    # PE-Rank on the same windows, with a random projector on the random-weight model: exact token counts
    from minirank import perank as PR

    ptok = PR.with_perank_tokens(tok)
    assert result["perank_projector"] == BL.PERANK_PROJECTOR and "random weights" in result["perank_projector"]
    for w in result["windows"]:
        assert w["perank_tokens_generated"] == w["m"]
        pieces = PR.ranking_prompt(course_test_query(w["qid"]), w["m"], ptok).split(PR.PLACEHOLDER)
        assert w["perank_tokens_processed"] == sum(len(ptok.encode(p, add_special_tokens=False)) for p in pieces) + w["m"]
    headline = [w for w in result["windows"] if w["start"] == 0 and w["m"] == 4]  # depth = window = 4: one window
    assert result["perank_processed_ratio"] == pytest.approx(
        sum(w["perank_tokens_processed"] for w in headline) / sum(w["tokens_processed"] for w in headline))
    assert set(result["perank_processed_ratio_by_size"]) == {"2", "3", "4"}
    assert result["speedup_perank_vs_generation"] > 0 and result["perank_over_first"] > 0
    assert result["per_query"][0]["perank_tokens_generated"] == 4
    rows = {r["quantity"]: r for r in L.headline_rows(result)}
    assert rows["PE-Rank / text listwise processed tokens (same windows, text cut to 8 tokens a passage)"]["measured"] == \
        f"{result['perank_processed_ratio']:.3f}"


def course_test_query(qid):
    from minirank.data import load_course

    return load_course("test").queries[qid]


def test_bench_json_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "latency.json"
    path.write_text("keep me")
    assert cli.main(["bench", "latency", "--config", "tiny", "--json", str(path)]) == 2
    assert path.read_text() == "keep me"
    assert "--force" in capsys.readouterr().err


# ---------------------------------------------------------------- minirank bench finetune

def test_bench_finetune_rejects_unknown_objectives_before_any_work():
    assert cli.main(["bench", "finetune", "--objectives", "joint,nope"]) == 2


def test_bench_finetune_measures_a_random_weight_shape_and_refuses_to_evaluate_one(tmp_path, capsys):
    assert cli.main(["bench", "finetune", "--config", "tiny"]) == 2  # random weights cannot be evaluated
    assert "use it with --measure" in capsys.readouterr().err
    out = tmp_path / "measure.json"
    assert cli.main(["bench", "finetune", "--measure", "--config", "tiny", "--batch-sizes", "1,2",
                     "--json", str(out)]) == 0
    stored = json.loads(out.read_text())
    assert stored["config"]["model"] == "random weights, shape tiny"
    assert [r["batch"] for r in stored["rows"]] == [1, 2] and all(r["tokens/s"] > 0 for r in stored["rows"])
    assert stored["machine"]["device"] == "cpu" and stored["machine"]["dtype"] == "float32"


def test_ablation_rows_report_terms_intervals_and_exact_p_values():
    qids = [f"q{i}" for i in range(8)]
    zero = {q: 0.1 * i for i, q in enumerate(qids)}
    joint = {q: v + 0.2 + 0.01 * (i % 3) for i, (q, v) in enumerate(zero.items())}
    other = {q: v + (0.01 if i % 2 else -0.01) for i, (q, v) in enumerate(joint.items())}
    rows = BF.ablation_rows(zero, zero, {"joint": {0: joint, 1: joint}, "listnet": {0: other, 1: other},
                                         "lm-only": {0: joint}}, protocol="first", oracle={q: 1.0 for q in qids})
    assert [list(r) for r in rows] == [list(BF.ABLATION_COLUMNS)] * len(rows)
    by = {r["method"]: r for r in rows}
    assert by["bm25 (no reranking)"]["oracle"] == 1.0 and by["joint"]["oracle"] == ""
    assert (by["listnet"]["loss"], by["listnet"]["scale"], by["listnet"]["targets"]) == ("listnet_loss", "0.1",
                                                                                        "own sorted logits")
    assert by["lm-only"]["loss"] == "(LM only)" and by["lm-only"]["seeds"] == 1
    assert by["joint"]["p vs zero-shot"] == pytest.approx(2 / 2**8)  # exact: only all-plus and all-minus reach it
    assert by["listnet"]["vs joint"] == "+0.000" and by["listnet"]["p vs joint"] == 1.0
    assert by["listnet"]["95% CI"] == "[-0.009, +0.009]"


@pytest.mark.parametrize("which", ["first", "uniform"])
def test_stored_ablation_table_is_what_the_code_makes_of_its_per_query_scores(monkeypatch, which):
    """The stored rows (quoted by lesson 5.8, see test_book) recomputed from the stored per-query nDCG@10, for both
    stored protocols. The exact p-values enumerate 2^20 sign patterns (minutes); here they are Monte Carlo
    estimates, compared within 0.03."""
    from minirank import evaluate as E
    from minirank.train import STORED_ABLATION, STORED_ABLATION_UNIFORM

    exact = E.paired_difference
    monkeypatch.setattr(E, "paired_difference", lambda a, b: exact(a, b, exact_up_to=0, resamples=4000))
    stored = json.loads((STORED_ABLATION if which == "first" else STORED_ABLATION_UNIFORM).read_text(encoding="utf-8"))
    if which == "uniform":
        assert stored["protocol"] == "uniform" and "protocol" not in stored["config"]  # run before protocols existed
    else:
        assert stored["config"]["protocol"] == "first" and stored["seeds"] == [0, 1, 2]
    again = BF.stored_ablation_rows(stored)
    assert [r["method"] for r in again] == [r["method"] for r in stored["rows"]]
    for mine, kept in zip(again, stored["rows"]):
        for column, value in kept.items():
            if column.startswith("p ") and value != "":
                assert mine[column] == pytest.approx(value, abs=0.03), (kept["method"], column)
            elif isinstance(value, float):
                assert mine[column] == pytest.approx(value, rel=1e-12), (kept["method"], column)
            else:
                assert mine[column] == value, (kept["method"], column)
    assert stored["rows"][0]["oracle"] == pytest.approx(sum(stored["per_query"]["oracle"].values()) / 20)
    assert [r["method"] for r in stored["rows"][:2]] == ["bm25 (no reranking)", "first zero-shot"]  # notebook 05


def test_restat_needs_an_output_and_never_overwrites_without_force(tmp_path, capsys):
    from minirank.train import STORED_ABLATION

    assert cli.main(["bench", "finetune", "--restat", str(STORED_ABLATION)]) == 2
    assert "--restat needs --json" in capsys.readouterr().err
    out = tmp_path / "kept.json"
    out.write_text("keep me")
    assert cli.main(["bench", "finetune", "--restat", str(STORED_ABLATION), "--json", str(out)]) == 2
    assert out.read_text() == "keep me"


# ---------------------------------------------------------------- minirank bench, the list

def test_bench_help_lists_the_benchmarks_and_how_to_get_their_options(capsys):
    assert cli.main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.BENCHMARKS:
        assert f"  {name} " in out
    assert "minirank bench NAME --help" in out
    assert cli.main(["bench"]) == 2  # no benchmark named: the same list, as an error
    assert "minirank bench NAME --help" in capsys.readouterr().err
    for name in cli.BENCHMARKS:
        with pytest.raises(SystemExit) as done:
            cli.main(["bench", name, "--help"])
        assert done.value.code == 0 and f"usage: minirank bench {name}" in capsys.readouterr().out
