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
