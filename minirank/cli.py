"""The ``minirank`` command (also ``python -m minirank``)."""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys

#: `minirank bench NAME ...` hands the rest of the command line to NAME's module (each owns its options).
BENCHMARKS = {"latency": "minirank.bench.latency", "finetune": "minirank.bench.finetune"}

#: `minirank train NAME ...`: the recipes that made what data/adapters ships (each module owns its options).
RECIPES: dict[str, str] = {"first-lora": "minirank.recipes.first_lora", "pe-rank": "minirank.recipes.perank",
                           "query-likelihood": "minirank.recipes.query_likelihood"}

#: The two program groups that hand their options on: command -> (table, what one entry is called, its entry point).
PROGRAMS = {"bench": (BENCHMARKS, "benchmark", "bench_main"), "train": (RECIPES, "recipe", "train_main")}


def program_list(command: str = "bench") -> str:
    """What ``minirank bench --help`` (or ``train --help``) prints: each entry with the first line of its
    module's docstring (read from the source, so listing them imports neither torch nor the chapters)."""
    table, kind, _ = PROGRAMS[command]
    lines = [f"usage: minirank {command} NAME [options]", "", f"{kind}s:"]
    for name, module in sorted(table.items()):
        spec = importlib.util.find_spec(module)
        with open(spec.origin, encoding="utf-8") as source:
            doc = ast.get_docstring(ast.parse(source.read())) or ""
        summary = doc.split("\n\n")[0].replace("\n", " ").split(": ", 1)[-1]
        lines.append(f"  {name:<18} {summary}")
    lines += ["", f"Each {kind} has its own options: minirank {command} NAME --help"]
    return "\n".join(lines)


def benchmark_list() -> str:
    return program_list("bench")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    from minirank.demo import METHODS, OPTIONAL, RERANKERS

    parser = argparse.ArgumentParser(prog="minirank", description="LLM reranking, built to be read.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="first-stage retrieval and the rerankers on the course collection",
                          description="First-stage retrieval and the chapters' rerankers on the course collection, "
                                      "compared in one table (two slow baselines run only when --methods names them).")
    demo.add_argument("--split", default="test", choices=["train", "dev", "test"])
    demo.add_argument("--methods", help=f"comma-separated subset of: {','.join(METHODS)} (default: all but "
                                        f"{','.join(OPTIONAL)})")
    demo.add_argument("--model", default=None, help="LLM for the rerankers: the default, a local path or a HF id")
    demo.add_argument("--depth", type=_positive_int, default=20, help="how many BM25 candidates the rerankers rerank")
    demo.add_argument("--json", dest="json_path", help="also write the numbers to this JSON file")
    demo.add_argument("--force", action="store_true", help="overwrite an existing --json file")

    rerank = sub.add_parser("rerank", help="rerank a TREC run you already have (TREC run in, TREC run out)",
                            description="Rerank the candidates of a TREC run file with one of the book's "
                                        "rerankers and write the result as a TREC run.")
    rerank.add_argument("--run", required=True, help="candidates: a TREC run file 'qid Q0 pid rank score tag'")
    rerank.add_argument("--queries", required=True, help="queries TSV 'qid<TAB>text'")
    rerank.add_argument("--passages", required=True, help="passages TSV 'pid<TAB>text'")
    rerank.add_argument("--method", required=True, choices=list(RERANKERS), help="which reranker")
    rerank.add_argument("--out", required=True, help="where to write the reranked run (never overwritten)")
    rerank.add_argument("--depth", type=_positive_int, default=None,
                        help="rerank only each query's top DEPTH candidates (default: all of them)")
    rerank.add_argument("--model", default=None, help="LLM: the default, a local path or a HF id")

    bench = sub.add_parser("bench", help="benchmarks: `minirank bench latency|finetune --help`", add_help=False)
    bench.add_argument("which", nargs="?", help=f"which benchmark: {', '.join(sorted(BENCHMARKS))}")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")

    train = sub.add_parser("train", help="recipes that make the shipped adapters: `minirank train --help`",
                           add_help=False)
    train.add_argument("which", nargs="?", help="which recipe (minirank train --help lists them)")
    train.add_argument("rest", nargs=argparse.REMAINDER, help="the recipe's own options")

    setup = sub.add_parser("setup", help="put the default model in place (convert once, cache) and say where")
    setup.add_argument("--model", default=None)
    return parser


def _program(command: str, which: str | None, rest: list[str]) -> int:
    table, kind, entry = PROGRAMS[command]
    if which in (None, "-h", "--help"):
        print(program_list(command))
        return 0
    if which not in table:
        raise ValueError(f"unknown {kind} {which!r}: expected one of {sorted(table)}")
    return getattr(importlib.import_module(table[which]), entry)(rest)


def _bench(which: str | None, rest: list[str]) -> int:
    return _program("bench", which, rest)


def rerank_files(run_path: str, queries_path: str, passages_path: str, method: str, out: str,
                 depth: int | None = None, model: str | None = None, progress: bool = True) -> dict:
    """``minirank rerank``: rerank the candidates of a TREC run file and write a TREC run; returns the counters.

    Every check comes before the model is loaded: the files exist and parse, ``out`` does not exist,
    every query and candidate id of the run is among the queries and passages (KeyError naming it).
    """
    from minirank import data, retrieval
    from minirank.demo import RERANKERS, Context
    from minirank.models import check_available
    from minirank.records import refuse_existing
    from minirank.rerank import candidate_orders

    refuse_existing(out, "--out run file", hint="remove it yourself")
    if method not in RERANKERS:
        raise ValueError(f"unknown method {method!r}: expected one of {list(RERANKERS)}")
    candidates = retrieval.read_run(run_path)
    queries = data.read_tsv(queries_path, "queries 'qid<TAB>text'")
    passages = data.read_tsv(passages_path, "passages 'pid<TAB>text'")
    candidate_orders(queries, candidates, passages)  # unknown ids fail here, before the model loads
    check_available(model)
    reranker = RERANKERS[method](Context(None, model))
    run = reranker.rerank(queries, candidates, passages, k=depth, progress=progress)
    retrieval.write_run(run, out, tag=method.replace(" ", "_"))
    return reranker.stats


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for command in PROGRAMS:
        if argv[:1] == [command] and argv[1:2] in (["-h"], ["--help"]):
            return _program(command, None, [])  # the programs' own parsers hold their options; list them
        if argv == [command]:  # no program named: the same list, as an error
            print(program_list(command), file=sys.stderr)
            return 2
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from minirank.demo import run_demo

            methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
            run_demo(args.split, methods, args.model, args.depth, args.json_path, args.force)
        elif args.command == "rerank":
            stats = rerank_files(args.run, args.queries, args.passages, args.method, args.out, args.depth, args.model)
            print(f"reranked {stats['queries']} queries ({stats['windows']} windows, {stats['seconds']:.1f} s, "
                  f"{stats['repaired_windows']} repaired answers) -> {args.out}")
        elif args.command in PROGRAMS:
            return _program(args.command, args.which, args.rest)
        elif args.command == "setup":
            from minirank import models
            from minirank.device import describe

            print(f"device: {describe()}")
            print(f"cache:  {models.cache_dir()}  (set MINIRANK_CACHE to move it)")
            print(f"model:  {models.resolve(args.model)}")
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ConnectionError, OSError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"minirank {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
