"""The OpenBLAS kernel check: generic kernels on a CPU with AVX2/AVX-512 get a warning naming OPENBLAS_CORETYPE;
a recognised CPU, another architecture or a build without BLAS get none."""

from __future__ import annotations

import platform

import pytest

from prunefl_edge.blas_check import blas_note, coretype_advice, cpu_flags, openblas_core
from prunefl_edge.engine import build_info

AVX512 = {"sse3", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq"}


@pytest.mark.parametrize("core,machine,flags,want", [
    ("Prescott", "x86_64", AVX512, "OPENBLAS_CORETYPE=SkylakeX"),
    ("Prescott", "x86_64", {"avx", "avx2", "fma"}, "OPENBLAS_CORETYPE=Haswell"),
    ("Nehalem", "x86_64", {"avx", "avx2", "fma"}, "OPENBLAS_CORETYPE=Haswell"),
    ("Prescott", "x86_64", {"sse3", "ssse3"}, None),  # an old CPU: generic kernels are right
    ("SkylakeX", "x86_64", AVX512, None),
    ("Haswell", "x86_64", AVX512, None),
    ("armv8", "aarch64", set(), None),
    (None, "x86_64", AVX512, None),
])
def test_advice(core, machine, flags, want):
    got = coretype_advice(core, machine, flags)
    assert (got is None) == (want is None)
    if want:
        assert want in got and core in got


def test_cpu_flags_from_cpuinfo_text():
    text = "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse3 avx2 fma\nbugs\t: none\n"
    assert cpu_flags(text) == {"fpu", "sse3", "avx2", "fma"}
    assert cpu_flags("processor : 0\n") == set()


def test_the_note_matches_this_build():
    gemm, warning = blas_note(build_info())
    if "dense gemm blas" not in build_info():
        assert gemm == "builtin GEMM" and warning is None
    else:
        core = openblas_core()
        assert core is None or core in gemm
        if warning is not None:
            assert platform.machine() == "x86_64" and "OPENBLAS_CORETYPE=" in warning
    assert openblas_core("libdoes-not-exist.so.7") is None
