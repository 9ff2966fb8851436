"""The cffi binding of the C core (ABI mode): the declarations come from the one public header.

The library is looked up in this order: the ``PRUNEFL_EDGE_LIB`` environment variable (a path to
``libprunefl.so``), then ``prunefl_edge/_lib/`` where ``pip install .`` puts it. The header comes from the same
``_lib/include`` folder, or from the source tree when running from a checkout.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cffi

_PKG = Path(__file__).resolve().parent
_LIB_NAMES = ("libprunefl.so", "libprunefl.dylib", "prunefl.dll")


class NativeLibraryError(ImportError):
    """The C core library or its header cannot be found or loaded."""


@dataclass(frozen=True)
class Native:
    ffi: cffi.FFI
    lib: Any
    path: Path


def _header_path(lib_path: Path) -> Path:
    candidates = [
        lib_path.parent / "include" / "prunefl" / "prunefl.h",
        _PKG / "_lib" / "include" / "prunefl" / "prunefl.h",
        _PKG.parent / "core_c" / "include" / "prunefl" / "prunefl.h",
    ]
    for c in candidates:
        if c.is_file():
            return c
    raise NativeLibraryError(
        "cannot find prunefl.h beside the library or in the source tree; reinstall with `pip install .`"
    )


def cdef_from_header(text: str) -> str:
    """The header's declarations as cffi's cdef accepts them: no comments, no C++ guards, no preprocessor
    lines, no PF_API export macro."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    text = re.sub(r"#ifdef __cplusplus.*?#endif", "", text, flags=re.DOTALL)
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(lines).replace("PF_API ", "")


def _library_path() -> Path:
    env = os.environ.get("PRUNEFL_EDGE_LIB")
    if env:
        p = Path(env)
        if not p.is_file():
            raise NativeLibraryError(f"PRUNEFL_EDGE_LIB={env} does not exist; unset it or point it at libprunefl.so")
        return p
    for name in _LIB_NAMES:
        p = _PKG / "_lib" / name
        if p.is_file():
            return p
    raise NativeLibraryError(
        "the C core library is not installed: run `pip install .` in the source tree "
        "(or set PRUNEFL_EDGE_LIB to a built libprunefl.so)"
    )


@functools.lru_cache(maxsize=1)
def load() -> Native:
    """Load the library once per process."""
    path = _library_path()
    ffi = cffi.FFI()
    ffi.cdef(cdef_from_header(_header_path(path).read_text(encoding="utf-8")))
    try:
        lib = ffi.dlopen(str(path))
    except OSError as exc:
        raise NativeLibraryError(f"cannot load {path}: {exc}; rebuild with `pip install .`") from exc
    return Native(ffi, lib, path)
