"""The engine's kept values and in-place importance against the dense API and the shared importance formula."""

from __future__ import annotations

import numpy as np
import pytest

from prunefl_common.importance import add_client_round
from prunefl_common.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU
from prunefl_edge.engine import EngineError, Network

SPEC = ModelSpec((1, 8, 8), (Conv2d(4, (3, 3), padding=(1, 1)), ReLU(), MaxPool2d((2, 2)), Flatten(), Linear(7),
                             ReLU(), Linear(3)))


def _net(density: float, threshold: float) -> Network:
    net = Network(SPEC)
    net.init_weights(seed=1)
    rng = np.random.default_rng(2)
    net.set_masks({p: rng.random(net.param_shapes[p].shape) < density for p in net.weight_params})
    net.set_weights([w + 0.1 for w in net.get_weights()])
    for layer in SPEC.prunable_layers():
        net.set_sparse_threshold(layer, threshold)
    return net


@pytest.mark.parametrize("threshold", [0.0, 1.0])  # every layer dense / every layer sparse
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_kept_values_are_the_dense_values_at_the_mask(density, threshold):
    with _net(density, threshold) as net:
        masks, dense = net.get_masks(), net.get_weights()
        kept = net.get_kept_values()
        for p, (k, w) in enumerate(zip(kept, dense, strict=True)):
            np.testing.assert_array_equal(k, w[masks[p]] if p in masks else w.ravel())
        new = [np.arange(k.size, dtype=np.float32) - 1.5 for k in kept]
        net.set_kept_values(new)
        for p, w in enumerate(net.get_weights()):
            want = np.zeros(w.shape, np.float32)
            if p in masks:
                want[masks[p]] = new[p]
            else:
                want = new[p].reshape(w.shape)
            np.testing.assert_array_equal(w, want)
        with pytest.raises(EngineError, match="set_kept"):
            net.set_kept_values([np.zeros(k.size + 1, np.float32) for k in kept])


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_add_importance_is_the_shared_formula(threshold):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 5).astype(np.int32)
    with _net(0.4, threshold) as net:
        net.set_importance(True)
        net.reset_grad_sums()
        for _ in range(3):
            net.forward_backward(x, y)
        z_ref = add_client_round([np.full(p.shape, 0.25, np.float32) for p in net.param_shapes], net.grad_sums(), 15)
        z = [np.full(p.shape, 0.25, np.float32) for p in net.param_shapes]
        net.add_importance(z, 15.0)
        for a, b in zip(z, z_ref, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        masks = net.get_masks()
        zk = [np.zeros(p.shape, np.float32) for p in net.param_shapes]
        net.add_importance(zk, 1.0, kept_only=True)
        for p, m in masks.items():
            assert not zk[p][~m].any() and np.all(zk[p][m] >= 0)
        with pytest.raises(ValueError, match="float32"):
            net.add_importance([a.astype(np.float64) for a in z], 1.0)


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_step_importance_is_the_masked_gradient_squared(threshold):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 3, 5).astype(np.int32)
    with _net(0.4, threshold) as net:
        net.forward_backward(x, y)
        z = [np.zeros(p.shape, np.float32) for p in net.param_shapes]
        net.add_step_importance(z, 3.0)
        masks = net.get_masks()
        for p, (zi, g) in enumerate(zip(z, net.grads(), strict=True)):
            np.testing.assert_allclose(zi, 3.0 * np.square(g), rtol=1e-6)
            if p in masks:
                assert not zi[~masks[p]].any()
