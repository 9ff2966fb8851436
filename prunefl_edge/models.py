"""Built-in models as ONNX builders, so that every model enters the engine the same way (through
:mod:`prunefl_edge.onnx_import`). Deterministic from a seed; initialised like PyTorch's defaults
(weights and biases uniform in +-1/sqrt(fan_in))."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx

from prunefl_common.model_spec import Conv2d, Flatten, Layer, Linear, MaxPool2d, ModelSpec, ReLU
from prunefl_edge.onnx_export import to_onnx


def init_weights(spec: ModelSpec, seed: int) -> list[np.ndarray]:
    """PyTorch-default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    fan_in = 1
    for p in spec.param_shapes():
        if p.prunable:
            fan_in = int(np.prod(p.shape[1:]))
        bound = 1.0 / np.sqrt(fan_in)
        out.append(rng.uniform(-bound, bound, p.shape).astype(np.float32))
    return out


def conv2_spec(num_classes: int = 62) -> ModelSpec:
    """PruneFL's Conv-2 for FEMNIST: 6,603,710 parameters with 62 classes."""
    return ModelSpec(
        (1, 28, 28),
        (Conv2d(32, (5, 5), padding=(2, 2)), ReLU(), MaxPool2d((2, 2)), Conv2d(64, (5, 5), padding=(2, 2)), ReLU(),
         MaxPool2d((2, 2)), Flatten(), Linear(2048), ReLU(), Linear(num_classes)),
        name="conv2",
        layer_names=("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"),
    )


def mlp_spec(input_shape: tuple[int, int, int] = (1, 28, 28), hidden: Sequence[int] = (200, 200),
             num_classes: int = 10) -> ModelSpec:
    layers: list[Layer] = [Flatten()]
    names = ["flatten"]
    for k, h in enumerate(hidden, start=1):
        layers += [Linear(h), ReLU()]
        names += [f"fc{k}", f"relu{k}"]
    layers.append(Linear(num_classes))
    names.append(f"fc{len(hidden) + 1}")
    return ModelSpec(tuple(input_shape), tuple(layers), name="mlp", layer_names=tuple(names))  # type: ignore[arg-type]


VGG11_CFG = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def vgg11_spec(num_classes: int = 10) -> ModelSpec:
    """PruneFL's CIFAR-10 VGG-11: the VGG-11 convolutions (3x3, padding 1) without batch-norm, 512-512 head."""
    layers: list[Layer] = []
    names: list[str] = []
    conv = pool = 0
    for v in VGG11_CFG:
        if v == "M":
            pool += 1
            layers.append(MaxPool2d((2, 2)))
            names.append(f"pool{pool}")
        else:
            conv += 1
            layers += [Conv2d(int(v), (3, 3), padding=(1, 1)), ReLU()]
            names += [f"conv{conv}", f"relu_c{conv}"]
    layers += [Flatten(), Linear(512), ReLU(), Linear(512), ReLU(), Linear(num_classes)]
    names += ["flatten", "fc1", "relu_f1", "fc2", "relu_f2", "fc3"]
    return ModelSpec((3, 32, 32), tuple(layers), name="vgg11", layer_names=tuple(names))


def conv2(num_classes: int = 62, seed: int = 0) -> onnx.ModelProto:
    spec = conv2_spec(num_classes)
    return to_onnx(spec, init_weights(spec, seed), doc="PruneFL Conv-2 (FEMNIST)")


def mlp(input_shape: tuple[int, int, int] = (1, 28, 28), hidden: Sequence[int] = (200, 200), num_classes: int = 10,
        seed: int = 0) -> onnx.ModelProto:
    spec = mlp_spec(input_shape, hidden, num_classes)
    return to_onnx(spec, init_weights(spec, seed), doc="multi-layer perceptron")


def vgg11(num_classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    spec = vgg11_spec(num_classes)
    return to_onnx(spec, init_weights(spec, seed), doc="PruneFL VGG-11 (CIFAR-10), no batch-norm")


BUILDERS: dict[str, Callable[..., onnx.ModelProto]] = {"conv2": conv2, "mlp": mlp, "vgg11": vgg11}


def build_model(name: str, num_classes: int | None = None, input_shape: tuple[int, int, int] | None = None,
                seed: int = 0) -> onnx.ModelProto:
    """A built-in model by name; ``input_shape`` applies to ``mlp`` (conv2 is 28x28x1, vgg11 32x32x3)."""
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}: built-in models are {', '.join(BUILDERS)}")
    kw: dict[str, object] = {"seed": seed}
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if name == "mlp" and input_shape is not None:
        kw["input_shape"] = tuple(input_shape)
    elif name == "conv2" and input_shape is not None and tuple(input_shape) != (1, 28, 28):
        raise ValueError(f"conv2 takes 1x28x28 inputs, the data set has {tuple(input_shape)}")
    elif name == "vgg11" and input_shape is not None and tuple(input_shape) != (3, 32, 32):
        raise ValueError(f"vgg11 takes 3x32x32 inputs, the data set has {tuple(input_shape)}")
    return BUILDERS[name](**kw)
