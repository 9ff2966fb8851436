"""Data sets, models and partitions for the simulator and the coordinator, through the project's loaders.

Adapts :mod:`prunefl_edge.datasets`, :mod:`prunefl_edge.models` / :mod:`prunefl_edge.onnx_import` and
:mod:`prunefl_edge.partition` to what the simulator needs, and maps their errors to :class:`InputError`
(exit code 3 in the CLIs). Every model enters through ONNX, built-in ones included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prunefl_edge.model_spec import ModelSpec

log = logging.getLogger(__name__)


class InputError(ValueError):
    """A data set, model or partition that cannot be used (exit code 3 in the CLIs)."""


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


def random_weights(spec: ModelSpec, seed: int) -> list[np.ndarray]:
    from prunefl_edge.models import init_weights

    return init_weights(spec, seed)


def partition(y: np.ndarray, n_clients: int, how: str, seed: int, alpha: float = 0.5,
              shards_per_client: int = 2, groups: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    """Index lists, one per client; every sample in exactly one client."""
    from prunefl_edge.partition import partition as project_partition

    try:
        return [np.asarray(p) for p in project_partition(how, y, n_clients, seed=seed, alpha=alpha,
                                                         shards_per_client=shards_per_client, groups=groups)]
    except ValueError as e:
        raise InputError(f"partition {how!r}: {e}") from e


def export_model(spec: ModelSpec, weights: list[np.ndarray], masks: dict[int, np.ndarray], path: str) -> bool:
    """Write the pruned model to ONNX (pruned weights as zeros, the density in the model's metadata)."""
    from prunefl_edge.onnx_export import export_onnx

    masked = [w * masks[i] if i in masks else w for i, w in enumerate(weights)]
    export_onnx(spec, masked, path, masks=masks)
    return True
