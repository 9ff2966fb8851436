"""ONNX in: a feed-forward ONNX graph becomes a :class:`ModelSpec` and its initial weights.

Supported: Conv (2-D, group 1, dilation 1, explicit or VALID/SAME padding when symmetric), Gemm (alpha = beta = 1,
transA = 0, transB either way), MatMul followed by Add of a bias, Relu, MaxPool (2-D, ceil_mode 0, dilation 1,
symmetric padding), Flatten, Reshape to (batch, -1), and Identity/Dropout (inference no-ops). Anything else is an
:class:`OnnxImportError` naming the node, before any training starts.

Weights come out in the C core's parameter order (per layer: weight then bias), linear weights as
(out, in), conv weights as (out_c, in_c, kh, kw): the ONNX and PyTorch layouts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from prunefl_common.model_spec import Conv2d, Flatten, Layer, Linear, MaxPool2d, ModelSpec, ModelSpecError, ReLU

log = logging.getLogger(__name__)

MAX_MODEL_BYTES = 2 * 1024**3  # protobuf's own limit
PRUNED_KEY = "prunefl.pruned"  # metadata of a model exported pruned: its zero weights are its mask


class OnnxImportError(ValueError):
    """The model cannot run on the C core; the message names the node and the problem."""


@dataclass(frozen=True)
class ImportedModel:
    spec: ModelSpec
    weights: list[np.ndarray]  # C-core parameter order
    masks: dict[int, np.ndarray]  # parameter index -> kept; from the zeros of a model our exporter marked pruned


def load_onnx(path: str | Path) -> ImportedModel:
    """Read, check and import an ONNX file."""
    p = Path(path)
    if not p.is_file():
        raise OnnxImportError(f"{p}: no such file")
    if p.stat().st_size > MAX_MODEL_BYTES:
        raise OnnxImportError(f"{p}: larger than 2 GiB, which ONNX protobuf files cannot be")
    try:
        model = onnx.load_model(str(p), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends: any failure means "not ONNX"
        raise OnnxImportError(f"{p}: not a readable ONNX model ({type(exc).__name__}: {exc})") from exc
    return import_model(model, source=str(p))


def import_model(model: onnx.ModelProto, source: str = "model") -> ImportedModel:
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise OnnxImportError(f"{source}: invalid ONNX: {str(exc).splitlines()[0]}") from exc
    return _Importer(model, source).run()


def _attrs(node: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _pair(values: object, name: str, where: str) -> tuple[int, int]:
    v = [int(x) for x in values]  # type: ignore[union-attr]
    if len(v) != 2:
        raise OnnxImportError(f"{where}: {name} {v} is not 2-D")
    return v[0], v[1]


class _Importer:
    def __init__(self, model: onnx.ModelProto, source: str) -> None:
        self.g = model.graph
        self.source = source
        self.inits = {t.name: t for t in self.g.initializer}
        self.sparse = {s.values.name: s for s in self.g.sparse_initializer}
        self.layers: list[Layer] = []
        self.names: list[str] = []
        self.weights: list[np.ndarray] = []
        self.shape: tuple[int, int, int] = (0, 0, 0)
        props = {p.key: p.value for p in model.metadata_props}
        self.pruned = props.get(PRUNED_KEY) == "true"

    def where(self, node: onnx.NodeProto) -> str:
        return f"{self.source}: node {node.name or '(unnamed)'} ({node.op_type})"

    def const(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        if name in self.sparse:
            sp = self.sparse[name]
            values = numpy_helper.to_array(sp.values)
            idx = numpy_helper.to_array(sp.indices)
            dense = np.zeros(int(np.prod(sp.dims)), values.dtype)
            flat = idx if idx.ndim == 1 else np.ravel_multi_index(idx.T, tuple(sp.dims))
            dense[flat] = values
            return dense.reshape(tuple(sp.dims))
        raise OnnxImportError(f"{self.where(node)}: input {name!r} must be an initializer (a constant weight)")

    def input_shape(self) -> tuple[int, int, int]:
        graph_inputs = [i for i in self.g.input if i.name not in self.inits and i.name not in self.sparse]
        if len(graph_inputs) != 1:
            raise OnnxImportError(f"{self.source}: expected one data input, found {[i.name for i in graph_inputs]}")
        t = graph_inputs[0].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if t.elem_type != onnx.TensorProto.FLOAT:
            raise OnnxImportError(f"{self.source}: input {graph_inputs[0].name} must be float32")
        if len(dims) == 2 and dims[1]:
            return (int(dims[1]), 1, 1)
        if len(dims) == 4 and all(dims[1:]):
            return (int(dims[1]), int(dims[2]), int(dims[3]))
        raise OnnxImportError(f"{self.source}: input shape {dims} must be (batch, C, H, W) or (batch, features) "
                              "with every dimension but the batch fixed")

    def add(self, layer: Layer, node: onnx.NodeProto, params: list[np.ndarray] = ()) -> None:  # type: ignore[assignment]
        self.layers.append(layer)
        self.names.append(node.name or f"{node.op_type.lower()}{len(self.layers)}")
        self.weights.extend(np.ascontiguousarray(p, dtype=np.float32) for p in params)
        try:
            self.shape = ModelSpec(self.shape0, tuple(self.layers)).shapes()[-1]
        except ModelSpecError as exc:
            raise OnnxImportError(f"{self.where(node)}: {exc}") from exc

    def padding(self, node: onnx.NodeProto, a: dict[str, object], kernel: tuple[int, int],
                stride: tuple[int, int]) -> tuple[int, int]:
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else str(auto)
        if auto in ("NOTSET", ""):
            pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]  # type: ignore[union-attr]
            if len(pads) != 4 or pads[0] != pads[2] or pads[1] != pads[3]:
                raise OnnxImportError(f"{self.where(node)}: asymmetric padding {pads} is not supported")
            return pads[0], pads[1]
        if auto == "VALID":
            return 0, 0
        if auto in ("SAME_UPPER", "SAME_LOWER") and stride == (1, 1) and kernel[0] % 2 and kernel[1] % 2:
            return kernel[0] // 2, kernel[1] // 2
        raise OnnxImportError(f"{self.where(node)}: auto_pad={auto} with kernel {kernel} stride {stride} is not "
                              "supported; export with explicit symmetric pads")

    def conv(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        w = self.const(node.input[1], node)
        if w.ndim != 4:
            raise OnnxImportError(f"{self.where(node)}: only 2-D convolutions are supported (weight {w.shape})")
        if int(a.get("group", 1)) != 1:  # type: ignore[arg-type]
            raise OnnxImportError(f"{self.where(node)}: group={a['group']} (grouped/depthwise) is not supported")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):  # type: ignore[union-attr]
            raise OnnxImportError(f"{self.where(node)}: dilations {a['dilations']} are not supported")
        if w.shape[1] != self.shape[0]:
            raise OnnxImportError(f"{self.where(node)}: weight expects {w.shape[1]} input channels, "
                                  f"the data has {self.shape[0]}")
        kernel = (int(w.shape[2]), int(w.shape[3]))
        if "kernel_shape" in a and _pair(a["kernel_shape"], "kernel_shape", self.where(node)) != kernel:
            raise OnnxImportError(f"{self.where(node)}: kernel_shape {a['kernel_shape']} != weight {kernel}")
        stride = _pair(a.get("strides", [1, 1]), "strides", self.where(node))
        pad = self.padding(node, a, kernel, stride)
        params = [w]
        if len(node.input) > 2 and node.input[2]:
            params.append(self.const(node.input[2], node).reshape(-1))
        self.add(Conv2d(int(w.shape[0]), kernel, stride, pad, bias=len(params) == 2), node, params)

    def linear(self, node: onnx.NodeProto, w_out_in: np.ndarray, bias: np.ndarray | None) -> None:
        if self.shape[1:] != (1, 1):
            raise OnnxImportError(f"{self.where(node)}: input {self.shape} is not flat; add Flatten before it")
        if w_out_in.shape[1] != self.shape[0]:
            raise OnnxImportError(f"{self.where(node)}: weight takes {w_out_in.shape[1]} features, "
                                  f"the data has {self.shape[0]}")
        params = [w_out_in] + ([bias.reshape(-1)] if bias is not None else [])
        if bias is not None and bias.size != w_out_in.shape[0]:
            raise OnnxImportError(f"{self.where(node)}: bias of {bias.size} values for {w_out_in.shape[0]} outputs")
        self.add(Linear(int(w_out_in.shape[0]), bias=bias is not None), node, params)

    def gemm(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if float(a.get("alpha", 1.0)) != 1.0 or float(a.get("beta", 1.0)) != 1.0:  # type: ignore[arg-type]
            raise OnnxImportError(f"{self.where(node)}: alpha/beta other than 1 are not supported")
        if int(a.get("transA", 0)):  # type: ignore[arg-type]
            raise OnnxImportError(f"{self.where(node)}: transA=1 is not supported")
        w = self.const(node.input[1], node)
        w = w if int(a.get("transB", 0)) else w.T  # type: ignore[arg-type]
        bias = self.const(node.input[2], node) if len(node.input) > 2 and node.input[2] else None
        self.linear(node, w, bias)

    def pool(self, node: onnx.NodeProto) -> None:
        a = _attrs(node)
        if int(a.get("ceil_mode", 0)):  # type: ignore[arg-type]
            raise OnnxImportError(f"{self.where(node)}: ceil_mode=1 is not supported")
        if any(int(d) != 1 for d in a.get("dilations", [1, 1])):  # type: ignore[union-attr]
            raise OnnxImportError(f"{self.where(node)}: dilations are not supported")
        if int(a.get("storage_order", 0)) or len(node.output) > 1:  # type: ignore[arg-type]
            raise OnnxImportError(f"{self.where(node)}: the Indices output is not supported")
        kernel = _pair(a["kernel_shape"], "kernel_shape", self.where(node))
        stride = _pair(a.get("strides", [1, 1]), "strides", self.where(node))
        self.add(MaxPool2d(kernel, stride, self.padding(node, a, kernel, stride)), node)

    def run(self) -> ImportedModel:
        self.shape0 = self.shape = self.input_shape()
        nodes = list(self.g.node)
        # the data flows through a chain: each node's first input is the previous node's output
        data_input = next(i.name for i in self.g.input if i.name not in self.inits and i.name not in self.sparse)
        current = data_input
        consts: dict[str, np.ndarray] = {}
        i = 0
        while i < len(nodes):
            node = nodes[i]
            op = node.op_type
            if node.domain not in ("", "ai.onnx"):
                raise OnnxImportError(f"{self.where(node)}: operator domain {node.domain!r} is not supported")
            if op == "Constant":
                consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])  # type: ignore[arg-type]
                i += 1
                continue
            if not node.input or node.input[0] != current:
                raise OnnxImportError(f"{self.where(node)}: the graph is not a chain (input {list(node.input)}, "
                                      f"expected {current!r}); only feed-forward sequences are supported")
            if op == "Conv":
                self.conv(node)
            elif op == "Gemm":
                self.gemm(node)
            elif op == "MatMul":
                w = self.const(node.input[1], node)
                nxt = nodes[i + 1] if i + 1 < len(nodes) else None
                bias = None
                if nxt is not None and nxt.op_type == "Add" and node.output[0] in nxt.input:
                    other = [n for n in nxt.input if n != node.output[0]][0]
                    bias = self.const(other, nxt)
                    node_out = nxt.output[0]
                    i += 1
                else:
                    node_out = node.output[0]
                self.linear(node, np.asarray(w).T, bias)
                current = node_out
                i += 1
                continue
            elif op == "Relu":
                self.add(ReLU(), node)
            elif op == "MaxPool":
                self.pool(node)
            elif op == "Flatten":
                if int(_attrs(node).get("axis", 1)) != 1:  # type: ignore[arg-type]
                    raise OnnxImportError(f"{self.where(node)}: only axis=1 is supported")
                self.add(Flatten(), node)
            elif op == "Reshape":
                target = consts.get(node.input[1])
                if target is None:
                    target = self.const(node.input[1], node)
                t = [int(v) for v in np.asarray(target).ravel()]
                flat = int(np.prod(self.shape))
                if len(t) != 2 or t[1] not in (-1, flat) or t[0] not in (0, -1, 1):
                    raise OnnxImportError(f"{self.where(node)}: only a reshape to (batch, -1) is supported, got {t}")
                self.add(Flatten(), node)
            elif op in ("Identity", "Dropout"):
                pass
            else:
                raise OnnxImportError(f"{self.where(node)}: operator {op} is not supported (supported: Conv, Gemm, "
                                      "MatMul+Add, Relu, MaxPool, Flatten, Reshape)")
            current = node.output[0]
            i += 1
        outputs = [o.name for o in self.g.output]
        if outputs != [current]:
            raise OnnxImportError(f"{self.source}: graph output {outputs} is not the end of the chain ({current})")
        if not self.layers:
            raise OnnxImportError(f"{self.source}: the graph has no layers")
        name = self.g.name or "onnx"
        spec = ModelSpec(self.shape0, tuple(self.layers), name=name, layer_names=tuple(self.names))
        for p, w in zip(spec.param_shapes(), self.weights):
            if tuple(w.shape) != p.shape:
                raise OnnxImportError(f"{self.source}: parameter {p.name} has shape {w.shape}, expected {p.shape}")
            if not np.all(np.isfinite(w)):
                raise OnnxImportError(f"{self.source}: parameter {p.name} holds NaN or Inf")
        masks = {i: w != 0 for i, (p, w) in enumerate(zip(spec.param_shapes(), self.weights)) if p.prunable} \
            if self.pruned else {}
        log.info("imported %s: %d layers, %d parameters", name, len(self.layers), spec.num_parameters)
        return ImportedModel(spec, self.weights, masks)
