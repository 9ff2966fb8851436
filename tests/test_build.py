"""The pip-installed package carries its C library and header and loads them from outside the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mosquitto_util import mosquitto  # noqa: F401 - fixture


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


def _staged_wheel(kind: str, tmp_path: Path) -> Path:
    root = Path(__file__).resolve().parents[1]
    staged = subprocess.run([str(root / "packaging" / "stage.sh"), kind, str(tmp_path / f"src-{kind}")],
                            capture_output=True, text=True, check=True).stdout.strip()
    out = tmp_path / "dist"
    r = subprocess.run([installed_python(), "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
                        staged, "-C", f"build-dir={tmp_path / 'build'}"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    (whl,) = out.glob(f"prunefl_{kind}-*.whl")
    return whl


def test_the_device_wheel_alone_runs_the_edge_without_the_server(tmp_path: Path, mosquitto) -> None:  # noqa: F811
    """What a Pi installs: prunefl_common + prunefl_edge + the C core, no coordinator, no prunefl-coord; in a clean
    virtualenv with only it (and its dependencies) the edge agent imports and `prunefl-edge check` passes."""
    import zipfile

    import numpy as np

    whl = _staged_wheel("edge", tmp_path)
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        scripts = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert not [n for n in names if n.startswith("coordinator/")]
    assert "prunefl_common/profiles/pi4-reference.json" in names and "prunefl_edge/_lib/libprunefl.so" in names
    assert "prunefl-edge =" in scripts and "prunefl-coord" not in scripts and "prunefl-sim" not in scripts
    venv = tmp_path / "pi-venv"
    subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "--quiet", str(whl)], capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PRUNEFL_EDGE_LIB", "PYTHONPATH")}
    code = ("import sys, prunefl_edge.edge_agent, prunefl_edge.cli, prunefl_edge.trainer\n"
            "assert 'coordinator' not in sys.modules, sorted(m for m in sys.modules if m.startswith('coord'))\n"
            "import importlib.util\nassert importlib.util.find_spec('coordinator') is None\n")
    r = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    data = tmp_path / "local.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.integers(0, 255, (40, 1, 8, 8), dtype=np.uint8), y=np.arange(40) % 4)
    broker = mosquitto()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[edge]\nid = "pi-01"\nfederation = "lab"\nstate_dir = "{tmp_path / "state"}"\n'
                   f'[broker]\nurl = "{broker.url}"\n[data]\npath = "{data}"\n[profile]\nmeasure = false\n')
    r = subprocess.run([str(venv / "bin" / "prunefl-edge"), "check", "--config", str(cfg)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "core    ok" in r.stdout and "broker  ok" in r.stdout
    assert not (venv / "bin" / "prunefl-coord").exists()


def test_the_server_wheel_holds_the_coordinator_only(tmp_path: Path) -> None:
    import zipfile

    whl = _staged_wheel("coordinator", tmp_path)
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        scripts = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"coordinator"}
    assert "prunefl-coord = coordinator.cli_coord:main" in scripts and "prunefl-sim" in scripts
    assert "Requires-Dist: prunefl-edge==" in meta
