"""FedDST: per-client prune-by-magnitude / regrow-by-gradient, the server's mask vote, a fixed density."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fake_engine import FakeNetwork
from fake_engine import SGDConfig as FakeSGD

from coordinator.cli_sim import SimOptions, run_simulation
from coordinator.methods import METHOD_NAMES
from coordinator.methods.feddst import layer_magnitude_masks, readjust_client_mask, vote_masks


def test_readjust_prunes_smallest_magnitude_and_regrows_largest_gradient():
    w = np.array([0.5, -0.1, 0.3, 0.0, 0.0, 0.0, 0.2, -0.9], np.float32)
    m = np.array([1, 1, 1, 0, 0, 0, 1, 1], bool)
    z = np.array([0, 0, 0, 5.0, 1.0, 7.0, 0, 0])
    new = readjust_client_mask(w, z, m, 0.4)  # int(0.4 * 5) = 2: drop -0.1 and 0.2, grow positions 5 and 3
    np.testing.assert_array_equal(new, [1, 0, 1, 1, 0, 1, 0, 1])
    assert new.sum() == m.sum()
    np.testing.assert_array_equal(readjust_client_mask(w, z, m, 0.1), m)  # int(0.5) = 0: unchanged


def test_regrowth_may_take_back_a_just_pruned_weight():
    w = np.array([1.0, 0.01, 0.0], np.float32)
    m = np.array([1, 1, 0], bool)
    z = np.array([0.0, 9.0, 1.0])  # the weight pruned by magnitude has the largest gradient: it comes back
    np.testing.assert_array_equal(readjust_client_mask(w, z, m, 0.5), m)


def test_vote_keeps_the_majority_at_the_current_density():
    cur = np.array([1, 1, 0, 0], bool)
    a = np.array([1, 0, 1, 0], bool)
    b = np.array([1, 0, 1, 0], bool)
    c = np.array([0, 1, 0, 1], bool)
    out = vote_masks([a, b, c], [10, 10, 10], cur, np.zeros(4))
    np.testing.assert_array_equal(out, [1, 0, 1, 0])
    # votes are weighted by samples: the one large client outvotes two small ones
    np.testing.assert_array_equal(vote_masks([a, b, c], [1, 1, 5], cur, np.zeros(4)), [0, 1, 0, 1])
    # tied votes: the larger |w| wins
    np.testing.assert_array_equal(vote_masks([a, c], [1, 1], cur, np.array([0, 2.0, 1.0, 0])), [0, 1, 1, 0])


def test_initial_masks_keep_the_density_per_layer():
    rng = np.random.default_rng(0)
    ws = [rng.normal(size=(20, 10)), rng.normal(size=(5, 20))]
    for w, m in zip(ws, layer_magnitude_masks(ws, 0.3), strict=True):
        assert m.sum() == round(0.3 * w.size)
        assert np.abs(w[m]).min() >= np.abs(w[~m]).max()


def test_feddst_runs_at_a_fixed_density_and_readjusts(monkeypatch):
    import coordinator.methods.feddst as fd

    moved = []

    def spy(masks, n, current, weights):
        out = vote_masks(masks, n, current, weights)
        moved.append(int(np.count_nonzero(out & ~current)))
        return out

    monkeypatch.setattr(fd, "vote_masks", spy)
    assert "feddst" in METHOD_NAMES
    opts = SimOptions(dataset="digits", model="mlp", clients=8, partition="dirichlet", alpha=1.0, method="feddst",
                      rounds=24, clients_per_round=4, lr=0.1, eval_every=4, seed=3, report=False, export_onnx=False,
                      target_density=0.3, feddst_interval=5, feddst_alpha=0.2)
    res = run_simulation(opts, net_factory=lambda s: FakeNetwork(s), sgd_config=FakeSGD, progress=False)
    recs = [r for r in res.records if r.get("stage", "train") == "train"]
    assert {round(r["density"], 2) for r in recs} == {0.3}
    # readjustments at rounds 1, 6, 11 (the cosine schedule ends at half the run): a new mask version each
    changed = [r["round"] for r in recs if r["reconfigured"]]
    assert changed == [1, 6, 11]
    assert all(r["importance_uploads"] > 0 for r in recs if r["round"] in changed)
    assert all(r["importance_uploads"] == 0 for r in recs if r["round"] not in changed)
    accs = [r["accuracy"] for r in recs if r["accuracy"] is not None]
    assert accs[-1] > accs[0] + 0.1
    st = res.coordinator.state
    assert st.mask_version >= 4  # the initial mask and three votes
    assert sum(moved) > 0  # the votes moved weights


def test_feddst_rejects_bad_options():
    from coordinator.methods import FedDST

    for kw in ({"density": 0.0}, {"density": 0.5, "interval": 0}, {"density": 0.5, "alpha": 1.0}):
        with pytest.raises(ValueError):
            FedDST(**kw)
    assert dataclasses.fields(SimOptions)  # options exist for the CLI


def test_erk_densities_keep_small_layers_denser_at_the_same_overall_density():
    from coordinator.methods.feddst import layer_densities

    shapes = [(200, 784), (200, 200), (10, 200)]
    sizes = [200 * 784, 200 * 200, 10 * 200]
    d = layer_densities(shapes, 0.13)
    assert sum(a * b for a, b in zip(d, sizes, strict=True)) / sum(sizes) == pytest.approx(0.13)
    assert d[0] < d[1] < d[2] == 1.0  # the 10-class output layer is dense, the rest rescaled
    assert layer_densities(shapes, 0.13, "uniform") == [0.13] * 3
    with pytest.raises(ValueError):
        layer_densities(shapes, 0.13, "er")
