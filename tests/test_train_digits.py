"""A small MLP trained through the binding on scikit-learn's digits (real data) reaches >= 90% test accuracy,
dense and with a fixed 30% mask that runs the sparse kernels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from prunefl_common.model_spec import Flatten, Linear, ModelSpec, ReLU
from prunefl_edge.engine import Network, SGDConfig


@pytest.mark.parametrize("density", [1.0, 0.3])
def test_mlp_learns_digits(density: float) -> None:
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[:1400], order[1400:]
    spec = ModelSpec((1, 8, 8), (Flatten(), Linear(64), ReLU(), Linear(10)))
    net = Network(spec, threads=2)
    net.init_weights(0)
    if density < 1.0:
        net.set_masks({i: rng.random(net.param_shapes[i].shape) < density for i in net.weight_params})
        net.init_weights(0)
        for layer in spec.prunable_layers():
            net.set_sparse_threshold(layer, 1.0)
    cfg = SGDConfig(lr=0.1, momentum=0.9)
    for _ in range(15):
        perm = rng.permutation(train)
        for s in range(0, len(perm), 20):
            b = perm[s: s + 20]
            net.train_step(x[b], y[b], cfg)
    result = net.evaluate(x[test], y[test])
    assert result.accuracy >= 0.90, f"test accuracy {result.accuracy:.3f} at density {density}"
