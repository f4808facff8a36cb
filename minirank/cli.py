"""The ``minirank`` command (also ``python -m minirank``)."""
from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys

#: `minirank bench NAME ...` hands the rest of the command line to NAME's module (each owns its options).
BENCHMARKS = {"latency": "minirank.bench.latency", "finetune": "minirank.bench.finetune"}


def benchmark_list() -> str:
    """What ``minirank bench --help`` prints: each benchmark with the first line of its module's docstring
    (read from the source, so listing them imports neither torch nor the chapters)."""
    lines = ["usage: minirank bench NAME [options]", "", "benchmarks:"]
    for name, module in sorted(BENCHMARKS.items()):
        spec = importlib.util.find_spec(module)
        with open(spec.origin, encoding="utf-8") as source:
            doc = ast.get_docstring(ast.parse(source.read())) or ""
        summary = doc.split("\n\n")[0].replace("\n", " ").split(": ", 1)[-1]
        lines.append(f"  {name:<10} {summary}")
    lines += ["", "Each benchmark has its own options: minirank bench NAME --help"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="minirank", description="LLM reranking, built to be read.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="first-stage retrieval and every reranker on the course collection")
    demo.add_argument("--split", default="test", choices=["train", "dev", "test"])
    demo.add_argument("--methods", help="comma-separated subset of methods (default: all available)")
    demo.add_argument("--model", default=None, help="LLM for the rerankers: the default, a local path or a HF id")
    demo.add_argument("--depth", type=int, default=20, help="how many BM25 candidates the rerankers rerank")
    demo.add_argument("--json", dest="json_path", help="also write the numbers to this JSON file")
    demo.add_argument("--force", action="store_true", help="overwrite an existing --json file")

    bench = sub.add_parser("bench", help=f"benchmarks ({', '.join(sorted(BENCHMARKS))}): `minirank bench --help`",
                           add_help=False)
    bench.add_argument("-h", "--help", dest="list_benchmarks", action="store_true", help="list the benchmarks")
    bench.add_argument("which", nargs="?", choices=sorted(BENCHMARKS), help="which benchmark")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="the benchmark's own options")

    setup = sub.add_parser("setup", help="put the default model in place (convert once, cache) and say where")
    setup.add_argument("--model", default=None)

    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from minirank.demo import run_demo

            methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
            run_demo(args.split, methods, args.model, args.depth, args.json_path, args.force)
        elif args.command == "bench":
            if args.which is None:  # `minirank bench [--help]`: the list (each benchmark owns its options)
                print(benchmark_list(), file=sys.stdout if args.list_benchmarks else sys.stderr)
                return 0 if args.list_benchmarks else 2
            rest = ["--help"] if args.list_benchmarks else args.rest  # `minirank bench -h NAME`: NAME's options
            return importlib.import_module(BENCHMARKS[args.which]).bench_main(rest)
        elif args.command == "setup":
            from minirank import models
            from minirank.device import describe

            print(f"device: {describe()}")
            print(f"cache:  {models.cache_dir()}  (set MINIRANK_CACHE to move it)")
            print(f"model:  {models.resolve(args.model)}")
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ConnectionError, OSError) as err:
        print(f"minirank {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
