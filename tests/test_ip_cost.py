"""Initial pruning made cheaper on the device: fewer passes between its reconfigurations, a device-time budget."""

from __future__ import annotations

import dataclasses

import pytest
from fake_engine import FakeNetwork
from fake_engine import SGDConfig as FakeSGD

from coordinator.cli_sim import SimOptions, run_simulation
from coordinator.run_options import UsageError, check_run_options


def _ip(**kw):
    opts = SimOptions(dataset="digits", model="mlp", clients=8, partition="iid", method="ip-only", rounds=1,
                      clients_per_round=4, lr=0.1, reconfig_interval=10, ip_max_passes=60, eval_every=1, seed=3,
                      report=False, export_onnx=False)
    res = run_simulation(dataclasses.replace(opts, **kw), net_factory=lambda s: FakeNetwork(s), sgd_config=FakeSGD,
                         progress=False)
    ip = res.records[0]
    assert ip["stage"] == "initial_pruning"
    return ip, res.coordinator.state.extra["initial_pruning"]


@pytest.fixture(scope="module")
def ref():
    return _ip()[0]


def test_shorter_ip_interval_means_fewer_passes_and_less_device_time(ref):
    short, short_x = _ip(ip_interval=2)
    assert short["passes"] < ref["passes"]
    assert short["sim_time_s"] < ref["sim_time_s"]
    assert short["density"] < 1.0 and len(short_x["densities"]) >= 5  # it still prunes, reconfiguration by rule


def test_ip_budget_caps_the_charged_time(ref):
    budget = 0.3 * ref["sim_time_s"]
    capped, _ = _ip(ip_budget_s=budget)
    assert capped["passes"] < ref["passes"]
    assert capped["sim_time_s"] <= budget


def test_bad_ip_options_are_usage_errors():
    for kw in ({"ip_interval": 0}, {"ip_budget_s": 0.0}):
        with pytest.raises(UsageError):
            check_run_options(dataclasses.replace(SimOptions(), **kw))
