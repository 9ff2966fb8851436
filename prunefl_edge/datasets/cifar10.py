"""CIFAR-10 binary batches: records of 1 label byte + 3072 image bytes (3x32x32, channel-major)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from prunefl_edge.datasets.base import Dataset, DatasetError, images_from_uint8
from prunefl_edge.datasets.idx import read_bytes

RECORD = 1 + 3 * 32 * 32


def read_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    p = Path(path)
    data = read_bytes(p)
    if len(data) == 0 or len(data) % RECORD:
        raise DatasetError(f"{p}: {len(data)} bytes is not a whole number of {RECORD}-byte CIFAR-10 records "
                           "(truncated or not a CIFAR-10 binary batch)")
    rec = np.frombuffer(data, np.uint8).reshape(-1, RECORD)
    y = rec[:, 0].astype(np.int32)
    if y.max() > 9:
        raise DatasetError(f"{p}: label {y.max()} outside 0..9: not a CIFAR-10 batch")
    return rec[:, 1:].reshape(-1, 3, 32, 32), y


def load_cifar10(path: str | Path) -> Dataset:
    """The cifar-10-batches-bin directory (data_batch_*.bin, test_batch.bin) or a single batch file."""
    p = Path(path)
    if p.is_file():
        x, y = read_batch(p)
        return Dataset(p.stem, images_from_uint8(x), y, 10)
    train = sorted(p.glob("data_batch_*.bin"))
    if not train:
        raise DatasetError(f"{p}: no data_batch_*.bin files (the CIFAR-10 binary version)")
    parts = [read_batch(f) for f in train]
    x = np.concatenate([a for a, _ in parts])
    y = np.concatenate([b for _, b in parts])
    xt = yt = None
    if (p / "test_batch.bin").is_file():
        xt, yt = read_batch(p / "test_batch.bin")
    return Dataset("cifar10", images_from_uint8(x), y, 10, images_from_uint8(xt) if xt is not None else None, yt)
