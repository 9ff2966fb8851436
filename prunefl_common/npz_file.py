"""State files: one ``.npz`` of plain arrays plus a JSON object stored as the uint8 array ``meta``; written
atomically (temporary file, fsync, rename), read without pickle. Used for the coordinator's checkpoint and the
edge agent's local state."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def save_npz_atomic(path: str | os.PathLike[str], meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    """Write ``meta`` and ``arrays`` to ``path``; a crash leaves the previous file or the new one, never half.
    The arrays stream into the file (in chunks), not through a copy of the whole file in memory."""
    if "meta" in arrays:
        raise ValueError("'meta' is reserved for the JSON header")
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def load_npz_with_meta(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a file written by :func:`save_npz_atomic`; OSError / ValueError / KeyError otherwise."""
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(bytes(data["meta"]).decode())
        if not isinstance(meta, dict):
            raise ValueError("the meta header is not a JSON object")
        return meta, {k: np.array(data[k]) for k in data.files if k != "meta"}
