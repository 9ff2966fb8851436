"""Whole federations over real MQTT: the coordinator (prunefl-coord's run) and separate prunefl-edge processes,
through Mosquitto started by the test on a free loopback port, and through the embedded broker.

Small on purpose (scikit-learn's digits, the MLP, a dozen rounds): what is tested is the runtime (discovery,
tasks, results, mask changes, deadlines, restarts, resume), not the accuracy PruneFL reaches.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mosquitto_util import mosquitto  # noqa: F401 - fixture

from coordinator.cli_coord import CoordOptions, run


def _opts(tmp_path: Path, url: str, **kw) -> CoordOptions:
    base = dict(broker=url, federation="t", dataset="digits", model="mlp", method="prunefl", rounds=12,
                min_clients=4, wait_timeout=60, clients_per_round=4, deadline=30, lr=0.1, local_steps=5,
                eval_every=3, reconfig_interval=4, ip_max_passes=3, spawn_edges=4, out=str(tmp_path / "run"),
                report=False, export_onnx=False)
    base.update(kw)
    return CoordOptions(**base)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _edge_status(out: Path) -> dict[str, dict]:
    return {p.parent.parent.name: json.loads(p.read_text()) for p in sorted(out.glob("edges/*/state/status.json"))}


def _check_federation(coord, out: Path) -> None:
    recs = [r for r in _records(out) if r["stage"] == "train"]
    assert [r["round"] for r in recs] == list(range(12))
    accs = [r["accuracy"] for r in _records(out) if r.get("accuracy") is not None]
    assert accs[-1] > accs[0] + 0.05, f"accuracy did not rise: {accs}"
    assert accs[-1] > 0.6
    assert coord.state.density() < 1.0
    assert coord.state.mask_version >= 2  # initial pruning and at least one reconfiguration
    assert all(r["results"] == r["clients"] == 4 and r["failures"] == 0 for r in recs)
    # the link's measured time per kept weight (round trip minus the edge's compute), the time model's b
    assert all(r["link_s_per_weight"] is not None and 0 < r["link_s_per_weight"] < 1e-3 for r in recs)
    # the mask changes reached every edge: each holds the mask version of the last round it trained in
    status = _edge_status(out)
    assert sorted(status) == ["edge0", "edge1", "edge2", "edge3"]
    assert {s["mask_version"] for s in status.values()} == {recs[-1]["mask_version"]}
    # bytes: what the coordinator sent is what the edges received, and what they sent is what it counted
    tr = coord.transport
    # (a QoS-1 redelivery is received twice and executed once, and amqtt also hands an edge other edges' retained
    # statuses on its task topic, which it drops: the edges count both apart)
    assert tr.bytes_sent == sum(s["bytes_received"] - s["bytes_duplicate"] - s["bytes_foreign"]
                                for s in status.values())
    assert coord.state.bytes_up == sum(s["bytes_sent"] for s in status.values())
    assert coord.state.bytes_down == tr.bytes_sent
    assert tr.rejected_messages == 0


def test_federation_over_mosquitto(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    coord = run(_opts(tmp_path, broker.url), progress=False)
    _check_federation(coord, tmp_path / "run")


def test_federation_on_the_embedded_broker_with_the_edges_measured_profiles(tmp_path):
    coord = run(_opts(tmp_path, "embedded", profile="edges"), progress=False)
    out = tmp_path / "run"
    _check_federation(coord, out)
    # each edge measured its device profile at start (cached in its state_dir) and announced it; the round-time
    # model is the slowest of them, kept in OUT for --resume
    status = _edge_status(out)
    for eid, s in status.items():
        assert [lp["name"] for lp in s["profile"]["layers"]] == ["fc1", "fc2", "fc3"], eid
        assert (out / "edges" / eid / "state" / "profile.json").is_file()
    chosen = json.loads((out / "time_profile.json").read_text())
    assert chosen["name"].startswith("edge ")
    assert chosen["intercept_s"] == status[chosen["extra"]["edge"]]["profile"]["intercept_s"]


def test_an_edge_that_hangs_or_dies_mid_run_misses_rounds_and_rejoins(mosquitto, tmp_path, caplog):  # noqa: F811
    broker = mosquitto()
    caplog.set_level(logging.INFO, logger="coordinator.server")

    def disturb(rec, edges, transport):
        r, proc = rec["round"], edges.procs["edge1"]
        if r == 2:  # hung (SIGSTOP): still "online" for the broker, so round 3 waits for it until the deadline
            proc.send_signal(signal.SIGSTOP)
        elif r == 3:  # it wakes up and answers round 3 late: that result is stale and dropped
            proc.send_signal(signal.SIGCONT)
        elif r == 6:  # dies (SIGKILL): the broker publishes its Last Will, rounds go on without it
            edges.stop_edge("edge1", kill=True)
            t0 = time.monotonic()
            while "edge1" in transport.available_clients() and time.monotonic() - t0 < 30:
                time.sleep(0.05)
        elif r == 8:  # restarted: it announces itself and is chosen again
            edges.start_edge("edge1")
            assert len(transport.wait_for_clients(4, 60)) == 4

    coord = run(_opts(tmp_path, broker.url, method="fedavg", rounds=14, deadline=4), progress=False, hook=disturb)
    recs = [r for r in _records(tmp_path / "run") if r["stage"] == "train"]
    assert [r["round"] for r in recs] == list(range(14))
    hung = recs[3]
    assert (hung["clients"], hung["results"], hung["failures"]) == (4, 3, 1)  # closed at the deadline
    assert hung["wall_time_s"] - recs[2]["wall_time_s"] >= 3.5
    assert all(r["clients"] == 3 and r["failures"] == 0 for r in recs[7:9])  # gone, not waited for
    assert all(r["results"] == 4 and r["failures"] == 0 for r in recs[9:])  # back
    assert coord.state.round == 14
    assert _edge_status(tmp_path / "run")["edge1"]["tasks_done"] > 0
    # restarted, it announced the mask version of its saved state, the one the coordinator knew: no full mask
    assert "edge1 is back holding mask version" not in caplog.text


def test_broker_restart_mid_run(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()

    def disturb(rec, edges, transport):
        if rec["round"] == 3:
            broker.restart()

    run(_opts(tmp_path, broker.url, method="fedavg", rounds=10, deadline=8), progress=False, hook=disturb)
    recs = [r for r in _records(tmp_path / "run") if r["stage"] == "train"]
    assert [r["round"] for r in recs] == list(range(10))
    assert all(r["results"] <= r["clients"] for r in recs)  # no result counted twice
    assert recs[-1]["results"] == 4  # everybody is back
    assert sum(s["tasks_done"] for s in _edge_status(tmp_path / "run").values()) >= sum(r["results"] for r in recs)


def _coord_cli(tmp_path: Path, url: str, out: str, *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "coordinator.cli_coord", "--broker", url, "--federation", "t", "--dataset",
            "digits", "--model", "mlp", "--method", "fedavg", "--rounds", "8", "--min-clients", "3",
            "--clients-per-round", "3", "--deadline", "30", "--lr", "0.1", "--eval-every", "4", "--out", out,
            "--no-report", "--no-onnx", *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _edges(tmp_path: Path, url: str, name: str):
    from coordinator.local_federation import LocalEdges
    from prunefl_edge.inputs import load_data

    edges = LocalEdges(tmp_path / name, url, "t", 3, "digits", 0.2, 0)
    edges.start(load_data("digits", 0.2, 0))
    return edges


def test_coordinator_killed_and_resumed_equals_an_uninterrupted_run(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    # uninterrupted reference
    edges = _edges(tmp_path, broker.url, "edges_a")
    try:
        ref = _coord_cli(tmp_path, broker.url, str(tmp_path / "a"))
        out, _ = ref.communicate(timeout=300)
        assert ref.returncode == 0, out.decode()
    finally:
        edges.stop()
    # killed after round 3 is checkpointed, then resumed
    b = tmp_path / "b"
    edges = _edges(tmp_path, broker.url, "edges_b")
    try:
        first = _coord_cli(tmp_path, broker.url, str(b))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240:
            if (b / "metrics.jsonl").exists() and len(_records(b)) >= 4:
                break
            time.sleep(0.05)
        first.kill()
        first.communicate()
        done = len(_records(b))
        assert 4 <= done < 8
        second = _coord_cli(tmp_path, broker.url, str(b), "--resume")
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0, out.decode()
    finally:
        edges.stop()
    rounds = [r["round"] for r in _records(b) if r["stage"] == "train"]
    assert rounds == list(range(8)), rounds  # no completed round lost, none recorded twice
    assert [r["stage"] for r in _records(b)].count("resumed") == 1
    with np.load(tmp_path / "a" / "final_weights.npz") as wa, np.load(b / "final_weights.npz") as wb:
        for k in wa.files:
            np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_sigterm_stops_cleanly_and_resume_completes(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    edges = _edges(tmp_path, broker.url, "edges")
    out = tmp_path / "c"
    try:
        p = _coord_cli(tmp_path, broker.url, str(out))
        t0 = time.monotonic()
        while time.monotonic() - t0 < 240 and not ((out / "metrics.jsonl").exists() and len(_records(out)) >= 2):
            time.sleep(0.05)
        p.terminate()
        log, _ = p.communicate(timeout=120)
        assert p.returncode == 0, log.decode()
        assert b"--resume" in log
        summary = json.loads((out / "summary.json").read_text())
        assert summary["completed"] is False
        p = _coord_cli(tmp_path, broker.url, str(out), "--resume")
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, log.decode()
    finally:
        edges.stop()
    assert json.loads((out / "summary.json").read_text())["completed"] is True


def test_unreachable_broker_is_a_clear_error(tmp_path):
    from mosquitto_util import free_port

    p = subprocess.run([sys.executable, "-m", "coordinator.cli_coord", "--broker", f"mqtt://127.0.0.1:{free_port()}",
                        "--dataset", "digits", "--model", "mlp", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 4
    assert "cannot reach the MQTT broker" in p.stderr


@pytest.mark.parametrize("args,code,words", [
    (["--rounds", "0"], 2, "--rounds must be positive"),
    (["--broker", "http://x"], 2, "mqtt://host:port"),
    (["--spawn-edges", "1", "--min-clients", "2"], 2, "would never start"),
    (["--method", "reinit"], 2, "--mask-from"),
    (["--max-update-norm", "0"], 2, "--max-update-norm must be positive"),
    (["--straggler-misses", "-1"], 2, "--straggler-misses must be >= 0"),
    (["--straggler-bench", "0"], 2, "--straggler-bench must be positive"),
    (["--profile", "/nonexistent.json"], 2, "prunefl-edge profile --out FILE"),
    (["--config", "/nonexistent.toml"], 2, "does not exist"),
])
def test_bad_options_are_usage_errors(tmp_path, args, code, words):
    p = subprocess.run([sys.executable, "-m", "coordinator.cli_coord", "--out", str(tmp_path / "x"),
                        "--dataset", "digits", "--model", "mlp", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == code, p.stderr
    assert words in p.stderr


def test_a_live_coordinator_survives_10k_hostile_messages(mosquitto, tmp_path):  # noqa: F811
    from coordinator.transport_mqtt import MqttTransport
    from prunefl_common.messages import TrainResult
    from prunefl_common.protocol.mqtt_client import BrokerConfig, MqttClient
    from prunefl_common.protocol.wire import StatusMsg, encode_result, encode_status

    broker = mosquitto()
    tr = MqttTransport(BrokerConfig(broker.url), "t", None)
    tr.start()
    attacker = MqttClient(BrokerConfig(broker.url), "edge9")
    assert attacker.start(10)
    rng = np.random.default_rng(7)
    good = encode_status(StatusMsg("online", {"n_samples": 5}), federation="t", sender="edge9")
    n = 10_000
    try:
        for i in range(n):
            topic = f"prunefl/t/edge/edge9/{'result' if i % 2 else 'status'}"
            if i % 3 == 0:
                b = bytearray(good)
                b[rng.integers(0, len(b))] ^= 0xFF
                payload = bytes(b)
            elif i % 3 == 1:
                payload = good[: rng.integers(1, len(good))]
            else:
                payload = b"PFLE" + rng.bytes(rng.integers(0, 200))
            attacker.publish(topic, payload)
            if i % 500 == 499:  # in batches: a broker drops what exceeds a slow subscriber's queue (1000 here)
                t0 = time.monotonic()
                while tr.rejected_messages < i + 1 and time.monotonic() - t0 < 30:
                    time.sleep(0.01)
        # a status from another edge's name on edge9's topic is refused too
        attacker.publish("prunefl/t/edge/edge9/status",
                         encode_status(StatusMsg("online", {}), federation="t", sender="edge8"))
        # and well-formed results whose sender or client id is not the topic's edge (a client speaking for another)
        vals = [np.zeros(3, np.float32)]
        attacker.publish("prunefl/t/edge/edge9/result",
                         encode_result(TrainResult("edge8", 0, 0, 5, vals), federation="t", sender="edge8"))
        attacker.publish("prunefl/t/edge/edge9/result",
                         encode_result(TrainResult("edge8", 0, 0, 5, vals), federation="t", sender="edge9"))
        t0 = time.monotonic()
        while tr.rejected_messages < n + 3 and time.monotonic() - t0 < 60:
            time.sleep(0.05)
        assert tr.rejected_messages >= n + 3  # every one logged and counted, none crashed the network thread
        assert tr._results.empty()  # nothing reached the round loop
        assert tr.available_clients() == []
        attacker.publish("prunefl/t/edge/edge9/status", good, retain=True)
        t0 = time.monotonic()
        while tr.available_clients() != ["edge9"] and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        assert tr.available_clients() == ["edge9"]  # and it still works
    finally:
        attacker.stop()
        tr.close()


def test_coordinator_config_file_rejects_unknown_keys(tmp_path):
    cfg = tmp_path / "coord.toml"
    cfg.write_text('rounds = 3\nbogus-key = 1\n')
    p = subprocess.run([sys.executable, "-m", "coordinator.cli_coord", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2
    assert "unknown key 'bogus-key'" in p.stderr and "min_clients" in p.stderr


def test_clients_turn_nagle_off_on_every_connection_unless_asked(mosquitto):  # noqa: F811
    from prunefl_common.protocol.mqtt_client import BrokerConfig, MqttClient

    broker = mosquitto()
    on = MqttClient(BrokerConfig(broker.url), "nodelay")
    off = MqttClient(BrokerConfig(broker.url, tcp_nodelay=False), "nagle")
    try:
        assert on.start(10) and off.start(10)

        def nodelay(c) -> int:
            return c._client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)

        assert nodelay(on) != 0 and nodelay(off) == 0
        on.connected.clear()
        broker.restart()  # a new socket after the reconnection: set again
        assert on.connected.wait(30)
        assert nodelay(on) != 0
    finally:
        on.stop()
        off.stop()
