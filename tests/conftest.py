"""Test-session setup: the report header names the C library under test (native, ASan or portable build, or the
installed one), so a log says which build a failure belongs to."""

from __future__ import annotations


def pytest_report_header() -> list[str]:
    try:
        from prunefl_edge._native import load
        from prunefl_edge.engine import build_info

        return [f"prunefl core: {load().path} ({build_info()})"]
    except ImportError as exc:  # NativeLibraryError: the tests that need the library fail with this message
        return [f"prunefl core: not loadable: {exc}"]
