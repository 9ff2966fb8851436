#!/usr/bin/env bash
# Installs everything the build and the test suite need, on a fresh Debian machine or a developer's:
#  - as root with apt-get: the Debian packages (cross compilers, qemu-user, OpenBLAS, Mosquitto, ...);
#  - a virtualenv in .venv (VENV=... to change) with the project and its test extras, plus PyTorch 2.13.0
#    (CPU build), the reference the tests compare against.
# Fails, never skips, when something the tests need is missing.
# --build-only: what cross-building the Pi wheels needs (make pi-wheels): CMake and the cross compilers, and a
# virtualenv with pip; no PyTorch, no test tools, no project install.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_ONLY=0
[ "${1:-}" != --build-only ] || BUILD_ONLY=1

VENV=$(realpath -m "${VENV:-.venv}")
PYTHON=${PYTHON:-python3}
DEB_PACKAGES=(python3 python3-venv cmake ninja-build gcc libc6-dev libopenblas-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross
              gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user mosquitto mosquitto-clients openssl
              systemd valgrind shellcheck)
need=(cmake gcc aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc qemu-aarch64 qemu-arm mosquitto openssl shellcheck valgrind)
if [ "$BUILD_ONLY" = 1 ]; then
    DEB_PACKAGES=(python3 python3-venv cmake gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross
                  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
    need=(cmake gcc aarch64-linux-gnu-gcc arm-linux-gnueabihf-gcc)
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

for tool in "${need[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "setup: '$tool' is missing. Install the Debian packages: sudo apt-get install ${DEB_PACKAGES[*]}" >&2
        exit 1
    fi
done

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: $PYTHON is missing or older than Python 3.11 (set PYTHON=python3.11 or newer)" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | sed "/^WARNING: Location/d"
if [ "$BUILD_ONLY" = 1 ]; then
    echo "setup: ok (build only: $VENV has pip; the build backend comes from the package index per build)"
    exit 0
fi
# PyTorch first and pinned: the CPU build of 2.13.0 is the reference of the tests (never a runtime dependency);
# installing it before anything else keeps any other package from pulling a different build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0" 2>&1 | sed "/^WARNING: Location/d"
"$VENV/bin/python" -m pip install -q ".[test,demo]" 2>&1 | sed "/^WARNING: Location/d"
# the installed package (imported from outside the source tree) must load its own library
(cd /tmp && "$VENV/bin/python" -c 'import prunefl_edge.engine as e; print("setup: ok,", e.build_info())')
