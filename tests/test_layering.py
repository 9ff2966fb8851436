"""Three packages with one-way doors: coordinator -> prunefl_edge -> prunefl_common, nothing back up.

The device (prunefl_edge) never imports the server (coordinator); what both need lives in prunefl_common, which
imports neither. Checked on the source (every import statement, lazy ones inside functions included, and
resource lookups by package name, which no import shows).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {  # package -> the packages it must not import
    "prunefl_common": ("coordinator", "prunefl_edge", "bench", "tests"),
    "prunefl_edge": ("coordinator", "bench", "tests"),
    "coordinator": ("bench", "tests"),
}


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            out.append((node.lineno, "<relative>"))
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "files"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, f"resource:{node.args[0].value}"))
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_run_one_way(package: str) -> None:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            top = name.removeprefix("resource:").split(".")[0]
            if name == "<relative>":
                bad.append(f"{path.relative_to(ROOT)}:{line}: a relative import (name the package)")
            elif top in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line}: {name}")
            elif name.startswith("resource:") and top != package:
                bad.append(f"{path.relative_to(ROOT)}:{line}: resources of another package ({top})")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_imports_and_resource_lookups(tmp_path: Path) -> None:
    p = tmp_path / "m.py"
    p.write_text("def f():\n    from coordinator.server import Coordinator\n"
                 "import importlib.resources as r\nr.files('coordinator')\n")
    names = [n for _, n in _imports(p)]
    assert "coordinator.server" in names and "resource:coordinator" in names


def test_no_import_circle_inside_the_protocol() -> None:
    """protocol/ layers bottom up: topics, recent -> fields -> positions -> envelope -> codec -> wire, chunks."""
    order = ["topics", "recent", "fields", "positions", "envelope", "codec", "wire", "chunks", "mqtt_client"]
    proto = ROOT / "prunefl_common" / "protocol"
    assert sorted(p.stem for p in proto.glob("*.py") if p.stem != "__init__") == sorted(order)
    for i, mod in enumerate(order):
        for _, name in _imports(proto / f"{mod}.py"):
            if name.startswith("prunefl_common.protocol."):
                dep = name.rsplit(".", 1)[1]
                assert order.index(dep) < i, f"protocol/{mod}.py imports {dep}, which is not below it"
