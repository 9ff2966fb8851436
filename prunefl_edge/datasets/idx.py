"""MNIST / EMNIST / Fashion-MNIST IDX files, plain or gzipped."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from prunefl_edge.datasets.base import Dataset, DatasetError, images_from_uint8

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_BYTES = 1 << 31


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip (by its magic, not its name)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as gz:
                data = gz.read(MAX_BYTES + 1)
        else:
            data = path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from exc
    if len(data) > MAX_BYTES:
        raise DatasetError(f"{path}: larger than 2 GiB uncompressed")
    return data


def read_idx(path: str | Path) -> np.ndarray:
    p = Path(path)
    data = read_bytes(p)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{p}: bad magic number {data[:4].hex() or '(empty)'}: not an IDX file")
    code, ndim = data[2], data[3]
    if code not in _DTYPES:
        raise DatasetError(f"{p}: unknown IDX element type 0x{code:02x}")
    if not 1 <= ndim <= 4 or len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{p}: bad IDX header ({ndim} dimensions)")
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(_DTYPES[code])
    want = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    have = len(data) - 4 - 4 * ndim
    if have != want:
        raise DatasetError(f"{p}: header says {dims} ({want} bytes of data) but the file holds {have}: "
                           f"{'truncated' if have < want else 'trailing bytes'}")
    return np.frombuffer(data, dtype, offset=4 + 4 * ndim).reshape(dims)


def load_idx_pair(images: str | Path, labels: str | Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.ndim != 3:
        raise DatasetError(f"{images}: images must be (N, H, W), got {x.shape}")
    if y.ndim != 1:
        raise DatasetError(f"{labels}: labels must be (N,), got {y.shape}")
    if len(x) != len(y):
        raise DatasetError(f"{images} holds {len(x)} images but {labels} holds {len(y)} labels")
    if x.dtype != np.uint8:
        raise DatasetError(f"{images}: images must be unsigned bytes, got {x.dtype}")
    return x, y.astype(np.int32)


def _find(directory: Path, split: str, kind: str) -> Path | None:
    """train/t10k (MNIST, Fashion) or emnist-*-train/test names; .gz optional."""
    stems = {"train": ("train", "train"), "test": ("t10k", "test")}[split]
    suffix = "images-idx3-ubyte" if kind == "images" else "labels-idx1-ubyte"
    for p in sorted(directory.iterdir()):
        n = p.name.replace(".gz", "")
        if n.endswith(suffix) and (n.startswith(stems[0] + "-") or f"-{stems[1]}-" in n):
            return p
    return None


def load_idx_dir(directory: str | Path) -> Dataset:
    d = Path(directory)
    paths = {(s, k): _find(d, s, k) for s in ("train", "test") for k in ("images", "labels")}
    if paths["train", "images"] is None or paths["train", "labels"] is None:
        raise DatasetError(f"{d}: no train-images-idx3-ubyte / train-labels-idx1-ubyte (optionally .gz) here")
    x, y = load_idx_pair(paths["train", "images"], paths["train", "labels"])
    emnist = "emnist" in paths["train", "images"].name  # type: ignore[union-attr]
    xt = yt = None
    if paths["test", "images"] is not None and paths["test", "labels"] is not None:
        xt, yt = load_idx_pair(paths["test", "images"], paths["test", "labels"])
        if xt.shape[1:] != x.shape[1:]:
            raise DatasetError(f"{paths['test', 'images']}: images are {xt.shape[1:]}, training images {x.shape[1:]}")
    if emnist:  # EMNIST stores images transposed
        x = x.transpose(0, 2, 1)
        xt = xt.transpose(0, 2, 1) if xt is not None else None
    y_all = y if yt is None else np.concatenate([y, yt])
    if y_all.min() < 0:
        raise DatasetError(f"{d}: negative labels")
    offset = 1 if emnist and y_all.min() == 1 else 0  # EMNIST letters counts from 1
    num_classes = int(y_all.max()) + 1 - offset
    return Dataset(d.name, images_from_uint8(x), y - offset, num_classes,
                   images_from_uint8(xt) if xt is not None else None, yt - offset if yt is not None else None)
