"""The binding's contract: C errors become EngineError with the C message; parameters and masks round-trip;
bad shapes and types are caught in Python with a clear message; the build reports its kernels."""

from __future__ import annotations

import numpy as np
import pytest

from prunefl_edge.engine import EngineError, Network, SGDConfig, build_info
from prunefl_edge.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU

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


def test_bad_spec_is_rejected_with_the_layer() -> None:
    from prunefl_edge.model_spec import ModelSpecError

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
    np.testing.assert_allclose(net.logits(x, batch_size=7), net.logits(x, batch_size=64), rtol=1e-6)


def test_close_is_idempotent_and_context_manager() -> None:
    with Network(SPEC) as n:
        n.init_weights(0)
    n.close()
