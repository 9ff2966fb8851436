"""The layer list a network is built from: plain, immutable descriptions with no weights.

A :class:`ModelSpec` is what the ONNX importer produces, what the built-in model builders describe, and what
:class:`prunefl_edge.engine.Network` turns into a C-core network. Shapes are per sample, ``(C, H, W)``;
a flat vector of ``n`` features is ``(n, 1, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ModelSpecError(ValueError):
    """A layer list that cannot describe a network (bad sizes, wrong order)."""


@dataclass(frozen=True)
class Linear:
    out_features: int
    bias: bool = True


@dataclass(frozen=True)
class Conv2d:
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    bias: bool = True


@dataclass(frozen=True)
class MaxPool2d:
    kernel_size: tuple[int, int]
    stride: tuple[int, int] | None = None  # None: same as kernel_size (PyTorch and ONNX default)
    padding: tuple[int, int] = (0, 0)

    @property
    def effective_stride(self) -> tuple[int, int]:
        return self.stride if self.stride is not None else self.kernel_size


@dataclass(frozen=True)
class ReLU:
    pass


@dataclass(frozen=True)
class Flatten:
    pass


Layer = Linear | Conv2d | MaxPool2d | ReLU | Flatten


@dataclass(frozen=True)
class ParamShape:
    """One parameter tensor of a spec: name (``"<layer index>.weight"``/``".bias"``), shape, prunable."""

    name: str
    layer: int
    shape: tuple[int, ...]
    prunable: bool

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ModelSpec:
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]
    name: str = "model"
    layer_names: tuple[str, ...] = field(default=())  # optional, e.g. ONNX node names; defaults to indices

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or any(int(d) <= 0 for d in self.input_shape):
            raise ModelSpecError(f"input_shape must be three positive ints (C, H, W), got {self.input_shape}")
        if not self.layers:
            raise ModelSpecError("a model needs at least one layer")
        if self.layer_names and len(self.layer_names) != len(self.layers):
            raise ModelSpecError("layer_names must name every layer")
        self.shapes()  # validates the shape flow

    def layer_name(self, i: int) -> str:
        return self.layer_names[i] if self.layer_names else str(i)

    def shapes(self) -> list[tuple[int, int, int]]:
        """Per-sample shape after each layer (index 0 is the input)."""
        shape = tuple(int(d) for d in self.input_shape)
        out: list[tuple[int, int, int]] = [shape]  # type: ignore[list-item]
        for i, layer in enumerate(self.layers):
            c, h, w = shape
            where = f"layer {i} ({self.layer_name(i)}, {type(layer).__name__})"
            if isinstance(layer, Linear):
                if h != 1 or w != 1:
                    raise ModelSpecError(f"{where}: input {shape} is not flat; add Flatten before it")
                if layer.out_features <= 0:
                    raise ModelSpecError(f"{where}: out_features must be positive")
                shape = (layer.out_features, 1, 1)
            elif isinstance(layer, Conv2d):
                (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
                if min(kh, kw, sh, sw, layer.out_channels) <= 0 or min(ph, pw) < 0:
                    raise ModelSpecError(f"{where}: kernel, stride and channels must be positive, padding >= 0")
                oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
                if oh <= 0 or ow <= 0:
                    raise ModelSpecError(f"{where}: kernel {layer.kernel_size} larger than padded input {shape}")
                shape = (layer.out_channels, oh, ow)
            elif isinstance(layer, MaxPool2d):
                (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.effective_stride, layer.padding
                if min(kh, kw, sh, sw) <= 0 or min(ph, pw) < 0 or ph > kh // 2 or pw > kw // 2:
                    raise ModelSpecError(f"{where}: kernel/stride must be positive and padding <= kernel/2")
                oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
                if oh <= 0 or ow <= 0:
                    raise ModelSpecError(f"{where}: window {layer.kernel_size} larger than input {shape}")
                shape = (c, oh, ow)
            elif isinstance(layer, Flatten):
                shape = (c * h * w, 1, 1)
            elif isinstance(layer, ReLU):
                pass
            else:
                raise ModelSpecError(f"{where}: unknown layer type")
            out.append(shape)
        return out

    @property
    def num_classes(self) -> int:
        c, h, w = self.shapes()[-1]
        return c * h * w

    def param_shapes(self) -> list[ParamShape]:
        """Parameter tensors in the C core's order: per layer, weight then bias."""
        params: list[ParamShape] = []
        shapes = self.shapes()
        for i, layer in enumerate(self.layers):
            c_in = shapes[i][0]
            if isinstance(layer, Linear):
                params.append(ParamShape(f"{i}.weight", i, (layer.out_features, c_in), True))
                if layer.bias:
                    params.append(ParamShape(f"{i}.bias", i, (layer.out_features,), False))
            elif isinstance(layer, Conv2d):
                kh, kw = layer.kernel_size
                params.append(ParamShape(f"{i}.weight", i, (layer.out_channels, c_in, kh, kw), True))
                if layer.bias:
                    params.append(ParamShape(f"{i}.bias", i, (layer.out_channels,), False))
        return params

    @property
    def num_parameters(self) -> int:
        return sum(p.size for p in self.param_shapes())

    def prunable_layers(self) -> list[int]:
        return [i for i, layer in enumerate(self.layers) if isinstance(layer, (Linear, Conv2d))]


# ---- JSON form (the model a task names on the wire) ----------------------------------------------------------
_KINDS: dict[str, type] = {"linear": Linear, "conv2d": Conv2d, "maxpool2d": MaxPool2d, "relu": ReLU, "flatten": Flatten}
_PAIRS = ("kernel_size", "stride", "padding")


def spec_to_dict(spec: ModelSpec) -> dict[str, Any]:
    """A JSON-ready description; :func:`spec_from_dict` gives an equal spec back."""
    layers = []
    for layer in spec.layers:
        kind = next(k for k, t in _KINDS.items() if isinstance(layer, t))
        d: dict[str, Any] = {"type": kind}
        for name, value in vars(layer).items():
            d[name] = list(value) if isinstance(value, tuple) else value
        layers.append(d)
    return {"input_shape": [int(v) for v in spec.input_shape], "name": spec.name, "layers": layers,
            "layer_names": list(spec.layer_names)}


def _pos_int(v: object, what: str, lo: int = 1) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= 1 << 20:
        raise ModelSpecError(f"{what} must be an integer in {lo}..{1 << 20}, got {v!r}")
    return v


def spec_from_dict(d: Any) -> ModelSpec:
    """The spec of :func:`spec_to_dict`'s form, checked strictly (it arrives from the network): ModelSpecError
    on anything else."""
    if not isinstance(d, dict) or set(d) - {"input_shape", "name", "layers", "layer_names"}:
        raise ModelSpecError("a model description is an object with input_shape, name, layers (and layer_names)")
    shape, layers, name = d.get("input_shape"), d.get("layers"), d.get("name", "model")
    if not isinstance(shape, list) or len(shape) != 3:
        raise ModelSpecError("input_shape must be a list of three positive integers")
    if not isinstance(layers, list) or not 1 <= len(layers) <= 64:
        raise ModelSpecError("layers must be a list of 1 to 64 layers")
    if not isinstance(name, str) or len(name) > 128:
        raise ModelSpecError("name must be a string of at most 128 characters")
    names = d.get("layer_names", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and len(n) <= 256 for n in names):
        raise ModelSpecError("layer_names must be a list of strings")
    out: list[Layer] = []
    for i, ld in enumerate(layers):
        if not isinstance(ld, dict) or not isinstance(ld.get("type"), str) or ld["type"] not in _KINDS:
            raise ModelSpecError(f"layer {i}: type must be one of {', '.join(_KINDS)}")
        cls = _KINDS[ld["type"]]
        allowed = set(cls.__dataclass_fields__)
        extra = set(ld) - allowed - {"type"}
        if extra:
            raise ModelSpecError(f"layer {i} ({ld['type']}): unknown fields {sorted(map(repr, extra))}")
        kw: dict[str, object] = {}
        for f in allowed:
            if f not in ld:
                continue
            v = ld[f]
            if f == "bias":
                if not isinstance(v, bool):
                    raise ModelSpecError(f"layer {i}: bias must be true or false")
                kw[f] = v
            elif f in _PAIRS:
                if v is None and f == "stride" and cls is MaxPool2d:
                    kw[f] = None
                    continue
                if not isinstance(v, list) or len(v) != 2:
                    raise ModelSpecError(f"layer {i}: {f} must be a pair of integers")
                kw[f] = tuple(_pos_int(x, f"layer {i} {f}", 0 if f == "padding" else 1) for x in v)
            else:
                kw[f] = _pos_int(v, f"layer {i} {f}")
        try:
            out.append(cls(**kw))
        except TypeError as e:
            raise ModelSpecError(f"layer {i} ({ld['type']}): {e}") from None
    return ModelSpec(tuple(_pos_int(v, "input_shape") for v in shape), tuple(out), name, tuple(names))
