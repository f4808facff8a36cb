"""The book quotes stored benchmarks: the tables in the lessons must be the ones the stored JSON gives.

A lesson that says a number is checked against the file the benchmark wrote (`data/bench/`), so re-running a
benchmark without updating the lesson (or the reverse) fails here.
"""
import json
from pathlib import Path

import pytest

from minirank import latency as L
from minirank import train as T
from minirank import tsarank as TS
from minirank.data import BENCH_DIR
from minirank.evaluate import format_table

ROOT = Path(__file__).resolve().parent.parent


STORED = [(T.STORED_ABLATION, "05_lora_finetuning.md", lambda result: result["rows"]),
          (T.STORED_ABLATION_UNIFORM, "05_lora_finetuning.md", lambda result: result["rows"]),
          (T.STORED_CURVE, "05_lora_finetuning.md", lambda result: result["test"]["rows"]),
          (BENCH_DIR / "finetune-measure-cpu.json", "05_lora_finetuning.md", lambda result: result["rows"]),
          (T.STORED_CURVE, "05_lora_finetuning.md", lambda result: T.queries_curve()),
          (L.STORED_CPU_BENCH, "06_latency.md", L.headline_rows),
          (TS.STORED_RECORD, "08_query_likelihood.md",
           lambda result: [{k: v for k, v in row.items() if k != "seconds"} for row in result["test"]["rows"]]),
          (TS.STORED_RECORD, "08_query_likelihood.md",
           lambda result: [{"step": p["step"], "groups seen": p["windows_seen"], "dev ndcg@10": p["ndcg@10"]}
                           for p in result["dev"]["curve"]])]


@pytest.mark.parametrize("bench, lesson, rows", STORED,
                         ids=["ablation-first", "ablation-uniform", "first-lora-curve", "finetune-measure-cpu",
                              "first-lora-queries", "latency-cpu", "ql-two-stage-test", "ql-two-stage-dev-curve"])
def test_lesson_quotes_the_stored_benchmark_table(bench, lesson, rows):
    stored = json.loads(bench.read_text(encoding="utf-8"))
    table = format_table(rows(stored), markdown=True)
    text = (ROOT / "lessons" / lesson).read_text(encoding="utf-8")
    assert table in text, f"lessons/{lesson} does not quote {bench.name}'s table; paste:\n{table}"


def test_every_lesson_and_notebook_is_in_the_table_of_contents():
    toc = (ROOT / "lessons" / "_toc.yml").read_text(encoding="utf-8")
    pages = [f"lessons/{p.stem}" for p in (ROOT / "lessons").glob("*.md")]
    pages += [f"notebooks/{p.stem}" for p in (ROOT / "notebooks").glob("*.ipynb")]
    missing = sorted(page for page in pages if f"file: {page}\n" not in toc and f"root: {page}\n" not in toc)
    assert len(pages) > 2 and not missing, f"missing from lessons/_toc.yml: {missing}"
