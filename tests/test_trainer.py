"""The edge trainer: masks by version, sparse results, importance = n * (sum of step gradients)^2."""

from __future__ import annotations

import numpy as np
import pytest
from conftest_helpers import engine_or_skip
from fake_engine import FakeNetwork
from fake_engine import SGDConfig as FakeSGD

from prunefl_common.mask_delta import mask_delta
from prunefl_common.messages import MaskUpdate, Task, TaskKind, TrainConfig, dense_from_values, kept_values
from prunefl_common.model_spec import Linear, ModelSpec, ReLU
from prunefl_edge.trainer import BatchStream, MaskVersionError, TaskError, Trainer

SPEC = ModelSpec((12, 1, 1), (Linear(8), ReLU(), Linear(3)), name="tiny")


def _make(kind="fake", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((50, 12, 1, 1)).astype(np.float32)
    y = rng.integers(0, 3, 50).astype(np.int32)
    if kind == "fake":
        net, sgd = FakeNetwork(SPEC), FakeSGD
    else:
        Network, sgd = engine_or_skip()
        net = Network(SPEC, threads=1)
    net.init_weights(seed=1)
    w = [np.array(a) for a in net.get_weights()]
    return Trainer("c0", net, x, y, seed=5, sgd_config=sgd), w, x, y


def _masks(seed=0):
    rng = np.random.default_rng(seed)
    return {0: rng.random((8, 12)) < 0.5, 2: rng.random((3, 8)) < 0.7}


@pytest.mark.parametrize("kind", ["fake", "engine"])
def test_train_returns_kept_values_and_respects_mask(kind):
    tr, w, _, _ = _make(kind)
    masks = _masks()
    task = Task(0, TaskKind.TRAIN, MaskUpdate(0, full=masks), kept_values(w, masks), TrainConfig(lr=0.1))
    res = tr.execute(task)
    assert res.n_samples == 100 and res.mask_version == 0 and res.round == 0
    assert [v.size for v in res.values] == [int(masks[0].sum()), 8, int(masks[2].sum()), 3]
    dense = tr.net.get_weights()
    assert np.all(dense[0][~masks[0]] == 0) and np.all(dense[2][~masks[2]] == 0)
    assert not np.array_equal(res.values[0], kept_values(w, masks)[0])  # it trained


@pytest.mark.parametrize("kind", ["fake", "engine"])
def test_importance_matches_direct_computation(kind):
    tr, w, x, y = _make(kind)
    masks = _masks()
    # replay the same 5 batches on a second network, summing the dense gradients directly
    ref, _, _, _ = _make(kind)
    ref_stream = BatchStream(len(y), 5)
    ref.net.set_masks(masks)
    ref.net.set_weights(w)
    ref.net.set_importance(True)
    sums = [np.zeros(s, np.float64) for s in tr.shapes]
    for _ in range(5):
        idx = ref_stream.next(20)
        ref.net.reset_grad_sums()
        ref.net.train_step(x[idx], y[idx], ref._sgd_config(0.1))
        for acc, g in zip(sums, ref.net.grad_sums(), strict=True):
            acc += g
    task = Task(0, TaskKind.TRAIN, MaskUpdate(0, full=masks), kept_values(w, masks),
                TrainConfig(lr=0.1, collect_importance=True, upload_importance=True))
    res = tr.execute(task)
    for z, a in zip(res.importance, sums, strict=True):
        np.testing.assert_allclose(z, 100 * a**2, rtol=2e-4, atol=1e-9)
    assert np.any(res.importance[0][~masks[0]] > 0)  # pruned weights have importance too
    assert tr.importance is None  # uploaded, reset


def test_mask_delta_and_versions():
    tr, w, _, _ = _make()
    m0, m1 = _masks(0), _masks(1)
    tr.execute(Task(0, TaskKind.TRAIN, MaskUpdate(0, full=m0), kept_values(w, m0), TrainConfig(lr=0.1)))
    d = mask_delta(m0, m1, 0, 1)
    res = tr.execute(Task(1, TaskKind.TRAIN, MaskUpdate(1, delta=d), kept_values(w, m1), TrainConfig(lr=0.1)))
    assert res.mask_version == 1
    for p in m1:
        np.testing.assert_array_equal(tr.masks[p], m1[p])
    # a delta to the version it already holds (a late task brought it there first): nothing to do
    res = tr.execute(Task(2, TaskKind.TRAIN, MaskUpdate(1, delta=d), kept_values(w, m1), TrainConfig(lr=0.1)))
    assert res.mask_version == 1 and all(np.array_equal(tr.masks[p], m1[p]) for p in m1)
    with pytest.raises(MaskVersionError):  # a delta from a version it does not hold
        tr.execute(Task(2, TaskKind.TRAIN, MaskUpdate(2, delta=mask_delta(m0, m1, 0, 2)), [], TrainConfig(lr=0.1)))
    with pytest.raises(MaskVersionError):  # a version it was never sent
        tr.execute(Task(2, TaskKind.TRAIN, MaskUpdate(5), kept_values(w, m1), TrainConfig(lr=0.1)))
    with pytest.raises(TaskError):  # wrong number of values
        tr.execute(Task(2, TaskKind.TRAIN, MaskUpdate(1), [np.zeros(3, np.float32)] * 4, TrainConfig(lr=0.1)))


def test_state_dict_resumes_stream_and_importance():
    tr, w, _, _ = _make()
    m = _masks()
    tr.execute(Task(0, TaskKind.TRAIN, MaskUpdate(0, full=m), kept_values(w, m),
                    TrainConfig(lr=0.1, collect_importance=True)))
    meta, arrays = tr.state_dict()
    tr2, _, _, _ = _make()
    tr2.load_state_dict(meta, arrays)
    assert tr2.mask_version == 0 and tr2.stream.state() == tr.stream.state()
    np.testing.assert_array_equal(tr2.importance[0], tr.importance[0])
    np.testing.assert_array_equal(tr2.stream.next(20), tr.stream.next(20))


def test_dense_from_values_round_trip():
    w = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)]
    m = {0: np.array([[1, 0, 1], [0, 1, 1]], bool)}
    back = dense_from_values(kept_values(w, m), m, [(2, 3), (2,)])
    np.testing.assert_array_equal(back[0], w[0] * m[0])


def _ip_task(masks, masked: bool, values=(), version: int = 0) -> Task:
    from prunefl_common.messages import InitialPruneConfig

    cfg = InitialPruneConfig(lr=0.1, costs=[1e-3, 1e-3], intercept=0.01, n_batches=2, batch_size=10,
                             reconfig_interval=3, max_passes=12, acc_threshold=0.0, delta=0.3, stop_count=100,
                             masked_importance=masked)
    return Task(0, TaskKind.INITIAL_PRUNE, MaskUpdate(version, full=masks), list(values), cfg)


@pytest.mark.parametrize("kind", ["fake", "engine"])
def test_initial_pruning_masked_importance_never_regrows(kind):
    """The reference's IP (bases/nn/linear.py: forward uses weight * mask) gives z = 0 at pruned weights: the IP
    mask only shrinks. The dense option sums the dense gradient, so a pruned weight may come back."""
    start = _masks(3)
    tr, w, _, _ = _make(kind)
    res = tr.execute(_ip_task(start, masked=True, values=kept_values(w, start)))
    assert res.densities  # it reconfigured
    for p, m in start.items():
        assert not (res.masks[p] & ~m).any()  # nothing outside the starting mask
    tr2, _, _, _ = _make(kind)
    res2 = tr2.execute(_ip_task(start, masked=False, values=kept_values(w, start)))
    assert any((res2.masks[p] & ~m).any() for p, m in start.items())  # dense importance regrows some


def test_initial_pruning_masked_importance_is_dense_importance_times_mask():
    """Same run, same z at kept weights: the masked run's optimiser sees dense z * mask (spied)."""
    import prunefl_edge.trainer as trainer_mod

    seen: dict[bool, list] = {True: [], False: []}
    real = trainer_mod.optimize_masks
    for masked in (True, False):
        def spy(z, *a, _m=masked, **k):
            seen[_m].append([np.array(x) for x in z])
            return real(z, *a, **k)
        trainer_mod.optimize_masks = spy
        try:
            tr, w, _, _ = _make("fake")
            cfg_task = _ip_task(_masks(3), masked, values=kept_values(w, _masks(3)))
            cfg_task.config.max_passes = 1  # one reconfiguration: both start from the same weights and mask
            cfg_task.config.reconfig_interval = 1
            tr.execute(cfg_task)
        finally:
            trainer_mod.optimize_masks = real
    m = _masks(3)
    for zm, zd, p in zip(seen[True][0], seen[False][0], sorted(m), strict=True):
        np.testing.assert_allclose(zm, zd * m[p], rtol=1e-6)
        assert (zd[~m[p]] > 0).any()


def test_importance_accumulates_per_round_not_over_the_window():
    """z = sum over client rounds of n * (sum of that round's step gradients)^2 (the paper's definition; the
    reference's adaptive.py AdaptiveClient.main lines 303-307), not the square of a window-long sum."""
    masks = _masks()

    def run(upload_each: bool) -> list[list[np.ndarray]]:
        tr, w, _, _ = _make("fake")
        out = []
        for r in range(2):
            cfg = TrainConfig(lr=0.1, collect_importance=True, upload_importance=upload_each or r == 1)
            res = tr.execute(Task(r, TaskKind.TRAIN, MaskUpdate(0, full=masks) if r == 0 else MaskUpdate(0),
                                  kept_values(w, masks), cfg))
            if res.importance is not None:
                out.append(res.importance)
        return out

    each, once = run(True), run(False)
    assert len(each) == 2 and len(once) == 1
    for z1, z2, z in zip(each[0], each[1], once[0], strict=True):
        np.testing.assert_allclose(z, z1 + z2, rtol=1e-6)


def test_importance_task_uploads_the_interval_sum_without_training():
    """A client that trained earlier in the interval, asked at the reconfiguration round, sends its z unchanged."""
    masks = _masks()
    tr, w, _, _ = _make("fake")
    cfg = TrainConfig(lr=0.1, collect_importance=True)
    tr.execute(Task(0, TaskKind.TRAIN, MaskUpdate(0, full=masks), kept_values(w, masks), cfg))
    tr.execute(Task(1, TaskKind.TRAIN, MaskUpdate(0), kept_values(w, masks), cfg))
    held = [z.copy() for z in tr.importance]
    before = [x.copy() for x in tr.net.get_weights()]
    stream = tr.stream.state()
    res = tr.execute(Task(2, TaskKind.IMPORTANCE, MaskUpdate(0), [], TrainConfig(lr=0.1)))
    assert res.values == [] and res.n_samples == 200 and res.mask_version == 0
    for a, b in zip(res.importance, held, strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(tr.net.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # no training
    assert tr.stream.state() == stream and tr.importance is None
    again = tr.execute(Task(3, TaskKind.IMPORTANCE, MaskUpdate(0), [], TrainConfig(lr=0.1)))
    assert again.importance is None and again.n_samples == 0  # nothing held: nothing sent


def test_importance_of_an_earlier_interval_is_dropped_at_the_next_mask():
    """z belongs to the interval of the mask version it was accumulated under; a client that missed that
    interval's upload does not carry it into the next one."""
    masks = _masks()
    tr, w, _, _ = _make("fake")
    cfg = TrainConfig(lr=0.1, collect_importance=True)
    tr.execute(Task(0, TaskKind.TRAIN, MaskUpdate(0, full=masks), kept_values(w, masks), cfg))
    assert tr.importance is not None and tr.importance_version == 0
    meta, arrays = tr.state_dict()
    restored, _, _, _ = _make("fake")
    restored.load_state_dict(meta, arrays)
    assert restored.importance_version == 0 and restored.importance_samples == 100
    new = {p: m.copy() for p, m in masks.items()}
    new[0][0, :] = True
    res = tr.execute(Task(7, TaskKind.TRAIN, MaskUpdate(1, delta=mask_delta(masks, new, 0, 1)),
                          kept_values(w, new), TrainConfig(lr=0.1, collect_importance=True, upload_importance=True)))
    assert res.n_samples == 100 and res.importance is not None  # this round's z only
    assert tr.importance is None and tr.importance_samples == 0
    direct, _, _, _ = _make("fake")  # the same two rounds, the first without importance
    direct.execute(Task(0, TaskKind.TRAIN, MaskUpdate(0, full=masks), kept_values(w, masks), TrainConfig(lr=0.1)))
    got = direct.execute(Task(7, TaskKind.TRAIN, MaskUpdate(1, full=new), kept_values(w, new),
                              TrainConfig(lr=0.1, collect_importance=True, upload_importance=True)))
    for a, b in zip(res.importance, got.importance, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_importance_task_answer_round_trips_on_the_wire_sparse():
    """An IMPORTANCE answer (no values, sparse z) encodes and decodes like any result."""
    from prunefl_common.messages import SparseImportance
    from prunefl_common.protocol.codec import decode, encode_result

    masks = _masks()
    tr, w, _, _ = _make("fake")
    tr.execute(Task(0, TaskKind.TRAIN, MaskUpdate(0, full=masks), kept_values(w, masks),
                    TrainConfig(lr=0.1, collect_importance=True)))
    res = tr.execute(Task(1, TaskKind.IMPORTANCE, MaskUpdate(0), [], TrainConfig(lr=0.1, importance_top=1.0)))
    assert isinstance(res.importance, SparseImportance) and res.values == []
    got = decode(encode_result(res, federation="f", sender="c0")).body
    assert got.values == [] and got.n_samples == res.n_samples and isinstance(got.importance, SparseImportance)
    for p, idx in res.importance.pruned_index.items():
        np.testing.assert_array_equal(got.importance.pruned_index[p], idx)
