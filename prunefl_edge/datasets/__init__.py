"""Data sets as numpy arrays, from standard formats on disk or from the bundled demo data."""

from __future__ import annotations

from pathlib import Path

from prunefl_edge.datasets.base import Dataset, DatasetError
from prunefl_edge.datasets.bundled import BUNDLED
from prunefl_edge.datasets.cifar10 import load_cifar10
from prunefl_edge.datasets.idx import load_idx_dir, load_idx_pair
from prunefl_edge.datasets.leaf import load_leaf
from prunefl_edge.datasets.npz import load_npz

FORMATS = ("idx", "leaf", "cifar10", "npz")

__all__ = ["Dataset", "DatasetError", "FORMATS", "load_dataset", "load_idx_pair", "detect_format"]


def detect_format(p: Path) -> str:
    if p.suffix == ".npz":
        return "npz"
    if p.suffix == ".json":
        return "leaf"
    if p.suffix == ".bin":
        return "cifar10"
    if p.is_dir():
        names = [q.name for q in p.iterdir()]
        if any("idx3-ubyte" in n for n in names):
            return "idx"
        if any(n.startswith("data_batch_") for n in names):
            return "cifar10"
        if any(n.endswith(".json") for n in names) or (p / "train").is_dir():
            return "leaf"
    raise DatasetError(f"{p}: cannot tell the format; give it (one of {', '.join(FORMATS)})")


def load_dataset(source: str | Path, format: str | None = None) -> Dataset:  # noqa: A002 - the user's word
    """``mnist5k`` / ``digits`` (bundled), or a path in one of FORMATS (detected from the path if not given)."""
    if str(source) in BUNDLED and format is None:
        return BUNDLED[str(source)]()
    p = Path(source)
    if not p.exists():
        raise DatasetError(f"{p}: no such file or directory (bundled data sets: {', '.join(BUNDLED)})")
    fmt = format or detect_format(p)
    if fmt == "idx":
        if not p.is_dir():
            raise DatasetError(f"{p}: give the directory holding the IDX files")
        return load_idx_dir(p)
    if fmt == "leaf":
        return load_leaf(p)
    if fmt == "cifar10":
        return load_cifar10(p)
    if fmt == "npz":
        return load_npz(p)
    raise DatasetError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
