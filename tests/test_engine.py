"""The binding's contract: C errors become EngineError with the C message; parameters and masks round-trip;
bad shapes and types are caught in Python with a clear message; the build reports its kernels."""

from __future__ import annotations

import numpy as np
import pytest

from prunefl_common.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU
from prunefl_edge.engine import EngineError, Network, SGDConfig, build_info

SPEC = ModelSpec((2, 6, 6), (Conv2d(3, (3, 3), padding=(1, 1)), ReLU(), MaxPool2d((2, 2)), Flatten(), Linear(4)))


@pytest.fixture
def net() -> Network:
    n = Network(SPEC, threads=2)
    n.init_weights(0)
    return n


def data(n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 2, 6, 6), dtype=np.float32), rng.integers(0, 4, n)


def test_build_info_names_kernels_and_gemm() -> None:
    info = build_info()
    assert "isa" in info and "gemm" in info


def test_weights_and_masks_round_trip(net: Network) -> None:
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(p.shape).astype(np.float32) for p in net.param_shapes]
    net.set_weights(weights)
    for got, want in zip(net.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    masks = {i: rng.random(net.param_shapes[i].shape) < 0.4 for i in net.weight_params}
    net.set_masks(masks)
    for i, m in net.get_masks().items():
        np.testing.assert_array_equal(m, masks[i])
        assert np.all(net.get_param(i)[~m] == 0)
        np.testing.assert_array_equal(net.get_param(i)[m], weights[i][m])  # kept weights keep their values
    net.set_masks({i: ~m for i, m in masks.items()})  # every kept weight pruned, every pruned one regrown
    for i in net.weight_params:
        assert np.all(net.get_param(i) == 0), "regrown weights start at zero"
    net.set_masks(masks)
    net.set_weights(weights)
    for i, m in masks.items():
        np.testing.assert_array_equal(net.get_param(i), np.where(m, weights[i], 0))
    dens = net.densities()
    assert set(dens) == {0, 4}
    assert dens[0] == pytest.approx(masks[0].mean())


def test_c_errors_become_engine_errors(net: Network) -> None:
    x, y = data()
    with pytest.raises(EngineError, match=r"learning rate must be finite and > 0, got nan \[PF_ERR_ARG\]"):
        net.train_step(x, y, SGDConfig(lr=float("nan")))
    with pytest.raises(EngineError, match="momentum"):
        net.train_step(x, y, SGDConfig(lr=0.1, momentum=1.5))
    with pytest.raises(EngineError, match=r"label 9 of sample 0 is outside \[0, 4\)"):
        net.forward_backward(x, np.full(5, 9))
    with pytest.raises(EngineError, match="non-finite"):
        w = net.get_param(0)
        w[0, 0, 0, 0] = np.inf
        net.set_param(0, w)
    with pytest.raises(EngineError, match="PF_ERR_STATE"):
        net.sgd_step(SGDConfig(lr=0.1))
    with pytest.raises(EngineError, match="importance is off"):
        net.grad_sums()
    with pytest.raises(EngineError, match="threads"):
        net.set_threads(0)
    with pytest.raises(EngineError, match="threshold"):
        net.set_sparse_threshold(0, 2.0)


def test_python_side_validation(net: Network) -> None:
    x, y = data()
    with pytest.raises(ValueError, match="input must be"):
        net.train_step(x[:, :1], y, SGDConfig(0.1))
    with pytest.raises(ValueError, match="labels must have shape"):
        net.train_step(x, y[:3], SGDConfig(0.1))
    with pytest.raises(ValueError, match="integers"):
        net.train_step(x, y.astype(np.float32), SGDConfig(0.1))
    with pytest.raises(ValueError, match="expected shape"):
        net.set_param(0, np.zeros((3, 2, 3), np.float32))
    with pytest.raises(ValueError, match="not a prunable weight"):
        net.set_masks({1: np.ones(3, bool)})
    with pytest.raises(ValueError, match="input must be"):  # right size per sample, wrong layout
        net.forward_backward(x.reshape(5, 6, 12), y)
    with pytest.raises(ValueError, match="real numbers"):
        net.forward_backward(x.astype(np.complex64), y)
    with pytest.raises(ValueError, match="int32 range"):
        net.forward_backward(x, np.full(5, 2**32, np.int64))
    with pytest.raises(ValueError, match="batch_size"):
        net.evaluate(x, y, batch_size=0)
    net.forward_backward(x.reshape(5, -1), y)  # a flat batch is fine


def test_wrong_mask_sizes_leave_the_masks_unchanged(net: Network) -> None:
    before = net.get_masks()
    good = {0: np.zeros(net.param_shapes[0].shape, bool)}
    with pytest.raises(ValueError, match=r"mask of 4.weight: expected \(4, 27\), got \(4, 28\)"):
        net.set_masks({**good, 2: np.ones((4, 28), bool)})
    for i, m in net.get_masks().items():
        np.testing.assert_array_equal(m, before[i], err_msg="a rejected set_masks changed a mask")
    # the core checks sizes itself too: a raw call with the wrong length is PF_ERR_SHAPE with its message
    ffi, lib = net._n.ffi, net._n.lib
    buf = np.ones(10, np.uint8)
    with pytest.raises(EngineError, match=r"PF_ERR_SHAPE") as err:
        net._call(lib.pf_net_set_mask(net._h, 0, ffi.from_buffer("uint8_t[]", buf), buf.size))
    assert err.value.status == "PF_ERR_SHAPE" and err.value.code == -3 and err.value.c_message


def test_numeric_masks_mean_nonzero_is_kept(net: Network) -> None:
    shape = net.param_shapes[0].shape
    values = np.random.default_rng(2).choice([0.0, 0.5, 2.0, 256.0], size=shape)
    net.set_masks({0: values})
    np.testing.assert_array_equal(net.get_masks()[0], values != 0)


def test_param_info_matches_the_spec(net: Network) -> None:
    for i, p in enumerate(net.param_shapes):
        info = net.param_info(i)
        assert (info.name, info.layer, info.shape, info.size, info.is_weight) == (p.name, p.layer, p.shape, p.size,
                                                                                 p.prunable)
    info = net.layer_info(0)
    assert (info.kind, info.in_shape, info.out_shape, info.weight_param, info.bias_param) == (
        "Conv2d", (2, 6, 6), (3, 6, 6), 0, 1)


def test_input_grad_follows_the_last_batch(net: Network) -> None:
    x, y = data(5)
    net.enable_input_grad(True)
    net.forward_backward(x, y)
    assert net.input_grad().shape == (5, 2, 6, 6)
    net.train_step(x[:3], y[:3], SGDConfig(0.1))
    g = net.input_grad()
    assert g.shape == (3, 2, 6, 6) and np.any(g != 0)


def test_bad_spec_is_rejected_with_the_layer() -> None:
    from prunefl_common.model_spec import ModelSpecError

    with pytest.raises(ModelSpecError, match="not flat; add Flatten"):
        ModelSpec((2, 6, 6), (Conv2d(3, (3, 3)), Linear(4)))


def test_thread_counts_agree() -> None:
    x, y = data(8)
    results = []
    for threads in (1, 2, 4):
        n = Network(SPEC, threads=threads)
        n.init_weights(3)
        for _ in range(3):
            n.train_step(x, y, SGDConfig(0.1, momentum=0.9))
        results.append(n.get_weights())
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_evaluate_in_batches_equals_one_pass(net: Network) -> None:
    x, y = data(37)
    whole = net.evaluate(x, y, batch_size=64)
    parts = net.evaluate(x, y, batch_size=5)
    assert whole.n == parts.n == 37
    assert whole.accuracy == parts.accuracy
    assert whole.loss == pytest.approx(parts.loss, rel=1e-5)
    small, large = net.logits(x, batch_size=7), net.logits(x, batch_size=64)
    if "dense gemm builtin" in build_info():
        # Our kernels sum every output in the same order whatever the batch size: bit-identical.
        np.testing.assert_array_equal(small, large)
    else:
        # A BLAS picks its kernels by matrix shape (OpenBLAS 0.3.21 on a CPU it does not know falls back to
        # Prescott kernels whose row tails sum in another order), so only float32 rounding of the sums may differ.
        np.testing.assert_allclose(small, large, rtol=1e-6, atol=16 * np.finfo(np.float32).eps * np.abs(large).max())


def test_close_is_idempotent_and_context_manager() -> None:
    with Network(SPEC) as n:
        n.init_weights(0)
    n.close()
    with pytest.raises(EngineError, match="closed"):
        n.get_weights()


def test_init_weights_is_pytorch_default_uniform() -> None:
    spec = ModelSpec((1, 1, 1), (Flatten(), Linear(400), ReLU(), Linear(300)))
    n = Network(spec)
    n.init_weights(7)
    for w, p in zip(n.get_weights(), n.param_shapes):
        fan_in = 1 if p.layer == 1 else 400
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound, p.name
        assert abs(float(w.mean())) < 0.1 * bound and float(w.std()) == pytest.approx(bound / np.sqrt(3), rel=0.05)
    again = Network(spec)
    again.init_weights(7)
    for a, b in zip(n.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)
