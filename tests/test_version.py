"""The version changes with the code: packaging/stage.sh stamps git describe's output into the distribution's
metadata and prunefl_common/_version.py; `prunefl-edge --version`, `check` and the edge's status show it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from prunefl_common import version as v

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / "packaging" / "stage.sh"


def test_local_labels_from_git_describe_are_pep440() -> None:
    assert v.from_describe("bff322d\n") == f"{v.BASE}+bff322d"
    assert v.from_describe("v0.2-3-gabc1234-dirty") == f"{v.BASE}+v0.2.3.gabc1234.dirty"
    assert v.from_describe("") == v.BASE
    pep440 = re.compile(r"^\d+(\.\d+)*(\+[a-z0-9]+(\.[a-z0-9]+)*)?$")
    assert pep440.match(v.from_describe("Weird_Tag--x/y-dirty"))


def test_the_static_version_is_the_pyproject_files_one() -> None:
    for p in (ROOT / "pyproject.toml", ROOT / "packaging/edge/pyproject.toml",
              ROOT / "packaging/coordinator/pyproject.toml"):
        assert tomllib.loads(p.read_text())["project"]["version"] == v.BASE, p


def _staged_version(d: Path) -> str:
    return tomllib.loads((d / "pyproject.toml").read_text())["project"]["version"]


def test_stage_stamps_the_git_version_into_metadata_and_the_package(tmp_path: Path) -> None:
    d = tmp_path / "edge"
    r = subprocess.run(["bash", str(STAGE), "edge", str(d)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = _staged_version(d)
    desc = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                          text=True).stdout.strip()
    if desc:
        assert got.startswith(v.from_describe(desc)) and got != v.BASE, (got, desc)
        if desc.endswith("-dirty"):  # two different uncommitted trees must not build the same version
            assert re.fullmatch(re.escape(v.from_describe(desc)) + r"\.[0-9a-f]{8}", got), got
    assert f'VERSION = "{got}"' in (d / "prunefl_common" / "_version.py").read_text()
    # the staged package reports it (a wheel built from there carries the file)
    out = subprocess.run([sys.executable, "-c", "from prunefl_common.version import version; print(version())"],
                         capture_output=True, text=True, cwd=d, env={**os.environ, "PYTHONPATH": str(d)})
    assert out.stdout.strip() == got, out.stderr
    # an explicit version wins; the server distribution is stamped too
    c = tmp_path / "coord"
    r = subprocess.run(["bash", str(STAGE), "coordinator", str(c)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PRUNEFL_VERSION": "0.1.0+release"})
    assert r.returncode == 0, r.stderr
    assert _staged_version(c) == "0.1.0+release"


def test_the_cli_and_the_status_show_the_version(tmp_path: Path) -> None:
    from prunefl_edge.edge_agent import SOFTWARE

    out = subprocess.run([sys.executable, "-m", "prunefl_edge.cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == f"prunefl-edge {v.version()}"
    assert SOFTWARE == f"prunefl-edge {v.version()}"
    chk = subprocess.run([sys.executable, "-m", "prunefl_edge.cli", "check", "--config", str(tmp_path / "none.toml")],
                         capture_output=True, text=True, cwd=ROOT)
    assert f"version ok    prunefl-edge {v.version()}" in chk.stdout
