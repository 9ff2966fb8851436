"""Sparse FedAvg of increments, stale results rejected."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.aggregation import StaleUpdateError, aggregate_results, aggregate_sparse, kept_index, split_fresh
from prunefl_common.messages import TrainResult, kept_values


def _setup():
    w = [np.array([[1.0, 2.0], [3.0, 4.0]], np.float32), np.array([0.5, -0.5], np.float32)]
    masks = {0: np.array([[True, False], [True, True]])}
    return w, masks


def test_same_mask_weighted_average_and_pruned_positions_keep_value():
    w, masks = _setup()
    a = [np.array([10.0, 30.0, 40.0], np.float32), np.array([1.0, 1.0], np.float32)]
    b = [np.array([0.0, 0.0, 0.0], np.float32), np.array([0.0, 0.0], np.float32)]
    new = aggregate_sparse(w, masks, [(a, 30), (b, 10)])
    # kept positions: weighted mean 0.75 * a + 0.25 * b; pruned position (0, 1) keeps 2.0
    np.testing.assert_allclose(new[0], [[7.5, 2.0], [22.5, 30.0]])
    np.testing.assert_allclose(new[1], [0.75, 0.75])
    # the literal formula w + sum_i (n_i/N)(w_i - w*m), w_i dense with zeros at pruned positions
    m = masks[0].astype(np.float32)
    dense_a = np.array([[10.0, 0.0], [30.0, 40.0]])
    ref = w[0] + 0.75 * (dense_a - w[0] * m) + 0.25 * (0 - w[0] * m)
    np.testing.assert_allclose(new[0], ref)


def test_no_update_keeps_weights():
    w, masks = _setup()
    new = aggregate_sparse(w, masks, [])
    np.testing.assert_array_equal(new[0], w[0])
    assert new[0] is not w[0]


def test_single_client_takes_its_values():
    w, masks = _setup()
    vals = kept_values([w[0] * 2, w[1] * 2], masks)
    new = aggregate_sparse(w, masks, [(vals, 7)])
    np.testing.assert_allclose(new[0], [[2.0, 2.0], [6.0, 8.0]])


def _result(cid, rnd=3, ver=1, n=20):
    return TrainResult(cid, rnd, ver, n, [np.zeros(3, np.float32), np.zeros(2, np.float32)])


def test_stale_and_duplicate_results_rejected():
    fresh, rejected = split_fresh([_result("b"), _result("a"), _result("c", ver=0), _result("d", rnd=2),
                                   _result("a")], 3, 1)
    assert [r.client_id for r in fresh] == ["a", "b"]
    reasons = sorted(why for _, why in rejected)
    assert any("mask version 0" in r for r in reasons) and any("round 2" in r for r in reasons)
    assert "duplicate" in reasons
    w, masks = _setup()
    with pytest.raises(StaleUpdateError):
        aggregate_results(w, masks, [_result("a"), _result("c", ver=0)], 3, 1)


def test_order_independent_bitwise():
    rng = np.random.default_rng(0)
    w = [rng.standard_normal((50, 40)).astype(np.float32)]
    masks = {0: rng.random((50, 40)) < 0.4}
    k = int(masks[0].sum())
    res = [TrainResult(f"c{i}", 0, 0, int(rng.integers(1, 100)), [rng.standard_normal(k).astype(np.float32)])
           for i in range(5)]
    a = aggregate_results(w, masks, res, 0, 0)
    b = aggregate_results(w, masks, res[::-1], 0, 0)
    assert a[0].tobytes() == b[0].tobytes()


def test_wrong_size_update_is_an_error():
    w, masks = _setup()
    with pytest.raises(ValueError, match="update has"):
        aggregate_sparse(w, masks, [([np.zeros(4, np.float32), np.zeros(2, np.float32)], 1)])


def test_cached_index_gives_the_same_bits_and_a_float64_reference():
    rng = np.random.default_rng(3)
    w = [rng.standard_normal((30, 20)).astype(np.float32), rng.standard_normal(20).astype(np.float32)]
    masks = {0: rng.random((30, 20)) < 0.3}
    k = int(masks[0].sum())
    ups = [([rng.standard_normal(k).astype(np.float32), rng.standard_normal(20).astype(np.float32)],
            int(rng.integers(1, 50))) for _ in range(4)]
    a = aggregate_sparse(w, masks, ups)
    b = aggregate_sparse(w, masks, ups, kept_index(masks))
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    # the reference formula, written directly
    total = sum(n for _, n in ups)
    old = w[0][masks[0]].astype(np.float64)
    ref = old + sum((n / total) * (v[0].astype(np.float64) - old) for v, n in ups)
    np.testing.assert_allclose(a[0][masks[0]], ref.astype(np.float32), rtol=1e-6)
    assert np.array_equal(a[0][~masks[0]], w[0][~masks[0]])  # pruned positions keep their value


def test_a_non_finite_result_changes_nothing():
    w, masks = _setup()
    before = [x.copy() for x in w]
    k = int(masks[0].sum())
    good_first_bad_second = [np.full(k, np.float32(7)), np.array([1.0, np.nan], np.float32)]
    with pytest.raises(ValueError, match="parameter 1: aggregated weights are not finite"):
        aggregate_sparse(w, masks, [(good_first_bad_second, 1)])
    assert all(np.array_equal(x, y) for x, y in zip(w, before))


def test_sample_budget_is_what_the_task_could_use():
    from coordinator.aggregation import sample_budget

    assert sample_budget(5, 20, 1000) == 100
    assert sample_budget(5, 20, 7) == 35  # fewer local samples than a batch: smaller batches
    for doubtful in (None, 0, -3, True, 2.5, "many"):
        assert sample_budget(5, 20, doubtful) == 100


def test_clip_to_median_scales_only_the_outlier_and_keeps_its_direction():
    from coordinator.aggregation import clip_to_median
    from prunefl_common.messages import TrainResult

    sent = [np.zeros(4, np.float32)]
    res = [TrainResult(f"c{i}", 0, 0, 10, [np.full(4, v, np.float32)]) for i, v in enumerate([1.0, 1.0, 1.5, 50.0])]
    out, clipped = clip_to_median(res, sent, 2.0)
    assert clipped == ["c3"]
    med = float(np.median([2.0, 2.0, 3.0, 100.0]))
    np.testing.assert_allclose(out[3].values[0], np.full(4, 2.0 * med / 2), rtol=1e-6)  # norm 2 x median
    assert all(a is b for a, b in zip(out[:3], res[:3]))
    assert clip_to_median(res[2:], sent, 2.0) == (res[2:], [])  # two results: no majority to be robust by
