"""bench/reproduce.py's accounting: targets, time to target with and without initial pruning, the JSON fields."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import reproduce  # noqa: E402

from prunefl_common.model_spec import ModelSpec  # noqa: E402
from prunefl_common.time_model import TimeModel, load_profile  # noqa: E402
from prunefl_edge.models import mlp_spec  # noqa: E402


def _rec(rnd: int, acc: float | None, t: float, b: int, stage: str = "train") -> dict:
    return {"round": rnd, "accuracy": acc, "sim_time_s": t, "bytes_up": b, "bytes_down": b, "stage": stage}


def _runs() -> dict:
    fed = [_rec(r, 0.80 + 0.01 * r, 10.0 * (r + 1), 100 * (r + 1)) for r in range(10)]  # ends 0.85..0.89
    ip = [_rec(-1, 0.5, 50.0, 7, "initial_pruning")]
    pf = ip + [_rec(r, 0.84 + 0.01 * r, 50.0 + 2.0 * (r + 1), 10 * (r + 1)) for r in range(10)]
    return {"fedavg": {"records": fed, "density": 1.0}, "prunefl": {"records": pf, "density": 0.12}}


def test_targets_and_to_target_both_accountings():
    runs = _runs()
    fed_final = reproduce.final_accuracy(runs["fedavg"]["records"], 5)
    assert fed_final == pytest.approx(0.87)  # mean of 0.85 .. 0.89
    targets = reproduce.targets_for(fed_final)
    assert targets == pytest.approx({"strict": 0.865, "95": 0.8265})
    s = reproduce.summarise(runs, targets, 5)
    assert s["targets"] == targets
    pf = s["methods"]["prunefl"]
    assert pf["final_accuracy"] == pytest.approx(0.91)  # the initial-pruning record is not an evaluation of FL
    assert pf["final_density"] == 0.12
    # strict 0.865: prunefl's first evaluation >= it is round 3 (0.87): 50 s of IP + 4 rounds of 2 s
    assert pf["to_target"]["strict"] == {"sim_time_s": pytest.approx(58.0), "sim_time_no_ip_s": pytest.approx(8.0),
                                         "bytes": 80}
    assert s["methods"]["fedavg"]["to_target"]["strict"]["sim_time_s"] == pytest.approx(80.0)  # round 7 (0.87)
    assert s["methods"]["fedavg"]["to_target"]["95"]["sim_time_no_ip_s"] == pytest.approx(40.0)
    table = reproduce.markdown(s)
    assert "| prunefl | 0.9100 | 0.1200 |" in table and "10.00x" in table  # 80 s / 8 s without IP


def test_never_reached_is_null():
    runs = _runs()
    s = reproduce.summarise(runs, {"strict": 0.99, "95": 0.5}, 5)
    assert s["methods"]["fedavg"]["to_target"]["strict"] is None
    assert "never" in reproduce.markdown(s)


def test_pi_proxy_profile_is_the_reference_scaled_by_model_size():
    prof = load_profile("pi-proxy-mlp")
    ref = load_profile("pi4-reference")
    conv2_10 = 800 + 51200 + 6422528 + 2048 * 10  # Conv-2's prunable weights with 10 classes
    spec: ModelSpec = mlp_spec()
    mlp = sum(p.size for p in spec.param_shapes() if p.prunable)
    assert mlp == 198800
    assert prof.intercept_s == pytest.approx(ref.intercept_s * mlp / conv2_10, rel=1e-9)
    assert prof.intercept_s == pytest.approx(0.038238, abs=1e-6)
    assert prof.comm_s_per_weight == ref.comm_s_per_weight
    tm = TimeModel.from_profile(prof, spec, 5)
    assert tm.intercept == pytest.approx(5 * 0.038238, abs=1e-5)
    assert list(reproduce.PRESETS) == ["conv2", "paper-proxy"]
    pp = reproduce.PRESETS["paper-proxy"]
    assert (pp.model, pp.clients, pp.clients_per_round, pp.profile, pp.rounds) == ("mlp", 100, 10, "pi-proxy-mlp",
                                                                                    3000)


def test_main_writes_one_chart_per_view_with_every_method(tmp_path):
    from conftest_helpers import engine_or_skip

    engine_or_skip()
    out = tmp_path / "run"
    js = tmp_path / "res" / "pp.json"
    js.parent.mkdir()
    rc = reproduce.main(["--preset", "paper-proxy", "--quick", "--rounds", "4", "--methods", "fedavg,feddst",
                         "--threads", "1", "--out", str(out), "--json", str(js)])
    assert rc == 0
    for key in ("accuracy-vs-time", "accuracy-vs-bytes"):
        svg = (tmp_path / "res" / f"pp-{key}.svg").read_text()
        assert svg.count('class="series"') == 2 and 'data-label="feddst"' in svg
    assert (out / "report.html").exists()
