"""The ``minirank`` command (also ``python -m minirank``)."""
from __future__ import annotations

import argparse
import importlib
import sys

#: `minirank bench NAME ...` hands the rest of the command line to NAME's module (each owns its options).
BENCHMARKS = {"latency": "minirank.latency", "finetune": "minirank.train"}


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

    bench = sub.add_parser("bench", help="benchmarks: `minirank bench latency|finetune --help`", add_help=False)
    bench.add_argument("which", choices=sorted(BENCHMARKS), help="which benchmark")
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
            return importlib.import_module(BENCHMARKS[args.which]).bench_main(args.rest)
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
