"""LEAF FEMNIST JSON (https://leaf.cmu.edu format): users are kept as natural clients."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prunefl_edge.datasets.base import Dataset, DatasetError

MAX_JSON_BYTES = 1 << 30


def _read(path: Path) -> dict:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise DatasetError(f"{path}: larger than 1 GiB")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(doc, dict) or not {"users", "user_data"} <= doc.keys():
        raise DatasetError(f"{path}: not a LEAF file (needs 'users' and 'user_data')")
    return doc


def _user_arrays(path: Path, doc: dict, side: int) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    users, xs, ys = [], [], []
    counts = doc.get("num_samples")
    if counts is not None and len(counts) != len(doc["users"]):
        raise DatasetError(f"{path}: {len(doc['users'])} users but {len(counts)} num_samples entries")
    for k, u in enumerate(doc["users"]):
        data = doc["user_data"].get(u)
        if not isinstance(data, dict) or "x" not in data or "y" not in data:
            raise DatasetError(f"{path}: user {u!r} has no x/y data")
        try:
            x = np.asarray(data["x"], dtype=np.float32)
            y = np.asarray(data["y"], dtype=np.int64)
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{path}: user {u!r}: data is not numeric ({exc})") from exc
        if x.ndim != 2 or x.shape[1] != side * side:
            raise DatasetError(f"{path}: user {u!r}: images must be rows of {side * side} values, got {x.shape}")
        if y.shape != (len(x),):
            raise DatasetError(f"{path}: user {u!r}: {len(x)} images but {y.size} labels")
        if counts is not None and counts[k] != len(x):
            raise DatasetError(f"{path}: user {u!r}: num_samples says {counts[k]}, data holds {len(x)}")
        users.append(str(u))
        xs.append(x.reshape(-1, 1, side, side))
        ys.append(y)
    return users, xs, ys


def load_leaf(path: str | Path, side: int = 28) -> Dataset:
    """A LEAF JSON file, or a directory with train/ and test/ folders of them (or JSON files directly)."""
    p = Path(path)
    if p.is_dir():
        train_files = sorted((p / "train").glob("*.json")) if (p / "train").is_dir() else sorted(p.glob("*.json"))
        test_files = sorted((p / "test").glob("*.json")) if (p / "test").is_dir() else []
    else:
        train_files, test_files = [p], []
    if not train_files:
        raise DatasetError(f"{p}: no LEAF .json files")
    users: list[str] = []
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for f in train_files:
        u, x, y = _user_arrays(f, _read(f), side)
        users += u
        xs += x
        ys += y
    x_test = y_test = None
    if test_files:
        parts = [_user_arrays(f, _read(f), side) for f in test_files]
        x_test = np.concatenate([x for _, px, _ in parts for x in px]).astype(np.float32)
        y_test = np.concatenate([y for _, _, py in parts for y in py]).astype(np.int32)
    sizes = [len(y) for y in ys]
    starts = np.concatenate([[0], np.cumsum(sizes)])
    groups = [np.arange(starts[k], starts[k + 1]) for k in range(len(sizes))]
    y_all = np.concatenate(ys).astype(np.int32)
    num_classes = max(62 if y_all.max(initial=0) < 62 else int(y_all.max()) + 1,
                      int(y_test.max()) + 1 if y_test is not None and y_test.size else 0)
    return Dataset(p.stem, np.concatenate(xs), y_all, num_classes, x_test, y_test, groups, users)
