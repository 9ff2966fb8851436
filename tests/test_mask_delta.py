from __future__ import annotations

import numpy as np
import pytest

from coordinator.selection import select_clients
from coordinator.state import GlobalState
from prunefl_common.mask_delta import MaskDeltaError, apply_mask_delta, mask_delta


def test_delta_round_trip():
    rng = np.random.default_rng(0)
    old = {0: rng.random((6, 7)) < 0.5, 2: rng.random(30) < 0.2}
    new = {0: rng.random((6, 7)) < 0.5, 2: rng.random(30) < 0.2}
    d = mask_delta(old, new, 3, 4)
    assert d.num_changes() == int((old[0] != new[0]).sum() + (old[2] != new[2]).sum())
    got = apply_mask_delta(old, d, 3)
    for p in old:
        np.testing.assert_array_equal(got[p], new[p])
    with pytest.raises(MaskDeltaError, match="version"):
        apply_mask_delta(old, d, 2)
    with pytest.raises(MaskDeltaError, match="already"):
        apply_mask_delta(new, d, 3)  # applying twice


def test_delta_rejects_out_of_range():
    m = {0: np.zeros(4, bool)}
    d = mask_delta(m, {0: np.array([1, 0, 0, 0], bool)}, 0, 1)
    d.added[0] = np.array([9])
    with pytest.raises(MaskDeltaError, match="outside"):
        apply_mask_delta(m, d, 0)


def test_selection_seeded_and_order_free():
    a = select_clients(np.random.default_rng(5), ["c3", "c1", "c2", "c0"], 2)
    b = select_clients(np.random.default_rng(5), ["c0", "c1", "c2", "c3"], 2)
    assert a == b and len(a) == 2 and a == sorted(a)
    assert select_clients(np.random.default_rng(0), ["x", "y"], 5) == ["x", "y"]


def test_state_save_load_round_trip(tmp_path):
    w = [np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(2, np.float32)]
    st = GlobalState.create(w, {0: np.array([[1, 0, 1], [1, 1, 0]], bool)}, seed=7)
    st.rng.random(3)
    st.round, st.sim_time_s, st.extra = 4, 12.5, {"stage": "adaptive", "k": [1, 2]}
    st.importance = [np.full((2, 3), 0.5), np.zeros(2)]
    delta = st.set_masks({0: np.ones((2, 3), bool)})
    assert delta.base_version == 0 and st.mask_version == 1
    st.save(tmp_path / "s.npz")
    back = GlobalState.load(tmp_path / "s.npz")
    assert back.round == 4 and back.mask_version == 1 and back.extra == st.extra
    np.testing.assert_array_equal(back.weights[0], w[0])
    np.testing.assert_array_equal(back.masks[0], np.ones((2, 3), bool))
    np.testing.assert_array_equal(back.importance[0], st.importance[0])
    assert back.rng.random() == st.rng.random()  # the generator continues identically
