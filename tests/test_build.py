"""The pip-installed package carries its C library and header and loads them from outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def installed_python() -> str:
    venv = os.environ.get("PRUNEFL_EDGE_VENV")
    return str(Path(venv) / "bin" / "python") if venv else sys.executable


def test_installed_package_loads_its_library(tmp_path: Path) -> None:
    code = (
        "import pathlib, prunefl_edge, prunefl_edge.engine as e\n"
        "pkg = pathlib.Path(prunefl_edge.__file__).parent\n"
        "assert (pkg / '_lib' / 'libprunefl.so').is_file(), 'library missing from the package'\n"
        "assert (pkg / '_lib' / 'include' / 'prunefl' / 'prunefl.h').is_file(), 'header missing'\n"
        "print(e.build_info())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PRUNEFL_EDGE_LIB", "PYTHONPATH")}
    out = subprocess.run([installed_python(), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"the installed package does not load (run `make deps`):\n{out.stderr}"
    assert "isa" in out.stdout and "dense gemm" in out.stdout


def test_missing_library_is_a_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, PRUNEFL_EDGE_LIB=str(tmp_path / "nope.so"))
    code = "import prunefl_edge.engine as e; e.build_info()"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode != 0
    assert "PRUNEFL_EDGE_LIB" in out.stderr and "does not exist" in out.stderr
