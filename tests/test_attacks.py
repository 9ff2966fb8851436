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
