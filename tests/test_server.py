"""The round loop against a transport: failures, stale results dropped, mask changes sent as deltas."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fake_engine import FakeNetwork
from fake_engine import SGDConfig as FakeSGD

from coordinator.methods import FedAvg, PruneFL
from coordinator.server import Coordinator, ServerConfig
from coordinator.state import GlobalState
from coordinator.transport_inproc import InProcTransport
from prunefl_common.messages import TaskKind
from prunefl_common.model_spec import Linear, ModelSpec, ReLU
from prunefl_common.time_model import TimeModel, load_profile
from prunefl_edge.trainer import Trainer

SPEC = ModelSpec((16, 1, 1), (Linear(12), ReLU(), Linear(4)), name="tiny")


class Spy(InProcTransport):
    def __init__(self, *a, stale=None, **kw):
        super().__init__(*a, **kw)
        self.sent = []
        self.stale = stale

    def send(self, client_id, task):
        self.sent.append((client_id, task))
        return super().send(client_id, task)

    def gather(self, client_ids, round_index, deadline_s):
        got = super().gather(client_ids, round_index, deadline_s)
        if self.stale is not None:
            got.results = [dataclasses.replace(r, mask_version=r.mask_version - 1) if r.client_id == self.stale
                           else r for r in got.results]
        return got


def _coord(method, fail=None, stale=None, rounds=6):
    rng = np.random.default_rng(0)
    trainers = []
    for i in range(4):
        x = rng.standard_normal((60, 16, 1, 1)).astype(np.float32)
        y = (x.reshape(60, -1)[:, :4].argmax(1)).astype(np.int32)
        trainers.append(Trainer(f"c{i}", FakeNetwork(SPEC), x, y, seed=i, sgd_config=FakeSGD))
    net = FakeNetwork(SPEC)
    net.init_weights(seed=0)
    masks = {p: np.ones(s.shape, bool) for p, s in enumerate(SPEC.param_shapes()) if s.prunable}
    state = GlobalState.create(net.get_weights(), masks, seed=1)
    tm = TimeModel.from_profile(load_profile("pi4-reference"), SPEC, 5)
    tr = Spy(trainers, fail=fail, stale=stale)
    return Coordinator(tr, method, state, SPEC, ServerConfig(rounds=rounds, clients_per_round=3, lr=0.1), tm), tr


def test_failures_and_stale_results_do_not_stop_the_round():
    coord, _ = _coord(FedAvg(), fail=lambda cid, r: cid == "c1" and r == 0, stale="c2")
    recs = coord.run()
    assert all(r["results"] <= 3 for r in recs)
    r0 = recs[0]
    assert r0["failures"] >= 1
    assert coord.state.round == 6


def test_mask_change_travels_as_delta_then_nothing():
    coord, spy = _coord(PruneFL(initial=False, reconfig_interval=2), rounds=5)
    coord.run()
    kinds = [(r, "full" if t.mask.full is not None else "delta" if t.mask.delta is not None else "none")
             for r, (cid, t) in enumerate(spy.sent)]
    assert any(k == "full" for _, k in kinds)  # first contact
    assert any(k == "delta" for _, k in kinds)  # after the reconfiguration at round 2 or 4
    assert any(k == "none" for _, k in kinds)  # unchanged mask
    assert coord.state.mask_version >= 1
    for t in spy.trainers.values():  # a client that holds the current version holds the coordinator's masks
        if t.mask_version == coord.state.mask_version:
            for p, m in coord.state.masks.items():
                np.testing.assert_array_equal(t.masks[p], m)


def test_resume_from_checkpoint_matches_uninterrupted(tmp_path):
    full, _ = _coord(PruneFL(initial=False, reconfig_interval=2), rounds=6)
    full.run()
    part, spy = _coord(PruneFL(initial=False, reconfig_interval=2), rounds=6)
    part.config.rounds = 3
    part.run(checkpoint=lambda st: st.save(tmp_path / "state.npz"))
    # the coordinator process dies; a new one loads the checkpoint and talks to the same (still running) edges
    from coordinator.state import GlobalState

    resumed = Coordinator(spy, PruneFL(initial=False, reconfig_interval=2), GlobalState.load(tmp_path / "state.npz"),
                          SPEC, ServerConfig(rounds=6, clients_per_round=3, lr=0.1), part.time_model)
    resumed.run()
    for a, b in zip(full.state.weights, resumed.state.weights, strict=True):
        assert a.tobytes() == b.tobytes()
    assert full.state.mask_version == resumed.state.mask_version


class Corrupting(Spy):
    """A client whose results are broken in a given way (NaN values, wrong sizes, absurd sample counts)."""

    def __init__(self, *a, corrupt=None, **kw):
        super().__init__(*a, **kw)
        self.corrupt = corrupt

    def gather(self, client_ids, round_index, deadline_s):
        got = super().gather(client_ids, round_index, deadline_s)
        got.results = [self.corrupt(r) if r.client_id == "c0" else r for r in got.results]
        return got


def _nan(r):
    v = [a.copy() for a in r.values]
    v[0][0] = np.nan
    return dataclasses.replace(r, values=v)


def _short(r):
    return dataclasses.replace(r, values=[a[:-1] for a in r.values])


def _huge_n(r):
    return dataclasses.replace(r, n_samples=10**12)


def _bad_importance(r):
    return dataclasses.replace(r, importance=[np.full(3, np.inf, np.float32)] * len(r.values))


@pytest.mark.parametrize("corrupt", [_nan, _short, _huge_n, _bad_importance])
def test_an_invalid_result_costs_its_client_the_round_not_the_weights(corrupt, caplog):
    coord, tr = _coord(FedAvg(), rounds=3)
    tr.__class__ = Corrupting
    tr.corrupt = corrupt
    with caplog.at_level("WARNING"):
        recs = coord.run()
    assert all(np.all(np.isfinite(w)) for w in coord.state.weights)
    picked = [r for r in recs if r["failures"] > 0]
    assert picked, "c0 was never selected"
    assert all(r["results"] < r["clients"] for r in picked)
    assert "rejected the result of c0" in caplog.text


def _shifted(r):
    return dataclasses.replace(r, values=[a + np.float32(100.0) for a in r.values])


@pytest.mark.parametrize("bound", [None, 5.0])
def test_an_update_beyond_the_norm_bound_is_rejected_and_counted(bound, caplog):
    coord, tr = _coord(FedAvg(), rounds=4)
    coord.config.max_update_norm = bound
    tr.__class__ = Corrupting
    tr.corrupt = _shifted
    with caplog.at_level("WARNING"):
        recs = coord.run()
    picked = [r for r in recs if "c0" in {cid for cid, t in tr.sent if t.round == r["round"]}]
    assert picked, "c0 was never selected"
    biggest = float(max(np.abs(w).max() for w in coord.state.weights))
    if bound is None:  # without a bound the shifted update drags the model along
        assert biggest > 20 and all(r["invalid_results"] == 0 for r in recs)
    else:  # with one: c0's results are rejected (logged, counted) and the others' honest updates pass
        assert biggest < 5
        assert [r["invalid_results"] for r in picked] == [1] * len(picked)
        assert all(r["results"] == r["clients"] - 1 for r in picked)
        assert all(r["invalid_results"] == 0 and r["results"] == r["clients"] for r in recs if r not in picked)
        assert "exceeds the bound 5 (--max-update-norm)" in caplog.text


def test_link_time_per_weight_is_round_trip_minus_compute_per_kept_weight():
    from coordinator.server import link_time_per_weight
    from prunefl_common.messages import TrainResult

    res = [TrainResult(c, 0, 0, 10, [], compute_s=cs) for c, cs in (("a", 1.0), ("b", 2.0), ("c", 0.5))]
    assert link_time_per_weight(res, {"a": 1.5, "b": 3.0, "c": 0.25}, 1000) == pytest.approx(0.5 / 1000)
    assert link_time_per_weight(res, {}, 1000) is None  # in-process: no round trips
    recs = _coord(FedAvg(), rounds=2)[0].run()
    assert all(r["link_s_per_weight"] is None for r in recs)


def test_a_client_back_from_offline_with_another_mask_version_gets_the_full_mask():
    coord, spy = _coord(PruneFL(initial=False, reconfig_interval=2), rounds=5)
    coord.run()
    cur = coord.state.mask_version
    assert cur >= 1
    back = {"c0": 0, "c1": 0}
    announced = {"c0": cur, "c1": cur}
    spy.comebacks = lambda cid: back.get(cid, 0)
    spy.client_info = lambda cid: {"mask_version": announced.get(cid)}
    for cid in ("c0", "c1"):
        coord.ledger.holds(cid, cur)
    coord.ledger.observe(["c0", "c1"], spy.comebacks)
    assert coord._mask_update("c0").full is None  # no comeback: what it is believed to hold
    # both restarted; c0's state was saved before its last task (one version older), c1's is current
    back.update(c0=1, c1=1)
    announced["c0"] = cur - 1
    coord.ledger.observe(["c0", "c1"], spy.comebacks)
    upd0, upd1 = coord._mask_update("c0"), coord._mask_update("c1")
    assert upd0.full is not None and upd0.version == cur
    assert upd1.full is None and upd1.delta is None
    assert coord.ledger.version("c0") == -1 and coord.ledger.version("c1") == cur
    # the full mask applies to whatever a trainer holds
    t = spy.trainers["c0"]
    t._install_masks({p: np.ones(m.shape, bool) for p, m in coord.state.masks.items()}, cur - 1)
    t._apply_mask(upd0)
    assert t.mask_version == cur
    for p, m in coord.state.masks.items():
        np.testing.assert_array_equal(t.masks[p], m)


class Forging(Spy):
    """c3 publishes a result for every round it was not selected for: the current round and mask version, a zero
    model, and 10**9 samples claimed (the largest count a result may state)."""

    def gather(self, client_ids, round_index, deadline_s):
        got = super().gather(client_ids, round_index, deadline_s)
        if "c3" not in client_ids and got.results:
            t = got.results[0]
            got.results.append(dataclasses.replace(t, client_id="c3", n_samples=10**9,
                                                   values=[np.zeros_like(v) for v in t.values]))
        return got


def _claims_a_billion(r):
    return dataclasses.replace(r, n_samples=10**9)


def test_results_of_clients_not_selected_are_dropped_and_counted():
    clean, _ = _coord(FedAvg(), rounds=6)
    clean.run()
    coord, tr = _coord(FedAvg(), rounds=6)
    tr.__class__ = Forging
    recs = coord.run()
    forged = [r for r in recs if "c3" not in {cid for cid, t in tr.sent if t.round == r["round"]}]
    assert forged, "c3 was selected in every round"
    assert [r["unselected_results"] for r in forged] == [1] * len(forged)
    assert all(r["results"] == r["clients"] and r["failures"] == 0 and "c3" not in r["missed"] for r in recs)
    for a, b in zip(clean.state.weights, coord.state.weights, strict=True):  # as if c3 had never sent them
        assert a.tobytes() == b.tobytes()


def test_the_aggregation_weight_is_the_coordinators_not_the_claimed_count():
    clean, _ = _coord(FedAvg(), rounds=4)
    clean.run()
    coord, tr = _coord(FedAvg(), rounds=4)
    tr.__class__ = Corrupting
    tr.corrupt = _claims_a_billion
    recs = coord.run()
    picked = [r for r in recs if "c0" in {cid for cid, t in tr.sent if t.round == r["round"]}]
    assert picked, "c0 was never selected"
    assert [r["capped_weights"] for r in picked] == [1] * len(picked)
    # an honest client claims exactly its task's samples (local_steps x batch), the weight c0 gets too
    for a, b in zip(clean.state.weights, coord.state.weights, strict=True):
        assert a.tobytes() == b.tobytes()


def test_clipping_to_the_rounds_median_norm_bounds_one_clients_pull():
    coord, tr = _coord(FedAvg(), rounds=4)
    coord.config.clip_updates = 2.0
    tr.__class__ = Corrupting
    tr.corrupt = _shifted
    recs = coord.run()
    picked = [r for r in recs if "c0" in {cid for cid, t in tr.sent if t.round == r["round"]}]
    assert picked, "c0 was never selected"
    assert all(r["clipped_updates"] >= 1 and r["results"] == r["clients"] for r in picked)
    assert float(max(np.abs(w).max() for w in coord.state.weights)) < 5  # without clipping: > 20 (test above)


def test_an_announced_count_cannot_choose_the_initial_pruning_client():
    from types import SimpleNamespace

    def pick(info):
        return PruneFL()._pick_initial_client(SimpleNamespace(available=sorted(info), client_info=info))

    honest = {f"e{i}": {"n_samples": 300 + i} for i in range(4)}
    assert pick(honest) == "e2"  # the first id of those at or above the median count
    for lie in (10**12, 10**9, 400):
        assert pick({**honest, "e9": {"n_samples": lie}}) == "e2"
    assert pick({**honest, "e9": {"n_samples": "many"}, "e8": {}}) == "e2"
    assert pick({"a": {}, "b": {"n_samples": True}}) == "a"


def _record_contributions(coord, spy) -> list:
    """Every client round's n * a**2 (float64, from the network's gradient sums), recorded on the edges as they
    accumulate it: (client, round, z)."""
    contrib = []
    for cid, t in spy.trainers.items():
        real = t.net.add_importance

        def wrap(z, n, _cid=cid, _real=real, _net=t.net):
            contrib.append((_cid, coord.state.round, [n * np.asarray(a, np.float64) ** 2 for a in _net.grad_sums()]))
            _real(z, n)
        t.net.add_importance = wrap
    return contrib


@pytest.mark.parametrize("mode", ["interval", "selected"])
def test_reconfiguration_sums_the_importance_of_the_intervals_client_rounds(mode, monkeypatch):
    """interval (the reference): the optimiser sees z of every client round with importance in the interval, each
    once; the clients not selected in the reconfiguration round answer an IMPORTANCE task (no weights sent).
    selected: only the reconfiguration round's clients' z (each covering its rounds of this interval)."""
    import coordinator.methods.prunefl as pf

    seen: list = []
    real = pf.optimize_masks

    def spy_opt(z, *a, **k):
        seen.append([np.array(x, np.float64) for x in z])
        return real(z, *a, **k)
    monkeypatch.setattr(pf, "optimize_masks", spy_opt)
    coord, spy = _coord(PruneFL(initial=False, reconfig_interval=3, importance_from=mode, importance_top=None),
                        rounds=4)
    contrib = _record_contributions(coord, spy)
    recs = coord.run()
    assert len(seen) == 1  # the reconfiguration at round 3; importance collected in rounds 1, 2, 3
    selected3 = {cid for cid, t in spy.sent if t.round == 3 and t.kind == TaskKind.TRAIN}
    asked = [(cid, t) for cid, t in spy.sent if t.kind == TaskKind.IMPORTANCE]
    trained = {cid for cid, r, _ in contrib}
    assert {r for _, r, _ in contrib} == {1, 2, 3}
    if mode == "interval":
        assert {cid for cid, _ in asked} == trained - selected3 and all(t.round == 3 for _, t in asked)
        assert all(t.values == [] for _, t in asked)
        use = contrib
        assert recs[3]["importance_uploads"] == len(trained) and recs[3]["importance_request_bytes"] > 0
    else:
        assert asked == []
        use = [c for c in contrib if c[0] in selected3]
        assert recs[3]["importance_uploads"] == len(selected3)
    wp = coord.weight_params
    for i, p in enumerate(wp):
        expect = sum(z[p] for _, _, z in use)
        np.testing.assert_allclose(seen[0][i], expect, rtol=1e-5)


def test_ip_only_keeps_the_initial_pruning_mask_and_collects_no_importance():
    coord, spy = _coord(PruneFL(initial=True, adaptive=False, reconfig_interval=2, ip_max_passes=30), rounds=5)
    assert coord.method.name == "ip-only"
    coord.setup()
    coord.state.extra["setup_done"] = True
    version, masks = coord.state.mask_version, {p: m.copy() for p, m in coord.state.masks.items()}
    coord.run()
    assert coord.state.mask_version == version
    for p, m in masks.items():
        np.testing.assert_array_equal(coord.state.masks[p], m)
    train = [t for _, t in spy.sent if t.kind == TaskKind.TRAIN]
    assert train and not any(t.config.collect_importance or t.config.upload_importance for t in train)
    assert not any(t.kind == TaskKind.IMPORTANCE for _, t in spy.sent)


def test_interval_importance_with_sparse_uploads_counts_every_client_once():
    """The default upload (sparse, issue 13) on the IMPORTANCE path too: every client of the interval, once."""
    coord, spy = _coord(PruneFL(initial=False, reconfig_interval=3), rounds=4)
    contrib = _record_contributions(coord, spy)
    recs = coord.run()
    asked = [t for _, t in spy.sent if t.kind == TaskKind.IMPORTANCE]
    assert all(t.config.importance_top is not None for t in asked)
    assert recs[3]["importance_uploads"] == len({cid for cid, _, _ in contrib})
    assert recs[3]["reconfigured"]
