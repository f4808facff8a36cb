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
    with pytest.raises(FileExistsError, match="does not overwrite"):
        run_demo(methods=["bm25"], collection=tiny_collection, json_path=out, echo=lambda s: None)
    assert out.read_text() == "{}"


def test_demo_unknown_method(tiny_collection):
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['bm26'\]"):
        run_demo(methods=["bm26"], collection=tiny_collection, echo=lambda s: None)


def test_cli_reports_errors_without_traceback(capsys):
    assert main(["demo", "--methods", "bm26"]) == 2
    assert "unknown method" in capsys.readouterr().err
