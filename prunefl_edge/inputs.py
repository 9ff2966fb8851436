"""A data set split for training and testing, and a model with its initial weights, by name or path.

What ``prunefl-edge profile``, the simulator and the coordinator load: :mod:`prunefl_edge.datasets` and
:mod:`prunefl_edge.models` / :mod:`prunefl_edge.onnx_import` behind one error, :class:`InputError` (exit code 3 in
the CLIs). Every model enters through ONNX, built-in ones included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prunefl_common.errors import InputError
from prunefl_common.model_spec import ModelSpec


@dataclass
class DataSplit:
    x_train: np.ndarray  # float32 (n, C, H, W)
    y_train: np.ndarray  # int32 (n,)
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    groups: list[np.ndarray] | None = None  # natural clients (LEAF users), indices into the training split


def load_data(name: str, test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """A data set by name (``mnist5k``, ``digits``) or path; without a test split, ``test_fraction`` of the
    training samples is held out (seeded) and natural groups are restricted to what stays in training."""
    from prunefl_edge.datasets import DatasetError, load_dataset

    try:
        ds = load_dataset(name)
    except (DatasetError, OSError) as e:
        raise InputError(str(e)) from e
    x, y = ds.x_train, np.asarray(ds.y_train, np.int32)
    groups = ds.groups
    if ds.x_test is not None and ds.y_test is not None and len(ds.y_test):
        return DataSplit(x, y, ds.x_test, np.asarray(ds.y_test, np.int32), ds.num_classes, ds.name, groups)
    perm = np.random.default_rng([seed, 7]).permutation(len(y))
    n_test = round(test_fraction * len(y))
    if n_test < 1 or n_test >= len(y):
        raise InputError(f"{name}: {len(y)} samples cannot be split with test fraction {test_fraction}")
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    if groups is not None:
        new_index = np.full(len(y), -1, np.int64)
        new_index[tr] = np.arange(len(tr))
        groups = [new_index[g][new_index[g] >= 0] for g in groups]
    return DataSplit(x[tr], y[tr], x[te], y[te], ds.num_classes, ds.name, groups)


def load_model(name: str, num_classes: int, input_shape: tuple[int, int, int],
               seed: int) -> tuple[ModelSpec, list[np.ndarray]]:
    """(spec, initial weights) of a built-in model (``conv2``, ``mlp``, ``vgg11``; seeded) or a ``.onnx`` file."""
    from prunefl_edge.models import build_model
    from prunefl_edge.onnx_import import import_model, load_onnx

    try:
        if name.endswith(".onnx"):
            imported = load_onnx(name)
        else:
            imported = import_model(build_model(name, num_classes=num_classes, input_shape=input_shape, seed=seed),
                                    source=name)
    except (ValueError, OSError) as e:
        raise InputError(f"model {name}: {e}") from e
    spec = imported.spec
    if spec.input_shape != tuple(input_shape):
        raise InputError(f"model {name} takes inputs {spec.input_shape}, the data set has {tuple(input_shape)}")
    if spec.num_classes < num_classes:
        raise InputError(f"model {name} has {spec.num_classes} outputs, the data set {num_classes} classes")
    return spec, [np.asarray(w, np.float32) for w in imported.weights]
