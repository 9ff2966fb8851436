"""Shared helpers for the simulation tests: the real engine when its library loads, else skip."""

from __future__ import annotations

from typing import Any

import pytest


def engine_or_skip() -> tuple[Any, Any]:
    try:
        from prunefl_edge.engine import Network, SGDConfig

        Network  # noqa: B018
    except (ImportError, OSError) as e:  # library not built
        pytest.skip(f"C core not available: {e}")
    return Network, SGDConfig
