"""Recipes: the programs that made what ``data/adapters`` ships, one per artefact.

``minirank train NAME [options]`` runs ``minirank.recipes.NAME.train_main`` (the table is
:data:`minirank.cli.RECIPES`). A recipe trains with a chapter's code on the course collection's train split,
chooses its step on the dev split, and writes the adapter with a provenance file (budget, data, seed,
versions, machine) into a folder that must not exist yet. Like the benchmarks, recipes import the chapters;
the chapters never import them.
"""
