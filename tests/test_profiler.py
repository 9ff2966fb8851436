"""The profiler writes a profile the time model reads; the switch-over interpolation."""

from __future__ import annotations

import pytest
from conftest_helpers import engine_or_skip
from fake_engine import FakeNetwork
from fake_engine import SGDConfig as FakeSGD

from prunefl_common.model_spec import Linear, ModelSpec, ReLU
from prunefl_common.time_model import TimeModel, load_profile, sparse_thresholds
from prunefl_edge.profiler import profile_network, switch_over

SPEC = ModelSpec((64, 1, 1), (Linear(128), ReLU(), Linear(10)), name="mlp")


def test_switch_over():
    assert switch_over([0.1, 0.5, 1.0], [1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == pytest.approx(0.5)
    assert switch_over([0.1, 0.5, 1.0], [1.0, 1.5, 3.0], [2.0, 2.0, 2.0]) == pytest.approx(0.5 + 0.5 / 3)
    assert switch_over([0.1, 1.0], [3.0, 4.0], [2.0, 2.0]) == 0.0
    assert switch_over([0.1, 1.0], [1.0, 1.5], [2.0, 2.0]) == 1.0


@pytest.mark.parametrize("kind", ["fake", "engine"])
def test_profile_file_feeds_time_model(tmp_path, kind):
    if kind == "fake":
        nf, sgd = (lambda s: FakeNetwork(s)), FakeSGD
    else:
        Network, sgd = engine_or_skip()
        def nf(s):
            return Network(s, threads=1)
    prof, sweeps = profile_network(SPEC, nf, sgd, densities=(1.0, 0.3, 0.05), repeat=1)
    assert len(sweeps) == 2 and all(s.slope >= 0 and 0 <= s.switch_density <= 1 for s in sweeps)
    prof.save(tmp_path / "p.json")
    tm = TimeModel.from_profile(load_profile(tmp_path / "p.json"), SPEC, local_steps=5)
    assert tm.intercept >= 0 and len(tm.compute) == 2
    assert set(sparse_thresholds(load_profile(tmp_path / "p.json"), SPEC)) == set(SPEC.prunable_layers())
