"""Importance accumulation against a direct numpy computation."""

from __future__ import annotations

import numpy as np

from prunefl_common.importance import accumulate, add_client_round, split_importance, sum_importance


def test_client_rounds_and_clients_sum():
    rng = np.random.default_rng(0)
    shapes = [(4, 3), (4,)]
    # two clients, each two rounds of 5 local steps; z_j = sum_rounds n * (sum_steps g)^2, summed over clients
    expected = [np.zeros(s) for s in shapes]
    per_client = []
    for _client in range(2):
        z = None
        for _rnd in range(2):
            grads = [[rng.standard_normal(s) for s in shapes] for _ in range(5)]
            a = [sum(g[i] for g in grads) for i in range(len(shapes))]
            for i in range(len(shapes)):
                expected[i] += 100 * a[i] ** 2
            z = add_client_round(z, a, 100)  # what the edge's trainer runs, float32
        assert all(x.dtype == np.float32 for x in z)
        per_client.append(z)
    total = sum_importance(per_client)
    for t, e in zip(total, expected, strict=True):
        np.testing.assert_allclose(t, e, rtol=1e-5)
    weights, fixed = split_importance(total, [0])
    np.testing.assert_allclose(weights[0], expected[0], rtol=1e-5)
    assert abs(fixed - expected[1].sum()) <= 1e-5 * expected[1].sum()


def test_rejects_negative_or_nan():
    import pytest

    with pytest.raises(ValueError):
        accumulate([np.zeros(2)], [np.array([np.nan, 0.0])])
    with pytest.raises(ValueError):
        accumulate([np.zeros(2)], [np.array([-1.0, 0.0])])
