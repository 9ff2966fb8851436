"""Which OpenBLAS kernels the C core's dense GEMM runs on, and a warning when OpenBLAS did not recognise the CPU.

OpenBLAS picks its kernels at load time from the CPU model; a release older than the CPU falls back to generic
ones (on x86-64 "Prescott", SSE3 only): Debian 12's OpenBLAS 0.3.21 does so on recent AVX-512 Xeons, where a dense
Conv-2 training step then took 1.7x as long (bench/bench_core.py: 121 ms, 72 ms with OPENBLAS_CORETYPE=SkylakeX).
``OPENBLAS_CORETYPE`` overrides the choice; this module suggests a value.
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

GENERIC_X86 = {"prescott", "core2", "penryn", "dunnington", "nehalem", "atom", "katmai", "coppermine", "northwood",
               "banias", "generic"}


def openblas_core(soname: str = "libopenblas.so.0") -> str | None:
    """The kernel set of the process's OpenBLAS (loaded already when the core links it), or None without one."""
    try:
        lib = ctypes.CDLL(soname)
        fn = lib.openblas_get_corename
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    name = fn()
    return name.decode(errors="replace") if name else None


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def coretype_advice(core: str | None, machine: str, flags: set[str]) -> str | None:
    """A warning with the fix when OpenBLAS runs generic kernels on an x86-64 CPU that has AVX2 (None otherwise)."""
    if core is None or machine not in ("x86_64", "AMD64") or core.lower() not in GENERIC_X86:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        better = "SkylakeX"
    elif {"avx2", "fma"} <= flags:
        better = "Haswell"
    else:
        return None
    return (f"OpenBLAS does not recognise this CPU and runs its generic {core} kernels (dense layers slower): set "
            f"OPENBLAS_CORETYPE={better} in the environment (e.g. Environment= in the systemd unit), or use a newer "
            "OpenBLAS")


def blas_note(build: str) -> tuple[str, str | None]:
    """(a description of the dense GEMM for ``build`` — the core's build info —, a warning or None)."""
    if "dense gemm blas" not in build:
        return "builtin GEMM", None
    core = openblas_core()
    if core is None:
        return "a CBLAS (not OpenBLAS)", None
    return f"OpenBLAS kernels {core}", coretype_advice(core, platform.machine(), cpu_flags())
