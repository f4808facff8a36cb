"""Benchmarks: programs that run the chapters and print (and store) what they measure.

``minirank bench NAME [options]`` runs ``minirank.bench.NAME.bench_main``: :mod:`~minirank.bench.latency`
(chapter 6: FIRST against generation) and :mod:`~minirank.bench.finetune` (chapter 5: the ablation of
FIRST's training objective, and training speed). They import the chapters; the chapters never import
them, so a later chapter can import an earlier one without dragging in a command line.
"""
