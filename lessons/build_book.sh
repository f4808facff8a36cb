#!/usr/bin/env bash
# Build the book's website into _build/html: the one documented build command.
#   bash lessons/build_book.sh           (needs: pip install -e ".[book]", and npm)
# The site loads nothing from the network. Sphinx would load MathJax from a CDN on every page with math,
# so this script copies MathJax 3 from the npm package `mathjax` into lessons/_static/mathjax/ (not
# committed) and book.yml points `mathjax_path` at it. npm fetches the package once; after that it comes
# from npm's cache (--prefer-offline), and a copy already in lessons/_static/mathjax is reused, so later
# builds need no network at all.
set -euo pipefail
cd "$(dirname "$0")/.."
MATHJAX_VERSION=3.2.2
DEST=lessons/_static/mathjax
if [ "$(cat "$DEST/VERSION" 2>/dev/null)" != "$MATHJAX_VERSION" ]; then
  command -v npm >/dev/null || { echo "build_book.sh: npm is needed once to fetch MathJax $MATHJAX_VERSION (apt-get install npm)" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  npm install --prefix "$work" --no-save --no-audit --no-fund --prefer-offline --loglevel=error "mathjax@$MATHJAX_VERSION"
  rm -rf "$DEST"
  mkdir -p "$(dirname "$DEST")"
  cp -r "$work/node_modules/mathjax/es5" "$DEST"
  cp "$work/node_modules/mathjax/LICENSE" "$DEST/LICENSE"
  echo "$MATHJAX_VERSION" > "$DEST/VERSION"
fi
jupyter-book build . --config book.yml --toc lessons/_toc.yml "$@"
