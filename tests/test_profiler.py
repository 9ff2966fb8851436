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


PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd08
Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def test_cpu_model_names_a_pi_board_and_core_or_the_x86_model():
    from prunefl_edge.profiler import cpu_model

    assert cpu_model(PI4_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)"
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert cpu_model("CPU part\t: 0xd03\n") == "Cortex-A53"  # a board the kernel does not name
    assert cpu_model("")  # something, never empty


def test_the_profile_records_build_isa_threads_and_cpu():
    build = "prunefl core 0.1.0; isa aarch64-neon; dense gemm builtin"
    prof, _ = profile_network(SPEC, lambda s: FakeNetwork(s), FakeSGD, densities=(1.0, 0.3), repeat=1, build=build,
                              threads=3)
    dev = prof.extra["device"]
    assert dev["build"] == build == prof.extra["build"] and dev["isa"] == "aarch64-neon" and dev["threads"] == 3
    assert dev["cpu_model"] and dev["machine"] and dev["cpus"] >= 1


class _CountingNet(FakeNetwork):
    steps = 0

    def train_step(self, *a, **kw):
        type(self).steps += 1
        return super().train_step(*a, **kw)


def test_a_stop_between_measurements_interrupts_the_profile():
    from prunefl_edge.profiler import ProfileInterrupted, measurement_steps

    asked = []

    def stop():  # asked before every measured point; says stop at the third
        asked.append(1)
        return len(asked) >= 3

    _CountingNet.steps = 0
    with pytest.raises(ProfileInterrupted):
        profile_network(SPEC, _CountingNet, FakeSGD, densities=(1.0, 0.3, 0.05), repeat=2, stop=stop)
    assert _CountingNet.steps == 2 * 3  # two points of (warm-up + 2 timed steps), then nothing more
    assert measurement_steps(2, 3, 2) > _CountingNet.steps
