"""Arrays in a NumPy .npz: x and y (or x_train, y_train and optionally x_test, y_test). Never unpickled."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from prunefl_edge.datasets.base import Dataset, DatasetError


def _images(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim >= 1 and len(x) == 0:
        raise DatasetError(f"{path}: {key} holds no samples (shape {x.shape}): store at least one")
    if x.ndim >= 2 and 0 in x.shape[1:]:
        raise DatasetError(f"{path}: {key} samples are empty (shape {x.shape}): each needs at least one value")
    if x.ndim == 2:  # flat rows: square single-channel images
        side = int(round(np.sqrt(x.shape[1])))
        if side * side != x.shape[1]:
            raise DatasetError(f"{path}: {key} rows of {x.shape[1]} values are not square images; store (N, C, H, W)")
        x = x.reshape(-1, 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    elif x.ndim != 4:
        raise DatasetError(f"{path}: {key} must be (N, C, H, W), (N, H, W) or (N, features), got {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x, np.float32) / np.float32(255.0)
    if not np.issubdtype(x.dtype, np.floating):
        raise DatasetError(f"{path}: {key} must be uint8 or float, got {x.dtype}")
    return np.ascontiguousarray(x, np.float32)


def load_npz(path: str | Path) -> Dataset:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{p}: not a readable .npz without objects ({exc})") from exc
    xk, yk = ("x_train", "y_train") if "x_train" in arrays else ("x", "y")
    if xk not in arrays or yk not in arrays:
        raise DatasetError(f"{p}: needs arrays x and y (or x_train and y_train); found {sorted(arrays)}")
    x, y = _images(p, xk, arrays[xk]), arrays[yk]
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{p}: labels {yk} must be integers, got {y.dtype}")
    xt = _images(p, "x_test", arrays["x_test"]) if "x_test" in arrays else None
    yt = arrays.get("y_test")
    ys = [y] + ([yt] if yt is not None else [])
    if any(a.ndim != 1 for a in ys):
        raise DatasetError(f"{p}: labels must be one per sample, (N,): {yk} is {y.shape} for {xk} {x.shape}")
    if "num_classes" in arrays:
        nc = arrays["num_classes"]
        if nc.ndim != 0 or not np.issubdtype(nc.dtype, np.integer) or int(nc) < 1:
            raise DatasetError(f"{p}: num_classes must be one positive integer, got {nc.dtype} of shape {nc.shape}")
        num_classes = int(nc)
    else:
        num_classes = int(max(a.max() for a in ys if a.size)) + 1
    if min(int(a.min()) for a in ys if a.size) < 0 or max(int(a.max()) for a in ys if a.size) >= num_classes:
        raise DatasetError(f"{p}: labels must be in 0..{num_classes - 1}")
    return Dataset(p.stem, x, y.astype(np.int32), num_classes, xt, yt.astype(np.int32) if yt is not None else None)
