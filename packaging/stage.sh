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
# The version changes with the code: the static one plus what git describe says of this checkout (a dirty tree
# adds a hash of its diff, so two different uncommitted builds differ too); PRUNEFL_VERSION overrides; outside
# a git checkout the static one stays. It goes into the wheel's metadata and prunefl_common/_version.py.
base=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$DIR/pyproject.toml")
version=${PRUNEFL_VERSION:-}
if [ -z "$version" ] && desc=$(git -C "$SRC" describe --always --dirty 2>/dev/null) && [ -n "$desc" ]; then
    case $desc in
        *-dirty) desc="$desc.$(git -C "$SRC" diff HEAD 2>/dev/null | sha256sum | cut -c1-8)" ;;
    esac
    label=$(printf '%s' "$desc" | tr -cs 'A-Za-z0-9' '.' | LC_ALL=C tr '[:upper:]' '[:lower:]' | sed 's/^\.*//; s/\.*$//')
    version="$base+$label"
fi
version=${version:-$base}
sed -i "s/^version = \".*\"$/version = \"$version\"/" "$DIR/pyproject.toml"
if [ -d "$DIR/prunefl_common" ]; then
    printf '# written by packaging/stage.sh: the version of this build\nVERSION = "%s"\n' "$version" \
        >"$DIR/prunefl_common/_version.py"
fi
find "$DIR" \( -name __pycache__ -o -name '*.pyc' -o -name _lib \) -prune -exec rm -rf {} +
echo "$DIR"
