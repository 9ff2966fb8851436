"""ONNX out: a (pruned) model as an ONNX graph that any runtime can execute.

Dense initializers hold the weights with zeros at pruned positions; with ``sparse=True`` the pruned weights
are stored as ONNX ``sparse_initializer``s instead (float32 values at kept positions plus their int64 flat
indices: 12 bytes per kept weight, so smaller than dense below a density of 1/3). The batch dimension is
symbolic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from prunefl_common.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU
from prunefl_edge.onnx_import import PRUNED_KEY

DEFAULT_OPSET = 17


def to_onnx(spec: ModelSpec, weights: Sequence[np.ndarray], masks: Mapping[int, np.ndarray] | None = None,
            sparse: bool = False, opset: int = DEFAULT_OPSET, doc: str = "") -> onnx.ModelProto:
    """The model as ONNX. ``masks`` (parameter index -> kept) zero the pruned weights and mark the model pruned."""
    params = spec.param_shapes()
    if len(weights) != len(params):
        raise ValueError(f"{spec.name}: {len(weights)} weight arrays for {len(params)} parameters")
    masks = dict(masks or {})
    values: list[np.ndarray] = []
    for i, (p, w) in enumerate(zip(params, weights)):
        arr = np.asarray(w, np.float32)
        if arr.shape != p.shape:
            raise ValueError(f"{spec.name}: parameter {p.name} has shape {arr.shape}, expected {p.shape}")
        if i in masks:
            arr = np.where(np.asarray(masks[i], bool), arr, np.float32(0))
        values.append(arr)

    inits: list[TensorProto] = []
    sparse_inits: list[onnx.SparseTensorProto] = []
    nodes: list[onnx.NodeProto] = []
    it = iter(enumerate(values))

    def tensor(name: str) -> str:
        i, arr = next(it)
        if sparse and params[i].prunable:
            flat = arr.ravel()
            idx = np.flatnonzero(flat).astype(np.int64)
            sparse_inits.append(helper.make_sparse_tensor(numpy_helper.from_array(flat[idx], name),
                                                          numpy_helper.from_array(idx, name + "_indices"),
                                                          list(arr.shape)))
        else:
            inits.append(numpy_helper.from_array(arr, name))
        return name

    current = "input"
    for li, layer in enumerate(spec.layers):
        name = spec.layer_name(li)
        out = f"{name}_out" if li < len(spec.layers) - 1 else "logits"
        if isinstance(layer, Conv2d):
            inputs = [current, tensor(f"{name}.weight")] + ([tensor(f"{name}.bias")] if layer.bias else [])
            ph, pw = layer.padding
            nodes.append(helper.make_node("Conv", inputs, [out], name=name, kernel_shape=list(layer.kernel_size),
                                          strides=list(layer.stride), pads=[ph, pw, ph, pw]))
        elif isinstance(layer, Linear):
            inputs = [current, tensor(f"{name}.weight")] + ([tensor(f"{name}.bias")] if layer.bias else [])
            nodes.append(helper.make_node("Gemm", inputs, [out], name=name, transB=1))
        elif isinstance(layer, MaxPool2d):
            ph, pw = layer.padding
            nodes.append(helper.make_node("MaxPool", [current], [out], name=name, kernel_shape=list(layer.kernel_size),
                                          strides=list(layer.effective_stride), pads=[ph, pw, ph, pw]))
        elif isinstance(layer, ReLU):
            nodes.append(helper.make_node("Relu", [current], [out], name=name))
        elif isinstance(layer, Flatten):
            nodes.append(helper.make_node("Flatten", [current], [out], name=name, axis=1))
        current = out

    c, h, w = spec.input_shape
    in_dims: list[object] = ["batch", c, h, w] if (h, w) != (1, 1) or not isinstance(spec.layers[0], Linear) \
        else ["batch", c]
    graph = helper.make_graph(
        nodes, spec.name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_dims)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", spec.num_classes])],
        initializer=inits, sparse_initializer=sparse_inits,
    )
    model = helper.make_model(graph, producer_name="prunefl-edge", opset_imports=[helper.make_opsetid("", opset)],
                              doc_string=doc)
    model.ir_version = min(model.ir_version, 9)  # readable by the onnxruntime releases of the last two years
    kept = sum(int(np.count_nonzero(values[i])) for i in masks)
    total = sum(values[i].size for i in masks)
    props = {PRUNED_KEY: "true" if masks else "false"}
    if masks:
        props["prunefl.density"] = f"{kept / total:.6f}"
    helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    return model


def export_onnx(spec: ModelSpec, weights: Sequence[np.ndarray], path: str | Path,
                masks: Mapping[int, np.ndarray] | None = None, sparse: bool = False) -> Path:
    """Write the model to ``path`` atomically (a temporary file renamed into place)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    onnx.save_model(to_onnx(spec, weights, masks, sparse), str(tmp))
    tmp.replace(p)
    return p
