#!/usr/bin/env bash
# Cross-build, on a Debian/Ubuntu x86-64 machine, what a Raspberry Pi installs:
#   DIST/<arch>/prunefl_edge-<version>-py3-none-linux_<isa>.whl   the package with the C core built for the Pi's ISA
#                                                                  (one wheel for every Python 3: cffi ABI mode)
#   DIST/<arch>/deps/*.whl                                          with --deps: its dependencies for that platform,
#                                                                  so a Pi without internet installs offline
# and with --test, the C tests cross-built and run under qemu. On the Pi:
#   sudo firmware_scripts/install.sh --wheel prunefl_edge-*.whl [--wheels deps/] --edge-id ... (docs/DEPLOY.md)
set -euo pipefail

PROG=$(basename "$0")
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
E_USAGE=2 E_ENV=3 E_STEP=4

usage() {
    cat <<EOF
Usage: $PROG [--arch aarch64|armhf|all] [--dist DIR] [--build-dir DIR] [--deps] [--test] [--python PY]

Cross-builds the prunefl-edge wheel for Raspberry Pi OS on this machine (no Pi needed).
  --arch A      aarch64: 64-bit Raspberry Pi OS (Pi 3, 4, 5, Zero 2 W), NEON kernels; armhf: 32-bit (ARMv7,
                Pi 2 v1.2 and later), portable C kernels (isa portable-c); all: both (default aarch64)
  --dist DIR    output directory (default $SRC/dist)
  --build-dir DIR  where the staged sources and build trees go (default $SRC/build; a read-only checkout: a new
                directory under \$TMPDIR, said at start); the checkout itself is only read
  --deps        also download the dependencies' wheels for the target (CPython 3.11, Raspberry Pi OS 12), from
                the package index; aarch64 only (32-bit wheels come from piwheels on the Pi itself)
  --test        also cross-build the C tests and run them under qemu (ctest)
  --python PY   the Python that runs pip (default: $SRC/.venv/bin/python if present, else python3)

Needs (Debian packages): gcc-aarch64-linux-gnu / gcc-arm-linux-gnueabihf, cmake, and for --test qemu-user.
Exit status: 0 ok, $E_USAGE usage error, $E_ENV a tool is missing, $E_STEP a build step failed.
EOF
}

die() { local code=$1; shift; echo "$PROG: error: $*" >&2; exit "$code"; }
note() { echo "$PROG: $*"; }

ARCHES=(aarch64) DIST=$SRC/dist DEPS=0 TEST=0 PY='' BUILD=''
while [ $# -gt 0 ]; do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --deps) DEPS=1 ;;
        --test) TEST=1 ;;
        --arch|--dist|--python|--build-dir)
            [ $# -ge 2 ] || die "$E_USAGE" "$1 needs a value"
            case $1 in
                --arch) case $2 in
                            aarch64|armhf) ARCHES=("$2") ;;
                            all) ARCHES=(aarch64 armhf) ;;
                            *) die "$E_USAGE" "--arch $2: one of aarch64, armhf, all" ;;
                        esac ;;
                --dist) DIST=$2 ;;
                --build-dir) BUILD=$2 ;;
                --python) PY=$2 ;;
            esac
            shift ;;
        *) die "$E_USAGE" "unknown option '$1' (see --help)" ;;
    esac
    shift
done
if [ -z "$PY" ]; then
    if [ -x "$SRC/.venv/bin/python" ]; then PY=$SRC/.venv/bin/python; else PY=python3; fi
fi
command -v "$PY" >/dev/null || die "$E_ENV" "no Python at '$PY' (give --python)"
command -v cmake >/dev/null || die "$E_ENV" "cmake is missing: sudo apt-get install cmake"
if [ -z "$BUILD" ]; then
    if [ -w "$SRC" ] && { [ ! -e "$SRC/build" ] || [ -w "$SRC/build" ]; }; then
        BUILD=$SRC/build
    else
        BUILD=$(mktemp -d "${TMPDIR:-/tmp}/prunefl-build.XXXXXX")
        note "$SRC is read-only: building in $BUILD (--build-dir to choose)"
    fi
fi
mkdir -p "$BUILD" || die "$E_ENV" "cannot create the build directory $BUILD (give --build-dir)"
BUILD=$(cd "$BUILD" && pwd)
mkdir -p "$DIST" 2>/dev/null || die "$E_ENV" "cannot create $DIST (a read-only checkout? give --dist DIR)"
DIST=$(cd "$DIST" && pwd)

for arch in "${ARCHES[@]}"; do
    case $arch in
        aarch64) triple=aarch64-linux-gnu platform=linux-aarch64 tag=linux_aarch64 qemu=qemu-aarch64
                 elf="ARM aarch64" pkg=gcc-aarch64-linux-gnu ;;
        armhf)   triple=arm-linux-gnueabihf platform=linux-armv7l tag=linux_armv7l qemu=qemu-arm
                 elf="ARM, EABI5" pkg=gcc-arm-linux-gnueabihf ;;
    esac
    command -v "$triple-gcc" >/dev/null || die "$E_ENV" "$triple-gcc is missing: sudo apt-get install $pkg"
    toolchain=$HERE/toolchains/$([ "$arch" = aarch64 ] && echo aarch64-linux-gnu || echo armhf-linux-gnueabihf).cmake
    out=$DIST/$arch
    # only this build's earlier wheels go: deps/ (the offline dependency set, perhaps downloaded elsewhere) stays
    mkdir -p "$out"
    find "$out" -maxdepth 1 -name 'prunefl_edge-*.whl' -delete
    case $arch in
        aarch64) kernels="NEON kernels (isa aarch64-neon)" ;;
        armhf) kernels="portable C kernels (isa portable-c: the NEON kernels are aarch64 only)" ;;
    esac
    note "$arch: building the wheel (C core cross-compiled with $triple-gcc, $kernels)"
    # sysconfig.get_platform() follows _PYTHON_HOST_PLATFORM, and scikit-build-core tags the wheel with it
    # the device distribution only (prunefl_common + prunefl_edge + the C core): no coordinator on a Pi
    staged=$("$SRC/packaging/stage.sh" edge "$BUILD/stage-edge-$arch") || die "$E_STEP" "$arch: staging failed"
    _PYTHON_HOST_PLATFORM=$platform "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$out" "$staged" \
        -C "cmake.args=-DCMAKE_TOOLCHAIN_FILE=$toolchain" -C cmake.define.PF_NATIVE=OFF \
        -C cmake.define.PF_USE_BLAS=OFF -C "build-dir=$BUILD/wheel-$arch" \
        || die "$E_STEP" "$arch: pip wheel failed (output above)"
    whl=$(find "$out" -maxdepth 1 -name "prunefl_edge-*-py3-none-$tag.whl" | head -n1)
    [ -n "$whl" ] || die "$E_STEP" "$arch: no wheel tagged $tag in $out: $(find "$out" -maxdepth 1 -name '*.whl')"
    # what is inside must be the Pi's machine code, not this machine's
    got=$("$PY" - "$whl" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    head = z.read("prunefl_edge/_lib/libprunefl.so")[:20]
    z.getinfo("prunefl_edge/_lib/include/prunefl/prunefl.h")
print({183: "ARM aarch64", 40: "ARM, EABI5"}.get(int.from_bytes(head[18:20], "little"), "other"))
EOF
    ) || die "$E_STEP" "$arch: the wheel lacks the library or its header"
    [ "$got" = "$elf" ] || die "$E_STEP" "$arch: the wheel's libprunefl.so is $got, not $elf"
    note "$arch: $whl"
    if [ "$DEPS" = 1 ]; then
        if [ "$arch" = aarch64 ]; then
            note "$arch: downloading the dependencies' wheels for CPython 3.11 on manylinux aarch64"
            # into a new directory, then swapped in: a failed download leaves the previous set whole
            rm -rf "$out/deps.new"
            "$PY" -m pip download --quiet --dest "$out/deps.new" --only-binary=:all: --python-version 3.11 \
                --implementation cp --platform manylinux2014_aarch64 --platform manylinux_2_28_aarch64 \
                --platform linux_aarch64 "$whl" \
                || die "$E_STEP" "$arch: pip download failed (is the package index reachable?); $out/deps is unchanged"
            rm -f "$out/deps.new/$(basename "$whl")"
            rm -rf "$out/deps" && mv "$out/deps.new" "$out/deps"
            note "$arch: $(find "$out/deps" -name '*.whl' | wc -l) dependency wheels in $out/deps"
        else
            note "$arch: --deps skipped: install the dependencies on the Pi from piwheels (Raspberry Pi OS's default index)"
        fi
    fi
    if [ "$TEST" = 1 ]; then
        command -v "$qemu" >/dev/null || die "$E_ENV" "$qemu is missing: sudo apt-get install qemu-user"
        note "$arch: C tests under $qemu"
        if ! { cmake -S "$SRC" -B "$BUILD/$arch" -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DPF_USE_BLAS=OFF >/dev/null &&
               cmake --build "$BUILD/$arch" -j"$(nproc)" >/dev/null &&
               ctest --test-dir "$BUILD/$arch" --output-on-failure --timeout 900; }; then
            die "$E_STEP" "$arch: building or running the C tests under $qemu failed (output above)"
        fi
    fi
done
note "done: $(find "$DIST" -mindepth 2 -maxdepth 2 -name '*.whl' | tr '\n' ' ')"
