"""Importance as the mask choice can use it (z at kept positions + the largest z at pruned ones) against the dense
form: the same masks on seeded cases, the same bytes rule as the wire, and a hostile upload refused."""

from __future__ import annotations

import numpy as np
import pytest

from coordinator.result_check import train_result_problem
from prunefl_common.importance import accumulate, sparse_importance, split_importance, top_positions
from prunefl_common.mask_optimizer import optimize_masks
from prunefl_common.messages import SparseImportance, TrainResult
from prunefl_common.protocol.codec import decode, encode_result, result_nbytes

SHAPES = [(64, 1, 5, 5), (64,), (300, 400), (300,), (10, 300), (10,)]
WEIGHTS = [0, 2, 4]


def _case(seed: int, density: float, clients: int = 4):
    rng = np.random.default_rng(seed)
    masks = {p: rng.random(SHAPES[p]) < density for p in WEIGHTS}
    weights = [rng.standard_normal(s).astype(np.float32) * (masks[p] if p in masks else 1) for p, s in
               enumerate(SHAPES)]
    # heavy-tailed importance (squared gradient sums), shared by the clients up to a client's own noise: they train
    # one model on similar data
    base = [rng.standard_normal(s) ** 2 * rng.lognormal(0, 2, s) for s in SHAPES]
    zs = [[(b * rng.lognormal(0, 0.5, b.shape)).astype(np.float32) for b in base] for _ in range(clients)]
    return masks, weights, zs


def _choose(z_sum, masks, weights):
    z, fixed = split_importance(z_sum, WEIGHTS)
    return optimize_masks(z, [weights[p] for p in WEIGHTS], [masks[p] for p in WEIGHTS], [1e-3, 1e-4, 1e-4], 1.0,
                          0.3, fixed_importance=fixed).masks


def _kept_index(masks):
    return {p: np.flatnonzero(m.ravel()) for p, m in masks.items()}


def _as_sent(z: SparseImportance) -> SparseImportance:
    """Through the wire (float16 with a power-of-two scale)."""
    res = TrainResult("e1", 0, 0, 1, [], z)
    return decode(encode_result(res, federation="f", sender="e1")).body.importance


def _choices(seed, density, top, wire):
    masks, weights, zs = _case(seed, density)
    dense = sparse = None
    for z in zs:
        dense = accumulate(dense, z)
        sp = sparse_importance(z, masks, top)
        sparse = accumulate(sparse, _as_sent(sp) if wire else sp, _kept_index(masks), SHAPES)
    return _choose(dense, masks, weights), _choose(sparse, masks, weights)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("density", [0.2, 0.5])
def test_sparse_uploads_choose_the_dense_masks(seed, density):
    """With the bound above what the choice regrows, the masks are the dense ones (float32 z)."""
    for a, b in zip(*_choices(seed, density, 1.0, wire=False), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("density", "top"), [(0.05, 2.0), (0.2, 1.0), (0.5, 1.0)])
def test_as_sent_the_masks_differ_at_most_in_a_few_near_ties(seed, density, top):
    """Through the wire (float16, 2**-11 relative) only weights whose z ties the choice's threshold within that
    precision may change side; and the sum of clients' largest z may miss a weight no single client ranked high."""
    dense, sparse = _choices(seed, density, top, wire=True)
    for a, b in zip(dense, sparse, strict=True):
        assert np.count_nonzero(a != b) <= max(10, 1e-3 * np.count_nonzero(a))


def test_a_tight_bound_is_noticed_and_raised_for_the_next_reconfiguration():
    """The choice regrows 40% of the kept count at density 0.05: a bound of 0.25 x kept binds; PruneFL sees it
    (the choice regrew at least half of what could be sent) and doubles the bound for the next interval."""
    from coordinator.methods.prunefl import next_importance_top

    masks, weights, zs = _case(11, 0.05, clients=8)
    sparse = None
    for z in zs:
        sparse = accumulate(sparse, _as_sent(sparse_importance(z, masks, 0.25)), _kept_index(masks), SHAPES)
    z, fixed = split_importance(sparse, WEIGHTS)
    choice = optimize_masks(z, [weights[p] for p in WEIGHTS], [masks[p] for p in WEIGHTS], [1e-3, 1e-4, 1e-4], 1.0,
                            0.3, fixed_importance=fixed)
    kept_before = [int(masks[p].sum()) for p in WEIGHTS]
    assert next_importance_top(0.25, choice.regrown, kept_before) == 0.5
    assert next_importance_top(1.0, [10, 0, 3], [1000, 50, 30]) == 1.0  # far from binding: unchanged


def test_sparse_importance_travels_and_is_counted_as_sent():
    masks, weights, zs = _case(3, 0.1)
    sp = sparse_importance(zs[0], masks, 1.0)
    values = [w[masks[p]] if p in masks else w.ravel() for p, w in enumerate(weights)]
    res = TrainResult("e1", 4, 2, 100, values, sp, 0.3, 0.8, 1.0)
    data = encode_result(res, federation="lab", sender="e1")
    assert result_nbytes(res, federation="lab", sender="e1") == len(data)
    got = decode(data).body.importance
    assert isinstance(got, SparseImportance)
    for a, b in zip(got.kept, sp.kept, strict=True):  # float16 with a scale: 2**-11 relative, tiny ones to 0
        np.testing.assert_allclose(a, b, rtol=2**-11, atol=float(b.max()) * 1e-9)
    for p in sp.pruned_index:
        np.testing.assert_array_equal(got.pruned_index[p], sp.pruned_index[p])
        np.testing.assert_allclose(got.pruned_z[p], sp.pruned_z[p], rtol=2**-11,
                                   atol=float(sp.pruned_z[p].max()) * 1e-9)
    assert got.sizes == sp.sizes
    dense_bytes = len(encode_result(TrainResult("e1", 4, 2, 100, values, zs[0], 0.3, 0.8, 1.0), federation="lab",
                                    sender="e1"))
    plain = len(encode_result(TrainResult("e1", 4, 2, 100, values, None, 0.3, 0.8, 1.0), federation="lab",
                              sender="e1"))
    assert len(data) <= 3 * plain < dense_bytes  # a reconfiguration upload within 3x an ordinary round's


def test_a_hostile_sparse_upload_is_refused():
    masks, weights, zs = _case(4, 0.1)
    values = [w[masks[p]] if p in masks else w.ravel() for p, w in enumerate(weights)]
    sp = sparse_importance(zs[0], masks, 0.5)
    kept_pos = int(np.flatnonzero(masks[4].ravel())[0])
    bad = SparseImportance(sp.kept, {**sp.pruned_index, 4: np.array([kept_pos])}, {**sp.pruned_z, 4: np.ones(1,
                           np.float32)}, sp.sizes)
    why = train_result_problem(TrainResult("e1", 0, 0, 10, values, bad), masks, SHAPES)
    assert why is not None and "kept positions" in why
    neg = SparseImportance([-k for k in sp.kept], sp.pruned_index, sp.pruned_z, sp.sizes)
    assert train_result_problem(TrainResult("e1", 0, 0, 10, values, neg), masks, SHAPES) is not None


def test_top_positions_is_the_sorted_top_k():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 50_000))
        z = rng.random(n).astype(np.float32)
        if trial % 3 == 0:
            z = np.round(z * 20) / 20  # ties and zeros
        c = rng.random(n) < rng.random()
        k = int(rng.integers(0, n + 2))
        live = np.flatnonzero(c & (z > 0))
        want = np.sort(live[np.lexsort((live, -z[live]))][:k])
        np.testing.assert_array_equal(top_positions(z, c, k), want)
