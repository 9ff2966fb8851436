#!/usr/bin/env bash
# Lays out the source of one distribution in DIR, for `pip wheel DIR` / `pip install DIR`:
#   edge         prunefl-edge: prunefl_common + prunefl_edge + the C core (CMake); what a Pi installs
#   coordinator  prunefl-coordinator: coordinator (prunefl-coord, prunefl-sim); installs beside prunefl-edge
# The repository's own pyproject.toml is the all-in-one development install (`pip install .`).
set -euo pipefail
usage() { echo "usage: $0 edge|coordinator DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
KIND=$1 DIR=$2
SRC=$(cd "$(dirname "$0")/.." && pwd)
case $KIND in
    edge) parts=(CMakeLists.txt core_c prunefl_common prunefl_edge) ;;
    coordinator) parts=(coordinator) ;;
    *) usage ;;
esac
rm -rf "$DIR" && mkdir -p "$DIR"
for p in "${parts[@]}" README.md; do
    cp -r "$SRC/$p" "$DIR/"
done
cp "$SRC/packaging/$KIND/pyproject.toml" "$DIR/pyproject.toml"
find "$DIR" \( -name __pycache__ -o -name '*.pyc' -o -name _lib \) -prune -exec rm -rf {} +
echo "$DIR"
