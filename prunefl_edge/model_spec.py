"""The layer list a network is built from: plain, immutable descriptions with no weights.

A :class:`ModelSpec` is what the ONNX importer produces, what the built-in model builders describe, and what
:class:`prunefl_edge.engine.Network` turns into a C-core network. Shapes are per sample, ``(C, H, W)``;
a flat vector of ``n`` features is ``(n, 1, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


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
