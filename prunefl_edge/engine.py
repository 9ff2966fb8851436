"""`Network`: a model spec built in the C core, trained with masked SGD, read and written as numpy arrays.

Arrays cross the boundary without copies where numpy already holds them as C-contiguous buffers of the
right type; shapes and types are checked here first so that a mistake reads as a Python message. C errors
become :class:`EngineError` with the C core's message.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from prunefl_common.model_spec import (
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ModelSpec,
    ParamShape,
    ReLU,
)
from prunefl_edge._native import Native, load

log = logging.getLogger(__name__)

_INT32_MAX = 2**31 - 1

_KIND = {Linear: 1, Conv2d: 2, MaxPool2d: 3, ReLU: 4, Flatten: 5}
_STATUS = {0: "PF_OK", -1: "PF_ERR_NULL", -2: "PF_ERR_ARG", -3: "PF_ERR_SHAPE", -4: "PF_ERR_NOMEM",
           -5: "PF_ERR_STATE", -6: "PF_ERR_INTERNAL"}


class EngineError(RuntimeError):
    """A call into the C core failed: ``status`` is the C status name (``"PF_ERR_ARG"``), ``code`` its value,
    ``c_message`` the core's own message."""

    def __init__(self, status: int, message: str) -> None:
        self.code = status
        self.status = _STATUS.get(status, str(status))
        self.c_message = message
        super().__init__(f"{message} [{self.status}]")


@dataclass(frozen=True)
class SGDConfig:
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class StepResult:
    loss: float
    correct: int


@dataclass(frozen=True)
class EvalResult:
    loss: float
    accuracy: float
    n: int


@dataclass(frozen=True)
class ParamInfo:
    """One parameter tensor as the C core built it."""

    name: str  # "<layer>.weight" / "<layer>.bias", as in ModelSpec.param_shapes()
    layer: int
    is_weight: bool  # prunable, has a mask
    shape: tuple[int, ...]
    size: int


@dataclass(frozen=True)
class LayerInfo:
    kind: str
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    weight_param: int  # -1 if none
    bias_param: int
    kept: int
    density: float
    sparse_threshold: float
    is_sparse: bool


def build_info() -> str:
    """Which kernels and GEMM this build of the core uses."""
    n = load()
    return n.ffi.string(n.lib.pf_build_info()).decode()


def _layer_specs(native: Native, spec: ModelSpec) -> Any:
    arr = native.ffi.new("pf_layer_spec[]", len(spec.layers))
    for i, layer in enumerate(spec.layers):
        s = arr[i]
        s.kind = _KIND[type(layer)]
        if isinstance(layer, Linear):
            s.out_features, s.has_bias = layer.out_features, int(layer.bias)
        elif isinstance(layer, Conv2d):
            s.out_features, s.has_bias = layer.out_channels, int(layer.bias)
            s.kernel_h, s.kernel_w = layer.kernel_size
            s.stride_h, s.stride_w = layer.stride
            s.pad_h, s.pad_w = layer.padding
        elif isinstance(layer, MaxPool2d):
            s.kernel_h, s.kernel_w = layer.kernel_size
            s.stride_h, s.stride_w = layer.effective_stride
            s.pad_h, s.pad_w = layer.padding
    return arr


class Network:
    """A network of the C core. Not thread-safe: one caller at a time (the core runs its own threads)."""

    def __init__(self, spec: ModelSpec, threads: int = 1) -> None:
        self._n = load()
        self.spec = spec
        self.param_shapes: list[ParamShape] = spec.param_shapes()
        ffi = self._n.ffi
        out = ffi.new("pf_net **")
        err = ffi.new("char[]", 512)
        st = self._n.lib.pf_net_create(_layer_specs(self._n, spec), len(spec.layers), *spec.input_shape, out, err, 512)
        if st != 0:
            raise EngineError(st, f"cannot build {spec.name}: {ffi.string(err).decode()}")
        self._net = ffi.gc(out[0], self._n.lib.pf_net_destroy)
        self._in_size = int(np.prod(spec.input_shape))
        self._num_classes = spec.num_classes
        self.weight_params = [i for i, p in enumerate(self.param_shapes) if p.prunable]
        self._last_batch = 0
        self._check_shapes()
        self.set_threads(threads)
        log.debug("built %s: %d layers, %d parameters, %d threads (%s)", spec.name, len(spec.layers),
                  spec.num_parameters, threads, self._n.path)

    # ---- plumbing -------------------------------------------------------------------------------------
    @property
    def _h(self) -> Any:
        """The C handle; a closed network is a state error, not a crash."""
        if self._net is None:
            raise EngineError(-5, f"network {self.spec.name!r} is closed")
        return self._net

    def _call(self, st: int) -> None:
        if st != 0:
            raise EngineError(st, self._n.ffi.string(self._n.lib.pf_net_last_error(self._h)).decode())

    def _ptr(self, ctype: str, arr: np.ndarray) -> Any:
        return self._n.ffi.from_buffer(ctype, arr)

    def _check_shapes(self) -> None:
        count = self._n.ffi.new("int32_t *")
        self._call(self._n.lib.pf_net_num_params(self._h, count))
        if count[0] != len(self.param_shapes):
            raise EngineError(-6, f"core has {count[0]} parameters, spec {len(self.param_shapes)}")
        for i, p in enumerate(self.param_shapes):
            info = self.param_info(i)
            if info.shape != p.shape or info.layer != p.layer or info.is_weight != p.prunable:
                raise EngineError(-6, f"parameter {p.name}: core has {info}, spec {p}")

    def close(self) -> None:
        """Free the C network now (it is freed on garbage collection otherwise)."""
        if self._net is not None:
            self._n.ffi.release(self._net)
            self._net = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- configuration ---------------------------------------------------------------------------------
    def set_threads(self, threads: int) -> None:
        self._call(self._n.lib.pf_net_set_threads(self._h, int(threads)))

    def set_sparse_threshold(self, layer: int, density: float) -> None:
        """The layer runs its sparse kernels when its density is at or below ``density``."""
        self._call(self._n.lib.pf_net_set_sparse_threshold(self._h, int(layer), float(density)))

    def param_info(self, param: int) -> ParamInfo:
        if not 0 <= param < len(self.param_shapes):
            raise IndexError(f"parameter {param} out of range (the network has {len(self.param_shapes)})")
        i = self._n.ffi.new("pf_param_info *")
        self._call(self._n.lib.pf_net_param_info(self._h, int(param), i))
        return ParamInfo(self.param_shapes[param].name, int(i.layer), bool(i.is_weight), tuple(i.shape[0 : i.ndim]),
                         int(i.size))

    def layer_info(self, layer: int) -> LayerInfo:
        i = self._n.ffi.new("pf_layer_info *")
        self._call(self._n.lib.pf_net_layer_info(self._h, int(layer), i))
        kind = {v: k.__name__ for k, v in _KIND.items()}[i.kind]
        return LayerInfo(kind, tuple(i.in_shape), tuple(i.out_shape), i.weight_param, i.bias_param, int(i.kept),
                         float(i.density), float(i.sparse_threshold), bool(i.is_sparse))

    def densities(self) -> dict[int, float]:
        """Layer index -> kept fraction of its weight, for the prunable layers."""
        return {layer: self.layer_info(layer).density for layer in self.spec.prunable_layers()}

    # ---- parameters ---------------------------------------------------------------------------------------
    def get_param(self, i: int) -> np.ndarray:
        p = self.param_shapes[i]
        out = np.empty(p.shape, np.float32)
        self._call(self._n.lib.pf_net_get_param(self._h, i, self._ptr("float[]", out), out.size))
        return out

    def set_param(self, i: int, value: np.ndarray) -> None:
        p = self.param_shapes[i]
        arr = np.ascontiguousarray(value, dtype=np.float32)
        if arr.shape != p.shape:
            raise ValueError(f"parameter {p.name}: expected shape {p.shape}, got {arr.shape}")
        self._call(self._n.lib.pf_net_set_param(self._h, i, self._ptr("float[]", arr), arr.size))

    def get_weights(self) -> list[np.ndarray]:
        return [self.get_param(i) for i in range(len(self.param_shapes))]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        if len(weights) != len(self.param_shapes):
            raise ValueError(f"expected {len(self.param_shapes)} arrays, got {len(weights)}")
        for i, w in enumerate(weights):
            self.set_param(i, w)

    # ---- kept values: what tasks carry and results return, without a dense copy of any weight ---------------------
    def get_kept_values(self) -> list[np.ndarray]:
        """Per parameter, the values at its kept positions in mask (row-major) order; biases whole."""
        out = []
        n = self._n.ffi.new("int64_t *")
        for i in range(len(self.param_shapes)):
            self._call(self._n.lib.pf_net_num_kept(self._h, i, n))
            v = np.empty(int(n[0]), np.float32)
            self._call(self._n.lib.pf_net_get_kept(self._h, i, self._ptr("float[]", v), v.size))
            out.append(v)
        return out

    def set_kept_values(self, values: Sequence[np.ndarray]) -> None:
        """The inverse of :meth:`get_kept_values` under the current masks (pruned positions stay zero)."""
        if len(values) != len(self.param_shapes):
            raise ValueError(f"expected {len(self.param_shapes)} arrays, got {len(values)}")
        for i, v in enumerate(values):
            arr = np.ascontiguousarray(v, dtype=np.float32).reshape(-1)
            self._call(self._n.lib.pf_net_set_kept(self._h, i, self._ptr("float[]", arr), arr.size))

    def add_importance(self, z: Sequence[np.ndarray], scale: float, kept_only: bool = False) -> None:
        """``z[i] += scale * s**2`` with ``s`` parameter i's gradient sum, in place in C (no copy of ``s``);
        ``kept_only``: at kept positions only. ``z``: float32 C-contiguous arrays of the parameters' shapes."""
        for i, zi in enumerate(z):
            self._check_importance_buffer(i, zi)
            self._call(self._n.lib.pf_net_add_sq_grad_sum(self._h, i, self._ptr("float[]", zi), zi.size,
                                                           float(scale), int(kept_only)))

    def add_step_importance(self, z: Sequence[np.ndarray], scale: float = 1.0) -> None:
        """``z[i] += scale * g**2`` with ``g`` parameter i's gradient of the last forward_backward (zero at pruned
        positions: the gradient of the masked weights), in place in C."""
        for i, zi in enumerate(z):
            self._check_importance_buffer(i, zi)
            self._call(self._n.lib.pf_net_add_sq_grad(self._h, i, self._ptr("float[]", zi), zi.size, float(scale)))

    def _check_importance_buffer(self, i: int, zi: np.ndarray) -> None:
        if zi.dtype != np.float32 or not zi.flags.c_contiguous or zi.shape != self.param_shapes[i].shape:
            raise ValueError(f"importance of parameter {i}: a C-contiguous float32 array of shape "
                             f"{self.param_shapes[i].shape} is needed, got {zi.dtype} {zi.shape}")

    def get_masks(self) -> dict[int, np.ndarray]:
        out = {}
        for i in self.weight_params:
            m = np.empty(self.param_shapes[i].shape, np.uint8)
            self._call(self._n.lib.pf_net_get_mask(self._h, i, self._ptr("uint8_t[]", m), m.size))
            out[i] = m.astype(bool)
        return out

    def set_masks(self, masks: Mapping[int, np.ndarray]) -> None:
        """Pruned weights become zero with zero momentum; newly kept ones start at zero (set them after).

        A mask is a bool array (or numbers: nonzero = kept) of the weight's shape. All masks are checked before
        any is applied, so a bad one leaves the network unchanged."""
        checked: list[tuple[int, np.ndarray]] = []
        for i, mask in masks.items():
            if i not in self.weight_params:
                raise ValueError(f"parameter {i} is not a prunable weight (weights: {self.weight_params})")
            arr = np.asarray(mask)
            if arr.shape != self.param_shapes[i].shape:
                raise ValueError(f"mask of {self.param_shapes[i].name}: expected {self.param_shapes[i].shape}, "
                                 f"got {arr.shape}")
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"mask of {self.param_shapes[i].name}: expected bools, got dtype {arr.dtype}")
            m = arr.view(np.uint8) if arr.dtype == np.bool_ else (arr != 0)
            checked.append((i, np.ascontiguousarray(m, dtype=np.uint8)))
        for i, m in checked:
            self._call(self._n.lib.pf_net_set_mask(self._h, i, self._ptr("uint8_t[]", m), m.size))

    def reset_momentum(self) -> None:
        self._call(self._n.lib.pf_net_reset_momentum(self._h))

    def init_weights(self, seed: int = 0) -> None:
        """PyTorch's default initialisation: weights and biases uniform in +-1/sqrt(fan_in)."""
        rng = np.random.default_rng(seed)
        chunk = 1 << 20  # float64 draws in slices: the same stream as one draw per parameter, without its copy
        for i, p in enumerate(self.param_shapes):
            fan_in = int(np.prod(self.param_shapes[self._weight_of(p.layer)].shape[1:]))
            bound = 1.0 / math.sqrt(fan_in)
            w = np.empty(p.size, np.float32)
            for a in range(0, p.size, chunk):
                w[a:a + chunk] = rng.uniform(-bound, bound, min(chunk, p.size - a))
            self.set_param(i, w.reshape(p.shape))

    def _weight_of(self, layer: int) -> int:
        return next(i for i, p in enumerate(self.param_shapes) if p.layer == layer and p.prunable)

    # ---- batches -------------------------------------------------------------------------------------------
    def _x(self, x: np.ndarray) -> np.ndarray:
        """The batch as C-contiguous float32 (batch, in_size), copied only when it is not that already."""
        arr = np.asarray(x)
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"input must be real numbers (float32 preferably), got dtype {arr.dtype}")
        per_sample = arr.shape[1:]
        if arr.ndim < 2 or arr.shape[0] == 0 or per_sample not in (tuple(self.spec.input_shape), (self._in_size,)):
            raise ValueError(f"input must be (batch, {', '.join(map(str, self.spec.input_shape))}) or "
                             f"(batch, {self._in_size}) with batch >= 1; got shape {arr.shape}")
        if arr.shape[0] > _INT32_MAX:
            raise ValueError(f"batch of {arr.shape[0]} samples is too large for one call")
        return np.ascontiguousarray(arr, dtype=np.float32)

    def _y(self, y: np.ndarray, batch: int) -> np.ndarray:
        """Labels as C-contiguous int32 (batch,); their range against the classes is checked by the core."""
        arr = np.asarray(y)
        if arr.shape != (batch,):
            raise ValueError(f"labels must have shape ({batch},), got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {arr.dtype}")
        if arr.dtype.itemsize > 4 or arr.dtype == np.uint32:
            if arr.size and (arr.min() < -_INT32_MAX or arr.max() > _INT32_MAX):
                raise ValueError(f"labels outside the int32 range (min {arr.min()}, max {arr.max()})")
        return np.ascontiguousarray(arr, dtype=np.int32)

    @staticmethod
    def _batch_size(batch_size: int) -> int:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return int(batch_size)

    def forward_backward(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        xa = self._x(x)
        ya = self._y(y, xa.shape[0])
        loss, correct = self._n.ffi.new("float *"), self._n.ffi.new("int32_t *")
        self._call(self._n.lib.pf_net_forward_backward(self._h, self._ptr("float[]", xa),
                                                       self._ptr("int32_t[]", ya), xa.shape[0], loss, correct))
        self._last_batch = xa.shape[0]
        return StepResult(float(loss[0]), int(correct[0]))

    def _sgd(self, cfg: SGDConfig) -> Any:
        return self._n.ffi.new("pf_sgd_config *", {"lr": cfg.lr, "momentum": cfg.momentum,
                                                   "weight_decay": cfg.weight_decay})

    def sgd_step(self, cfg: SGDConfig) -> None:
        self._call(self._n.lib.pf_net_sgd_step(self._h, self._sgd(cfg)))

    def train_step(self, x: np.ndarray, y: np.ndarray, cfg: SGDConfig) -> StepResult:
        xa = self._x(x)
        ya = self._y(y, xa.shape[0])
        loss, correct = self._n.ffi.new("float *"), self._n.ffi.new("int32_t *")
        self._call(self._n.lib.pf_net_train_step(self._h, self._ptr("float[]", xa), self._ptr("int32_t[]", ya),
                                                 xa.shape[0], self._sgd(cfg), loss, correct))
        self._last_batch = xa.shape[0]  # input_grad() reads the gradient of this step's batch
        return StepResult(float(loss[0]), int(correct[0]))

    def logits(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        xa = self._x(x)
        batch_size = self._batch_size(batch_size)
        out = np.empty((xa.shape[0], self._num_classes), np.float32)
        for s in range(0, xa.shape[0], batch_size):
            xb, ob = xa[s: s + batch_size], out[s: s + batch_size]
            self._call(self._n.lib.pf_net_forward(self._h, self._ptr("float[]", xb), self._n.ffi.NULL,
                                                  xb.shape[0], self._ptr("float[]", ob), self._n.ffi.NULL,
                                                  self._n.ffi.NULL))
        return out

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> EvalResult:
        xa = self._x(x)
        ya = self._y(y, xa.shape[0])
        loss, correct = self._n.ffi.new("float *"), self._n.ffi.new("int32_t *")
        batch_size = self._batch_size(batch_size)
        total_loss, total_correct = 0.0, 0
        for s in range(0, xa.shape[0], batch_size):
            xb, yb = xa[s: s + batch_size], ya[s: s + batch_size]
            self._call(self._n.lib.pf_net_forward(self._h, self._ptr("float[]", xb), self._ptr("int32_t[]", yb),
                                                  xb.shape[0], self._n.ffi.NULL, loss, correct))
            total_loss += float(loss[0]) * xb.shape[0]
            total_correct += int(correct[0])
        n = xa.shape[0]
        return EvalResult(total_loss / n, total_correct / n, n)

    # ---- gradients ---------------------------------------------------------------------------------------------
    def grads(self) -> list[np.ndarray]:
        """Gradients of the last forward_backward (weights: zero at pruned positions)."""
        out = []
        for i, p in enumerate(self.param_shapes):
            g = np.empty(p.shape, np.float32)
            self._call(self._n.lib.pf_net_get_grad(self._h, i, self._ptr("float[]", g), g.size))
            out.append(g)
        return out

    def enable_input_grad(self, enabled: bool = True) -> None:
        self._call(self._n.lib.pf_net_set_input_grad(self._h, int(enabled)))

    def input_grad(self) -> np.ndarray:
        """d(loss)/d(input) of the last forward_backward, (batch, C, H, W) (needs enable_input_grad)."""
        g = np.empty((self._last_batch, *self.spec.input_shape), np.float32)
        self._call(self._n.lib.pf_net_get_input_grad(self._h, self._ptr("float[]", g), g.size))
        return g

    def set_importance(self, enabled: bool) -> None:
        """While on, every forward_backward adds the dense gradient of every parameter to its sum."""
        self._call(self._n.lib.pf_net_set_importance(self._h, int(enabled)))

    def grad_sums(self) -> list[np.ndarray]:
        out = []
        for i, p in enumerate(self.param_shapes):
            g = np.empty(p.shape, np.float32)
            self._call(self._n.lib.pf_net_get_grad_sum(self._h, i, self._ptr("float[]", g), g.size))
            out.append(g)
        return out

    def reset_grad_sums(self) -> None:
        self._call(self._n.lib.pf_net_reset_grad_sums(self._h))
