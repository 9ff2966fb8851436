"""Attacks by one compromised edge through its own topics (what the broker's ACL allows it: publish on its result
and status topics), each in a whole federation through a real Mosquitto, against a clean twin of the same seeded
run: the attacked run ends within 0.5 accuracy point of the clean one, and the coordinator's counters show what
it dropped.

The attacker here is a separate MQTT client that publishes as ``edge3`` while the real ``edge3`` keeps training.
On the test's plain broker it also watches every task topic (which an ACL would not let it), so that it knows
which rounds ``edge3`` was not selected for and can aim its results at them: stronger than what a stolen edge
certificate allows, so what holds here holds there.

Small on purpose (scikit-learn's digits, the MLP).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
from mosquitto_util import mosquitto  # noqa: F401 - fixture

from coordinator.cli_coord import CoordOptions, run
from prunefl_common.messages import Task, TrainResult
from prunefl_common.protocol.mqtt_client import BrokerConfig, MqttClient
from prunefl_common.protocol.topics import Topics
from prunefl_common.protocol.wire import ProtocolError, decode, encode_result

K = 3  # clients per round, of 4 edges


def _opts(tmp_path: Path, url: str, name: str, **kw) -> CoordOptions:
    base = dict(broker=url, federation="t", dataset="digits", model="mlp", method="prunefl", rounds=8,
                min_clients=4, wait_timeout=60, clients_per_round=K, deadline=30, lr=0.1, local_steps=5,
                eval_every=4, reconfig_interval=4, ip_max_passes=3, spawn_edges=4, out=str(tmp_path / name),
                report=False, export_onnx=False, initial_client="edge0")
    base.update(kw)
    return CoordOptions(**base)


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _final_accuracy(out: Path) -> float:
    return [r["accuracy"] for r in _records(out) if r.get("accuracy") is not None][-1]


class Forger:
    """Publishes, as ``edge``, a result for every training round the edge was not selected for: that round and
    mask version, a zero model of the right sizes, and 10**9 samples claimed."""

    def __init__(self, url: str, edge: str = "edge3") -> None:
        self.topics = Topics("t")
        self.edge = edge
        self.rounds: dict[int, set[str]] = {}
        self.forged: list[int] = []
        self._lock = threading.Lock()
        self.client = MqttClient(BrokerConfig(url=url), client_id="mallory", subscriptions=["prunefl/t/edge/+/task"],
                                 on_message=self._on_message)

    def _on_message(self, topic: str, payload: bytes) -> None:
        where = self.topics.edge_of(topic)
        try:
            msg = decode(payload)
        except ProtocolError:
            return
        task = msg.body
        if where is None or not isinstance(task, Task) or task.kind.value != "train":
            return
        with self._lock:
            seen = self.rounds.setdefault(task.round, set())
            seen.add(where[0])
            if len(seen) < K or self.edge in seen or task.round in self.forged:
                return
            self.forged.append(task.round)
        res = TrainResult(self.edge, task.round, task.mask.version, 10**9, [np.zeros_like(v) for v in task.values],
                          loss=0.0, accuracy=1.0, compute_s=0.01)
        self.client.publish(self.topics.result(self.edge), encode_result(res, federation="t", sender=self.edge))


def test_results_for_rounds_an_edge_was_not_selected_for_do_not_count(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    clean = run(_opts(tmp_path, broker.url, "clean"), progress=False)
    forger = Forger(broker.url)
    assert forger.client.start(10)
    try:
        attacked = run(_opts(tmp_path, broker.url, "attacked"), progress=False)
    finally:
        forger.client.stop()
    train = [r for r in _records(tmp_path / "attacked") if r["stage"] == "train"]
    assert forger.forged, "edge3 was selected in every round"
    # each forged result was dropped: as not selected when it came during its round, as late when after it
    seen = sum(r["unselected_results"] for r in train) + sum(r["late_results"].count("edge3") for r in train)
    assert seen == len(forger.forged)
    assert all(r["results"] == r["clients"] == K and r["capped_weights"] == 0 for r in train)
    assert abs(_final_accuracy(tmp_path / "attacked") - _final_accuracy(tmp_path / "clean")) <= 0.005
    assert attacked.state.round == clean.state.round == 8


def _rss_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _wait(cond, timeout_s: float = 30.0) -> bool:
    import time

    end = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < end:
        time.sleep(0.05)
    return cond()


def test_oversized_and_flooded_results_cost_the_coordinator_little_memory(mosquitto, tmp_path):  # noqa: F811
    """The issue's 15.5 MiB result whose masks would have been built at 64 bytes per message byte (~1 GiB), sent
    in chunks on edge3's own result topic, then a flood of partial chunked results: the coordinator's transport,
    with the limits `prunefl-coord` derives from the model, refuses the first on its declared size and holds at
    most two of edge3's partial messages. Peak RSS (VmHWM, reset before the attack) grows by less than 64 MiB."""
    from coordinator.transport_mqtt import MqttTransport
    from prunefl_common.messages import InitialPruneResult
    from prunefl_common.protocol.chunks import split_message
    from prunefl_common.protocol.codec import _result_parts
    from prunefl_common.protocol.envelope import envelope
    from prunefl_common.protocol.wire import Limits
    from prunefl_edge.models import mlp_spec

    broker = mosquitto()
    spec = mlp_spec((1, 8, 8), (200, 200), 10)  # the digits MLP
    ps = spec.param_shapes()
    limits = Limits.for_model([p.shape for p in ps], [i for i, p in enumerate(ps) if p.prunable], "coordinator")
    tr = MqttTransport(BrokerConfig(url=broker.url), "t", None, limits=limits,
                       reassembly_bytes=limits.reassembly_budget(3))
    tr.start(10, fresh=True)
    attacker = MqttClient(BrokerConfig(url=broker.url), client_id="edge3-stolen")
    assert attacker.start(10)
    try:
        # a 32768 x 32768 mask, every 64th entry kept, delta-coded: 16 MiB of gaps at the element budget (1 byte per
        # 64 mask entries), so a decoder without the model would build a 1 GiB mask
        kind, h, tensors = _result_parts(InitialPruneResult("edge3", 0, {0: np.ones((8, 8), bool)}, [], 1),
                                         "t", "edge3")
        gaps = np.full(2**24, 64, np.uint8)
        gaps[0] = 0
        h["masks"] = [{"param": 0, "shape": [32768, 32768], "enc": "delta"}]
        msg = envelope(kind, h, {**tensors, "m0": gaps})
        assert 16 * 2**20 < len(msg) < 17 * 2**20
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        base = _rss_mib("VmRSS")
        for part in split_message(msg, 4 * 2**20, federation="t", sender="edge3"):
            attacker.publish(Topics("t").result("edge3"), part)
        assert _wait(lambda: tr.rejected_messages >= 1)
        # a flood: first chunks of 40 messages within the size limit, never completed
        blob = np.random.default_rng(0).bytes(limits.max_message_bytes - 4096)
        for _ in range(40):
            part = split_message(blob, 65536, federation="t", sender="edge3")[0]
            attacker.publish(Topics("t").result("edge3"), part)
        assert _wait(lambda: tr.counters()["partial_messages_evicted"] >= 38)
        assert tr._reasm.pending_messages <= 2 and tr._reasm.pending_bytes <= limits.reassembly_budget(3)
        grew = _rss_mib("VmHWM") - base
        assert grew < 64, f"peak RSS grew by {grew:.0f} MiB"
        counters = tr.counters()
        assert counters["rejected_messages"] >= 1 and counters["partial_messages_evicted"] >= 38, counters
    finally:
        attacker.stop()
        tr.close()


class Ghost:
    """An edge id that announces itself online with 10**12 samples and never answers a task (a stolen certificate
    on a silent device); ``got_task`` is set when a task reaches it."""

    def __init__(self, url: str, edge: str = "a-silent") -> None:
        from prunefl_common.protocol.wire import StatusMsg, encode_status

        self.edge, self.topics = edge, Topics("t")
        self.got_task = threading.Event()
        self._status = lambda state, info: encode_status(StatusMsg(state, info), federation="t", sender=edge)
        self.client = MqttClient(BrokerConfig(url=url), client_id=edge, subscriptions=[self.topics.task(edge)],
                                 on_message=lambda _t, _p: self.got_task.set())
        assert self.client.start(10)
        self.client.publish(self.topics.status(edge), self._status("online", {"n_samples": 10**12}), retain=True)

    def offline(self) -> None:
        self.client.publish(self.topics.status(self.edge), self._status("offline", {}), retain=True)

    def stop(self) -> None:
        self.offline()
        self.client.stop()


def test_a_silent_initial_pruning_client_costs_its_deadline_then_another_client_prunes(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    ghost = Ghost(broker.url)

    def leave_after_setup(rec, _edges, transport):
        if rec["stage"] == "initial_pruning":  # the ghost would be selected for rounds too: it leaves
            ghost.offline()
            assert _wait(lambda: ghost.edge not in transport.available_clients())

    try:
        run(_opts(tmp_path, broker.url, "attacked", min_clients=5, initial_client=None, initial_deadline=3),
            progress=False, hook=leave_after_setup)
    finally:
        ghost.stop()
    recs = _records(tmp_path / "attacked")
    fallback = [r for r in recs if r["stage"] == "setup_fallback"]
    assert ghost.got_task.is_set()  # chosen first: by its id, not by its 10**12 samples ...
    assert len(fallback) == 1 and fallback[0]["failed"] == [ghost.edge] and "failed" in fallback[0]["reason"]
    # ... then the next client did initial pruning, and the run is as good as one where it was chosen at once
    again = fallback[0]["next"][0]
    run(_opts(tmp_path, broker.url, "clean", initial_client=again), progress=False)
    summary = json.loads((tmp_path / "attacked" / "summary.json").read_text())
    assert summary["initial_pruning"]["client"] == again
    assert abs(_final_accuracy(tmp_path / "attacked") - _final_accuracy(tmp_path / "clean")) <= 0.005


def test_sigterm_during_initial_pruning_stops_at_once_with_the_checkpoint(mosquitto, tmp_path):  # noqa: F811
    import signal
    import subprocess
    import sys

    from coordinator.local_federation import LocalEdges
    from coordinator.state import GlobalState
    from prunefl_edge.inputs import load_data

    broker = mosquitto()
    ghost = Ghost(broker.url)
    edges = LocalEdges(tmp_path / "edges", broker.url, "t", 2, "digits", 0.2, 0)
    out = tmp_path / "run"
    try:
        edges.start(load_data("digits", 0.2, 0))
        coord = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli_coord", "--broker", broker.url, "--federation", "t", "--dataset",
             "digits", "--model", "mlp", "--rounds", "4", "--min-clients", "3", "--clients-per-round", "2",
             "--ip-max-passes", "3", "--initial-client", ghost.edge, "--out", str(out), "--no-report", "--no-onnx"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert ghost.got_task.wait(120), "the coordinator never sent the initial-pruning task"
        coord.send_signal(signal.SIGTERM)
        text = coord.communicate(timeout=60)[0].decode()  # without the fix: waits for the ghost for ever
    finally:
        ghost.stop()
        edges.stop()
    assert coord.returncode == 0, text
    assert "Traceback" not in text and "--resume starts it again" in text
    state = GlobalState.load(out / "checkpoint.npz")
    assert state.round == 0 and not state.extra.get("setup_done")
    assert json.loads((out / "summary.json").read_text())["completed"] is False


class TaskForger:
    """Without ACLs (the embedded broker, a misconfigured one) anyone can publish on an edge's task topic. Between
    rounds this sends every edge an invalid task for the next round (a mask change to and from versions nobody holds)
    and waits until every edge has published its REJECT of it, so the REJECTs are queued at the coordinator before
    the real tasks go out."""

    def __init__(self, url: str, edges: list[str]) -> None:
        self.topics, self.edges = Topics("t"), edges
        self.rejects: dict[int, set[str]] = {}
        self._cv = threading.Condition()
        self.client = MqttClient(BrokerConfig(url=url), client_id="mallory", subscriptions=[self.topics.all_results],
                                 on_message=self._on_message)
        assert self.client.start(10)

    def _on_message(self, topic: str, payload: bytes) -> None:
        from prunefl_common.protocol.wire import RejectMsg

        try:
            msg = decode(payload)
        except ProtocolError:
            return
        if isinstance(msg.body, RejectMsg):
            with self._cv:
                self.rejects.setdefault(msg.header.round, set()).add(msg.header.sender)
                self._cv.notify_all()

    def forge(self, round_: int, mask_version: int) -> None:
        from prunefl_common.mask_delta import MaskDelta
        from prunefl_common.messages import MaskUpdate, TaskKind, TrainConfig
        from prunefl_common.protocol.wire import encode_task

        v = mask_version + 1000  # a version nobody holds, from a base nobody holds: every edge REJECTs it
        bogus = Task(round_, TaskKind.TRAIN, MaskUpdate(v, delta=MaskDelta(999_999, v, {}, {})), [],
                     TrainConfig(lr=0.1))
        for e in self.edges:
            self.client.publish(self.topics.task(e), encode_task(bogus, federation="t", sender="mallory"))
        with self._cv:
            assert self._cv.wait_for(lambda: self.rejects.get(round_, set()) >= set(self.edges), 30)


def test_a_reject_of_a_forged_task_is_not_taken_as_the_answer_to_the_real_one(mosquitto, tmp_path):  # noqa: F811
    broker = mosquitto()
    clean = run(_opts(tmp_path, broker.url, "clean"), progress=False)
    forger = TaskForger(broker.url, [f"edge{i}" for i in range(4)])

    def forge_next(rec, _edges, _transport):
        if rec["stage"] == "train" and rec["round"] + 1 < 8:
            forger.forge(rec["round"] + 1, rec["mask_version"])

    try:
        attacked = run(_opts(tmp_path, broker.url, "attacked"), progress=False, hook=forge_next)
    finally:
        forger.client.stop()
    train = [r for r in _records(tmp_path / "attacked") if r["stage"] == "train"]
    assert all(r["results"] == r["clients"] == K and r["failures"] == 0 for r in train), [
        (r["results"], r["missed"]) for r in train]
    # every selected edge's REJECT of the forged task reached the coordinator before its result, and was ignored
    assert attacked.transport.unanswered_rejects == K * 7
    assert train[-1]["dropped_messages"]["unanswered_rejects"] == K * 7
    assert abs(_final_accuracy(tmp_path / "attacked") - _final_accuracy(tmp_path / "clean")) <= 0.005
    assert clean.transport.unanswered_rejects == 0


def test_a_cleared_retained_status_forgets_the_edge(mosquitto, tmp_path):  # noqa: F811
    from coordinator.transport_mqtt import MqttTransport

    broker = mosquitto()
    tr = MqttTransport(BrokerConfig(url=broker.url), "t", None)
    tr.start(10, fresh=True)
    ghost = Ghost(broker.url, "ghost1")
    try:
        assert _wait(lambda: "ghost1" in tr.available_clients())
        ghost.client.publish(Topics("t").status("ghost1"), b"", retain=True)  # what an operator does to remove it
        assert _wait(lambda: "ghost1" not in tr.available_clients() and "ghost1" not in tr.edges)
        assert tr.counters()["forgotten_edges"] == 1
        assert tr.client_info("ghost1") == {}
    finally:
        ghost.client.stop()
        tr.close()
    # a coordinator started afterwards never hears of it (the broker holds no retained status for it)
    tr2 = MqttTransport(BrokerConfig(url=broker.url), "t", None)
    tr2.start(10, fresh=True)
    try:
        assert not _wait(lambda: "ghost1" in tr2.edges, 1.0)
    finally:
        tr2.close()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_spawned_edges_die_with_their_coordinator_and_a_second_spawn_is_refused(mosquitto, tmp_path):  # noqa: F811
    import os
    import signal
    import subprocess
    import sys

    from coordinator.transport_mqtt import MqttTransport

    broker = mosquitto()
    edges: list[int] = []

    def coord(out: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli_coord", "--broker", broker.url, "--federation", "t", "--dataset",
             "digits", "--model", "mlp", "--rounds", "100000", "--min-clients", "2", "--clients-per-round", "2",
             "--ip-max-passes", "3", "--spawn-edges", "2", "--out", str(tmp_path / out), "--no-report",
             "--no-onnx"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    watch = MqttTransport(BrokerConfig(url=broker.url), "t", None, client_id="watcher")
    watch.start(10, fresh=True)
    first = coord("first")
    try:
        assert len(watch.wait_for_clients(2, 120)) == 2, "the spawned edges never came online"
        edges = _children(first.pid)
        assert len(edges) == 2
        second = coord("second")
        text = second.communicate(timeout=120)[0].decode()
        assert second.returncode == 2, text
        assert "--spawn-edges: edge0, edge1 already online in federation 't'" in text and "Traceback" not in text
        first.kill()  # kill -9: no chance to stop its edges itself
        first.wait()
        assert _wait(lambda: not any(_alive(p) for p in edges), 60), "the edges outlived their coordinator"
        assert _wait(lambda: not watch.available_clients(), 30)  # and said so (their offline status)
    finally:
        if first.poll() is None:
            first.kill()
        for p in edges:  # only if the test failed: the edges it started, by pid
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        watch.close()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_reconnect_back_off_is_jittered_and_bounded_by_the_round_deadline():
    """A 3 s broker restart at --deadline 5 must not cost the round: the first retry comes after at most
    min_backoff_s (0.5 s), at a random point (a fleet does not reconnect in step), and no wait between attempts is
    longer than max_backoff_s (2 s; the coordinator's is also at most a quarter of its deadline)."""
    firsts = set()
    for i in range(20):
        c = MqttClient(BrokerConfig(), client_id=f"c{i}")
        lo, hi = c._client._reconnect_min_delay, c._client._reconnect_max_delay
        assert 0.05 <= lo <= 0.5 and hi == 2.0
        firsts.add(lo)
    assert len(firsts) > 10
