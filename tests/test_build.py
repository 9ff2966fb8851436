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


def test_the_installed_coordinator_runs_a_federation_from_the_source_tree(tmp_path: Path) -> None:
    """As `make demo` does: the installed prunefl-coord, started in the source tree (which holds no built C core
    and must not shadow the installed package in the edge processes it spawns), embedded broker."""
    coord = Path(installed_python()).parent / "prunefl-coord"
    env = {k: v for k, v in os.environ.items() if k not in ("PRUNEFL_EDGE_LIB", "PYTHONPATH")}
    out = subprocess.run([str(coord), "--broker", "embedded", "--spawn-edges", "2", "--min-clients", "2",
                          "--clients-per-round", "2", "--dataset", "digits", "--model", "mlp", "--method", "prunefl",
                          "--rounds", "3", "--reconfig-interval", "2", "--ip-max-passes", "3", "--eval-every", "3",
                          "--no-report", "--out", str(tmp_path / "run")],
                         cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 rounds; accuracy" in out.stderr
    assert (tmp_path / "run" / "model.onnx").is_file()
