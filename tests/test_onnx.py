"""ONNX in and out: built-in model -> ONNX -> engine -> a few steps -> export -> onnxruntime agrees; a model
exported by torch.onnx.export imports with the same forward and gradients as PyTorch; unsupported graphs
fail before training, naming the node."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from prunefl_edge.engine import Network, SGDConfig
from prunefl_edge.models import build_model, conv2_spec, vgg11_spec
from prunefl_edge.onnx_export import export_onnx, to_onnx
from prunefl_edge.onnx_import import OnnxImportError, import_model, load_onnx


def run_ort(model: onnx.ModelProto | str, x: np.ndarray) -> np.ndarray:
    src = model if isinstance(model, str) else model.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_builtin_models_have_the_papers_sizes() -> None:
    assert import_model(build_model("conv2")).spec.num_parameters == 6_603_710
    assert conv2_spec(10).num_classes == 10
    vgg = import_model(build_model("vgg11", seed=1))
    assert vgg.spec.shapes() == vgg11_spec(10).shapes()
    assert vgg.spec.param_shapes() == vgg11_spec(10).param_shapes()
    a, b = build_model("mlp", seed=3), build_model("mlp", seed=3)
    assert a.SerializeToString() == b.SerializeToString(), "builders are deterministic from the seed"


@pytest.mark.parametrize("sparse_init", [False, True])
def test_round_trip_train_prune_export_onnxruntime(tmp_path: Path, sparse_init: bool) -> None:
    imported = import_model(build_model("conv2", num_classes=10, seed=0))
    net = Network(imported.spec, threads=2)
    net.set_weights(imported.weights)
    rng = np.random.default_rng(0)
    masks = {i: rng.random(net.param_shapes[i].shape) < 0.2 for i in net.weight_params}
    weights = net.get_weights()
    net.set_masks(masks)
    net.set_weights(weights)
    x = rng.random((20, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    for _ in range(3):
        net.train_step(x, y, SGDConfig(lr=0.05))
    path = export_onnx(imported.spec, net.get_weights(), tmp_path / "pruned.onnx", masks=masks, sparse=sparse_init)
    ours = net.logits(x)
    np.testing.assert_allclose(run_ort(str(path), x), ours, rtol=1e-4, atol=1e-4)
    back = load_onnx(path)
    assert set(back.masks) == set(masks)
    for i, m in masks.items():
        assert np.all(back.masks[i] <= m), "exported zeros are pruned"
    if sparse_init:
        dense_size = (tmp_path / "dense.onnx")
        export_onnx(imported.spec, net.get_weights(), dense_size, masks=masks)
        # 4-byte values + 8-byte indices at density 0.2: 2.4 bytes per weight against 4
        assert path.stat().st_size < 0.7 * dense_size.stat().st_size


def test_torch_exported_model_imports_with_same_forward_and_gradients(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 6, 3, stride=2),
        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(6 * 3 * 3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5))
    x = torch.rand(7, 1, 14, 14)
    path = tmp_path / "torch.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    imported = load_onnx(path)
    net = Network(imported.spec)
    net.set_weights(imported.weights)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1])
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    loss.backward()
    np.testing.assert_allclose(net.logits(x.numpy()), logits.detach().numpy(), rtol=1e-4, atol=1e-5)
    res = net.forward_backward(x.numpy(), y.numpy())
    assert res.loss == pytest.approx(loss.item(), rel=1e-5)
    for g, p in zip(net.grads(), model.parameters()):
        np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-4, atol=1e-6)


def _graph(nodes: list[onnx.NodeProto], inits: list[TensorProto], in_shape: list[object]) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, ["N"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _w(name: str, shape: tuple[int, ...]) -> TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, shape, np.ones(shape, np.float32).ravel().tolist())


@pytest.mark.parametrize("node,inits,match", [
    (helper.make_node("Conv", ["input", "w"], ["y"], name="dil", dilations=[2, 2]), [_w("w", (2, 1, 3, 3))],
     "node dil \\(Conv\\): dilations"),
    (helper.make_node("Conv", ["input", "w"], ["y"], name="grp", group=1, pads=[1, 0, 0, 1]), [_w("w", (2, 1, 3, 3))],
     "node grp \\(Conv\\): asymmetric padding"),
    (helper.make_node("Sigmoid", ["input"], ["y"], name="sig"), [], "node sig \\(Sigmoid\\): operator Sigmoid is not"),
    (helper.make_node("MaxPool", ["input"], ["y"], name="ceil", kernel_shape=[2, 2], ceil_mode=1), [],
     "node ceil \\(MaxPool\\): ceil_mode"),
    (helper.make_node("Gemm", ["input", "w"], ["y"], name="fc"), [_w("w", (36, 3))],
     "node fc \\(Gemm\\): input \\(1, 6, 6\\) is not flat"),
])
def test_unsupported_graphs_name_the_node(node: onnx.NodeProto, inits: list[TensorProto], match: str) -> None:
    with pytest.raises(OnnxImportError, match=match):
        import_model(_graph([node], inits, ["N", 1, 6, 6]))


def test_grouped_conv_is_rejected() -> None:
    node = helper.make_node("Conv", ["input", "w"], ["y"], name="dw", group=2)
    with pytest.raises(OnnxImportError, match="group=2"):
        import_model(_graph([node], [_w("w", (2, 1, 3, 3))], ["N", 2, 6, 6]))


def test_corrupt_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xfe" * 10)
    with pytest.raises(OnnxImportError, match="bad.onnx"):
        load_onnx(bad)
    with pytest.raises(OnnxImportError, match="no such file"):
        load_onnx(tmp_path / "missing.onnx")


def test_export_rejects_wrong_shapes() -> None:
    spec = conv2_spec(10)
    with pytest.raises(ValueError, match="parameters"):
        to_onnx(spec, [np.zeros(3, np.float32)])
