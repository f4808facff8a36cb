#!/usr/bin/env bash
# Build the book's website into _build/html: the one documented build command, run from anywhere:
#   bash lessons/build_book.sh            (extra arguments go to `jupyter-book build`, e.g. --all)
#
# The book toolchain lives in its own environment, .venv-book/ (not committed): Jupyter Book 1.x needs
# markdown-it-py 3 while the course's pinned environment (.ci/constraints.txt) has 4, so the two cannot
# share one. The first run creates it and installs the `book` extra of pyproject.toml into it (the pins
# live there, in one place); set MINIRANK_BOOK_PYTHON to use another environment's python instead.
#
# The site loads nothing from the network. Sphinx would load MathJax from a CDN on every page with math,
# so this script copies MathJax 3 from the npm package `mathjax` into lessons/_static/mathjax/ (not
# committed) and book.yml points `mathjax_path` at it. Only the first run needs PyPI and npm; later
# builds (the environment and the MathJax copy are reused) need no network at all.
set -euo pipefail
cd "$(dirname "$0")/.."
MATHJAX_VERSION=3.2.2
DEST=lessons/_static/mathjax
PY=${MINIRANK_BOOK_PYTHON:-.venv-book/bin/python}

if [ -z "${MINIRANK_BOOK_PYTHON:-}" ] && [ ! -x .venv-book/bin/jupyter-book ]; then
  echo "build_book.sh: creating .venv-book with the book toolchain (pyproject.toml, extra 'book')"
  python3 -m venv .venv-book
  requirements=$(mktemp)
  python3 - "$requirements" <<'PY'
import sys, tomllib
book = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["book"]
open(sys.argv[1], "w").write("\n".join(book) + "\n")
PY
  .venv-book/bin/python -m pip install -q --upgrade pip
  .venv-book/bin/python -m pip install -q -r "$requirements"
  rm -f "$requirements"
fi

if [ "$(cat "$DEST/VERSION" 2>/dev/null)" != "$MATHJAX_VERSION" ]; then
  command -v npm >/dev/null || { echo "build_book.sh: npm is needed once, to fetch MathJax $MATHJAX_VERSION (apt-get install npm)" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  npm install --prefix "$work" --no-save --no-audit --no-fund --prefer-offline --loglevel=error "mathjax@$MATHJAX_VERSION"
  rm -rf "$DEST"
  cp -r "$work/node_modules/mathjax/es5" "$DEST"
  cp "$work/node_modules/mathjax/LICENSE" "$DEST/LICENSE"
  echo "$MATHJAX_VERSION" > "$DEST/VERSION"
fi

"$(dirname "$PY")/jupyter-book" build . --config book.yml --toc lessons/_toc.yml "$@"
