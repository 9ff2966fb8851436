"""The importance step's cost: in the profile, in window rounds' simulated time, and in what the choice trades."""

from __future__ import annotations

import numpy as np

from prunefl_common.model_spec import Flatten, Linear, ModelSpec, ReLU
from prunefl_common.time_model import DeviceProfile, LayerProfile, TimeModel

SPEC = ModelSpec((1, 4, 4), (Flatten(), Linear(8), ReLU(), Linear(3)))  # weights 16*8 + 8*3 = 152


def _profile(imp: float) -> DeviceProfile:
    return DeviceProfile("t", intercept_s=0.01, comm_s_per_weight=1e-6, importance_s_per_weight=imp,
                         layers=(LayerProfile("fc1", "linear", 128, 1e-5), LayerProfile("fc2", "linear", 24, 2e-5)))


def test_window_rounds_pay_the_dense_gradient_of_every_weight():
    tm = TimeModel.from_profile(_profile(3e-6), SPEC, local_steps=5)
    assert tm.total_weights == 152
    kept = [64, 12]
    assert np.isclose(tm.round_time(kept, importance=True) - tm.round_time(kept), 3e-6 * 5 * 152, rtol=1e-9)
    assert TimeModel.from_profile(_profile(0.0), SPEC).importance_time() == 0.0


def test_the_profile_file_keeps_the_coefficient_and_older_files_read_as_zero():
    prof = _profile(4e-7)
    back = DeviceProfile.from_json(prof.to_json())
    assert back.importance_s_per_weight == 4e-7
    old = prof.to_json()
    del old["importance_s_per_weight"]
    assert DeviceProfile.from_json(old).importance_s_per_weight == 0.0


def test_profile_measures_it(tmp_path):
    from prunefl_edge.engine import Network, SGDConfig
    from prunefl_edge.profiler import profile_network

    spec = ModelSpec((1, 8, 8), (Flatten(), Linear(64), ReLU(), Linear(10)))
    prof, _ = profile_network(spec, lambda s: Network(s), SGDConfig, densities=(0.1, 0.5), repeat=1)
    assert prof.importance_s_per_weight >= 0.0 and "sparse_low_importance_step_s" in prof.extra
    assert DeviceProfile.from_json(prof.to_json()).importance_s_per_weight == prof.importance_s_per_weight
