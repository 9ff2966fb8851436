"""The edge's device profile: measured once at first start on the C core, cached, re-measured when what it was
measured under changes, announced without its raw sweeps; the coordinator's choice among announced profiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunefl_common.time_model import DeviceProfile, TimeModel, load_profile, slowest_announced
from prunefl_edge.edge_profile import PROFILE_FILE, ProfileConfig, announced, device_profile
from prunefl_edge.engine import Network
from prunefl_edge.models import mlp_spec

SHAPE, CLASSES = (1, 8, 8), 10


class CountingFactory:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, spec):
        self.calls += 1
        return Network(spec, threads=1)


def test_measured_once_then_cached(tmp_path: Path) -> None:
    cfg = ProfileConfig(model="mlp", repeat=1)
    f = CountingFactory()
    prof = device_profile(cfg, tmp_path, SHAPE, CLASSES, 1, f)
    assert f.calls == 1 and (tmp_path / PROFILE_FILE).is_file()
    assert [lp.name for lp in prof.layers] == ["fc1", "fc2", "fc3"]
    assert all(lp.s_per_weight >= 0 and lp.sparse_threshold is not None for lp in prof.layers)
    assert prof.extra["measured_under"]["threads"] == 1
    again = device_profile(cfg, tmp_path, SHAPE, CLASSES, 1, f)
    assert f.calls == 1 and again == prof  # read back, not measured
    # other threads (or model, classes, build) -> measured again
    device_profile(cfg, tmp_path, SHAPE, CLASSES, 2, f)
    assert f.calls == 2


def test_a_corrupt_cache_is_measured_again(tmp_path: Path) -> None:
    (tmp_path / PROFILE_FILE).write_text("{not json")
    f = CountingFactory()
    prof = device_profile(ProfileConfig(model="mlp", repeat=1), tmp_path, SHAPE, CLASSES, 1, f)
    assert f.calls == 1 and prof is not None
    assert json.loads((tmp_path / PROFILE_FILE).read_text())["name"] == "edge-measured"


def test_a_configured_file_or_measure_off_measures_nothing(tmp_path: Path) -> None:
    f = CountingFactory()
    assert device_profile(ProfileConfig(measure=False), tmp_path, SHAPE, CLASSES, 1, f) is None
    ref = device_profile(ProfileConfig(file="pi4-reference"), tmp_path, SHAPE, CLASSES, 1, f)
    assert ref == load_profile("pi4-reference") and f.calls == 0


def test_announced_profile_is_a_valid_profile_without_sweeps(tmp_path: Path) -> None:
    prof = device_profile(ProfileConfig(model="mlp", repeat=1), tmp_path, SHAPE, CLASSES, 1)
    data = announced(prof)
    assert "extra" not in data and len(json.dumps(data)) < 4096
    assert DeviceProfile.from_json(data).layers == prof.layers
    assert announced(None) is None


def _scaled(factor: float) -> dict:
    ref = load_profile("pi4-reference").to_json()
    ref["intercept_s"] *= factor
    ref["layers"] = [{**lp, "s_per_weight": lp["s_per_weight"] * factor} for lp in ref["layers"]]
    return ref


def test_the_coordinator_takes_the_slowest_usable_announced_profile() -> None:
    from prunefl_edge.models import conv2_spec

    spec = conv2_spec(num_classes=10)
    offers = {"fast": _scaled(0.5), "slow": _scaled(3.0), "mid": _scaled(1.0), "none": None,
              "garbage": {"format": "x"}, "nan": {**_scaled(9.0), "intercept_s": float("nan")}, "list": [1, 2]}
    eid, prof = slowest_announced(offers, spec)
    assert eid == "slow"
    full = [p.size for p in spec.param_shapes() if p.prunable]
    assert TimeModel.from_profile(prof, spec).round_time(full) == pytest.approx(
        TimeModel.from_profile(DeviceProfile.from_json(_scaled(3.0)), spec).round_time(full))
    assert slowest_announced({"a": None, "b": {"format": "x"}}, mlp_spec((1, 8, 8))) is None


def test_the_measured_profile_says_which_build_it_timed(tmp_path: Path) -> None:
    from prunefl_edge.engine import build_info

    prof = device_profile(ProfileConfig(model="mlp", repeat=1), tmp_path, SHAPE, CLASSES, 2)
    dev = json.loads((tmp_path / PROFILE_FILE).read_text())["extra"]["device"]
    assert dev == prof.extra["device"]
    assert dev["build"] == build_info() and dev["isa"] and dev["isa"] in build_info() and dev["threads"] == 2
    assert dev["cpu_model"]


def test_a_stop_during_the_first_start_profile_caches_nothing(tmp_path: Path) -> None:
    from prunefl_edge.profiler import ProfileInterrupted

    with pytest.raises(ProfileInterrupted):
        device_profile(ProfileConfig(model="mlp", repeat=1), tmp_path, SHAPE, CLASSES, 1, stop=lambda: True)
    assert not (tmp_path / PROFILE_FILE).exists()


def test_sigterm_during_the_first_start_profile_stops_the_edge(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    import numpy as np

    from prunefl_edge.edge_config import write_edge_config

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "train.npz", x_train=rng.random((40, 3, 32, 32), dtype=np.float32),
             y_train=rng.integers(0, 10, 40))
    cfg = tmp_path / "edge.toml"
    write_edge_config(cfg, {"edge": {"id": "e1", "federation": "f", "state_dir": str(tmp_path / "state")},
                            "broker": {"url": "mqtt://127.0.0.1:9"},  # never reached: the stop comes first
                            "data": {"path": str(tmp_path / "train.npz"), "format": "npz"},
                            "profile": {"measure": True, "model": "vgg11"}})  # long enough to be stopped in
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    p = subprocess.Popen([sys.executable, "-m", "prunefl_edge.cli", "start", "--config", str(cfg)],
                         stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    lines = []
    for line in p.stderr:
        lines.append(line)
        if "measuring this device's profile" in line:
            break
    p.send_signal(signal.SIGTERM)
    _, rest = p.communicate(timeout=600)
    log = "".join(lines) + rest
    assert p.returncode == 0, log
    assert "timed steps" in log and "profile interrupted" in log and "stopped before connecting" in log, log
    assert not (tmp_path / "state" / PROFILE_FILE).exists()
    assert (tmp_path / "state" / "status.json").exists()
