"""Short seeded simulations: accuracy rises, density falls, two runs agree bit for bit; the CLI's contract."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from conftest_helpers import engine_or_skip
from fake_engine import FakeNetwork
from fake_engine import SGDConfig as FakeSGD

from coordinator.cli_sim import SimOptions, main, run_simulation
from prunefl_common.errors import ExitCode


def _opts(tmp_path=None, **kw):
    base = SimOptions(dataset="digits", model="mlp", clients=8, partition="dirichlet", alpha=1.0, method="prunefl",
                      rounds=30, clients_per_round=4, lr=0.1, reconfig_interval=10, ip_max_passes=40, eval_every=5,
                      seed=3, report=False, export_onnx=False, out=str(tmp_path) if tmp_path else None)
    return dataclasses.replace(base, **kw)


def _factories(kind):
    if kind == "fake":
        return (lambda s: FakeNetwork(s)), FakeSGD
    Network, SGD = engine_or_skip()
    return (lambda s: Network(s, threads=1)), SGD


@pytest.mark.parametrize("kind", ["fake", "engine"])
def test_accuracy_rises_density_falls(kind):
    nf, sgd = _factories(kind)
    res = run_simulation(_opts(), net_factory=nf, sgd_config=sgd, progress=False)
    acc = [r["accuracy"] for r in res.records if r["accuracy"] is not None]
    assert acc[-1] > acc[0] + 0.05 and acc[-1] > 0.85  # acc[0]: after initial pruning at one non-IID client
    dens = [r["density"] for r in res.records]
    assert dens[-1] < 0.95 and min(dens) < 1.0
    assert any(r.get("reconfigured") for r in res.records)
    last = res.records[-1]
    assert last["bytes_up"] > 0 and last["bytes_down"] > 0 and last["sim_time_s"] > 0


@pytest.mark.parametrize("kind", ["fake", "engine"])
def test_seeded_runs_are_bitwise_reproducible(kind):
    nf, sgd = _factories(kind)
    a = run_simulation(_opts(rounds=12), net_factory=nf, sgd_config=sgd, progress=False)
    b = run_simulation(_opts(rounds=12), net_factory=nf, sgd_config=sgd, progress=False)
    for wa, wb in zip(a.coordinator.state.weights, b.coordinator.state.weights, strict=True):
        assert wa.tobytes() == wb.tobytes()
    clock = ("wall_time_s", "max_compute_s")  # measured wall-clock times; everything else must repeat exactly
    strip = [{k: v for k, v in r.items() if k not in clock} for r in a.records]
    assert strip == [{k: v for k, v in r.items() if k not in clock} for r in b.records]


@pytest.mark.parametrize("method", ["fedavg", "adaptive-only", "ip-only", "snip", "imp"])
def test_methods_run(method):
    nf, sgd = _factories("fake")
    res = run_simulation(_opts(method=method, rounds=20, target_density=0.3, imp_steps=4), net_factory=nf,
                         sgd_config=sgd, progress=False)
    st = res.coordinator.state
    if method == "fedavg":
        assert st.density() == 1.0
    if method in ("snip", "imp"):
        assert st.density() == pytest.approx(0.3, abs=0.02)
    if method == "ip-only":  # initial pruning's mask, never changed after it
        assert res.records[0]["stage"] == "initial_pruning"
        assert {r["mask_version"] for r in res.records[1:]} == {res.records[0]["mask_version"]}


def test_reinit_from_a_run(tmp_path):
    nf, sgd = _factories("fake")
    run_simulation(_opts(tmp_path / "a", rounds=12), net_factory=nf, sgd_config=sgd, progress=False)
    assert (tmp_path / "a" / "metrics.jsonl").exists()
    recs = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["stage"] == "initial_pruning" and recs[-1]["round"] == 11
    for m in ("reinit", "random-reinit"):
        res = run_simulation(_opts(method=m, mask_from=str(tmp_path / "a"), rounds=5), net_factory=nf,
                             sgd_config=sgd, progress=False)
        with np.load(tmp_path / "a" / "final_mask.npz") as f:
            for k in f.files:
                np.testing.assert_array_equal(res.coordinator.state.masks[int(k[1:])], f[k])


def test_cli_exit_codes(tmp_path, capsys):
    assert main(["--rounds", "0"]) == ExitCode.USAGE
    assert "rounds" in capsys.readouterr().err
    assert main(["--method", "reinit"]) == ExitCode.USAGE
    assert "--mask-from" in capsys.readouterr().err
    cfg = tmp_path / "c.toml"
    cfg.write_text('rounds = 3\nbogus_key = 1\n')
    assert main(["--config", str(cfg)]) == ExitCode.USAGE
    assert "bogus_key" in capsys.readouterr().err
    cfg.write_text('rounds = [')
    assert main(["--config", str(cfg)]) == ExitCode.USAGE
    assert main(["--dataset", "nope", "--rounds", "1", "-q"]) == ExitCode.DATA
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == ExitCode.OK
