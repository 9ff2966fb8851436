"""The software version, changing with the code: the released base version, plus, in a wheel built from a git
checkout, what ``git describe --always --dirty`` said at build time (packaging/stage.sh writes it into
``prunefl_common/_version.py`` and into the wheel's metadata, so pip sees a rebuilt wheel as another version).
Run from a source tree, git is asked once; elsewhere the base version alone.
"""

from __future__ import annotations

import functools
import re
import subprocess
from pathlib import Path

BASE = "0.1.0"  # the static version of the pyproject files


def local_label(describe: str) -> str:
    """A PEP 440 local version label from git describe (``v0.1-3-gabc1234-dirty`` -> ``v0.1.3.gabc1234.dirty``)."""
    return ".".join(p for p in re.split(r"[^A-Za-z0-9]+", describe.strip()) if p).lower()


def from_describe(describe: str) -> str:
    label = local_label(describe)
    return f"{BASE}+{label}" if label else BASE


@functools.cache
def version() -> str:
    try:
        from prunefl_common._version import VERSION  # type: ignore[import-not-found]  # generated at build time

        return str(VERSION)
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():  # a source tree (a checkout or a worktree)
        try:
            out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True,
                                 text=True, timeout=10)
            if out.returncode == 0 and out.stdout.strip():
                return from_describe(out.stdout)
        except (OSError, subprocess.SubprocessError):
            pass
    return BASE
