"""Broker packet limits: Mosquitto with ``max_packet_size`` announces it in its MQTT 5 CONNACK; both sides read
it, chunk below it (PUBLISH header and topic counted) and refuse to publish above it, so a federation whose
messages exceed the limit completes with no extra flag. A run whose rounds get no results exits 4.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mosquitto_util import mosquitto  # noqa: F401 - fixture

from coordinator.cli_coord import CoordOptions, run
from prunefl_common.errors import ExitCode
from prunefl_common.protocol.chunks import Reassembler
from prunefl_common.protocol.envelope import MsgKind, envelope_kind
from prunefl_common.protocol.mqtt_client import BrokerConfig, MqttClient, PacketTooLargeError, publish_packet_size
from prunefl_common.protocol.wire import StatusMsg, encode_status


def _limited(limit: int):
    return lambda port: f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_packet_size {limit}\n"


def test_publish_packet_size_counts_the_header_and_topic():
    # fixed header byte + remaining length (1-4 bytes) + topic length (2) + topic + packet id (2) + payload
    assert publish_packet_size("a/b", 0) == 1 + 1 + 2 + 3 + 2
    assert publish_packet_size("a/b", 120) == 1 + 1 + 2 + 3 + 2 + 120  # remaining length 127: 1 byte
    assert publish_packet_size("a/b", 121) == 1 + 2 + 2 + 3 + 2 + 121  # 128: 2 bytes
    assert publish_packet_size("t", 2**20) == 1 + 3 + 2 + 1 + 2 + 2**20
    assert publish_packet_size("é", 0) == 1 + 1 + 2 + 2 + 2  # the topic's UTF-8 bytes


def test_a_configured_limit_refuses_a_larger_publish_without_sending():
    c = MqttClient(BrokerConfig(max_packet_bytes=8192), "x")  # never started: nothing can be sent anyway
    assert c.payload_limit("t/x", 4 * 2**20) == 8192 - publish_packet_size("t/x", 8192) + 8192
    with pytest.raises(PacketTooLargeError, match="8192-byte packet limit"):
        c.publish("t/x", b"\0" * 8192)


def test_the_limit_mosquitto_announces_is_read_and_exact(mosquitto):  # noqa: F811
    """A payload of exactly payload_limit() passes Mosquitto's max_packet_size; one byte more is refused here
    (and the connection stays up)."""
    broker = mosquitto(config=_limited(131072))
    got: list[bytes] = []
    came = threading.Event()

    def on_message(topic: str, payload: bytes) -> None:
        got.append(payload)
        came.set()

    sub = MqttClient(BrokerConfig(url=broker.url), "sub", subscriptions=["lim/#"], on_message=on_message)
    pub = MqttClient(BrokerConfig(url=broker.url), "pub")
    try:
        assert sub.start(10) and pub.start(10)
        assert pub.limit_known.wait(10)
        assert pub.broker_max_packet == pub.packet_limit == 131072
        topic = "lim/one"
        n = pub.payload_limit(topic, 4 * 2**20)
        assert publish_packet_size(topic, n) == 131072
        pub.publish(topic, b"\1" * n).wait_for_publish(10)
        assert came.wait(10) and len(got[0]) == n
        with pytest.raises(PacketTooLargeError, match="announced by the broker"):
            pub.publish(topic, b"\1" * (n + 1))
        assert pub.connected.is_set() and pub.connects == 1
    finally:
        pub.stop()
        sub.stop()


@pytest.mark.parametrize("limit,dataset,model", [(131072, "digits", "mlp"), (1048576, "mnist5k", "conv2")])
def test_federation_behind_a_broker_packet_limit_completes_with_no_flag(  # noqa: F811
        mosquitto, tmp_path, monkeypatch, limit, dataset, model):  # noqa: F811
    """The dense initial task (the MLP on digits: 55k weights, 221 KB > 128 KB; Conv-2 on mnist5k: 6.6M weights,
    26 MB > 1 MiB) and results with dense importance exceed the limit: they go in chunks below it, both ways."""
    broker = mosquitto(config=_limited(limit))
    published: list[tuple[str, int, MsgKind | None]] = []  # (topic, packet bytes, kind) of coordinator publishes
    real_publish = MqttClient.publish

    def publish(self, topic, payload, retain=False):
        kind = envelope_kind(payload) if topic.endswith("/task") else None
        published.append((topic, publish_packet_size(topic, len(payload)), kind))
        return real_publish(self, topic, payload, retain)

    received: list[int] = []  # sizes of the reassembled results
    real_feed = Reassembler.feed

    def feed(self, data, now=None):
        whole = real_feed(self, data, now)
        if whole is not None and whole is not data:
            received.append(len(whole))
        return whole

    monkeypatch.setattr(MqttClient, "publish", publish)
    monkeypatch.setattr(Reassembler, "feed", feed)
    opts = CoordOptions(broker=broker.url, federation="t", dataset=dataset, model=model, method="prunefl", rounds=4,
                        min_clients=2, wait_timeout=60, clients_per_round=2, deadline=60, lr=0.1, local_steps=3,
                        eval_every=2, reconfig_interval=2, ip_max_passes=2, spawn_edges=2,
                        out=str(tmp_path / "run"), report=False, export_onnx=False)
    coord = run(opts, progress=False)
    assert coord.transport.client.broker_max_packet == limit
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["stage"] == "train"]
    assert [r["round"] for r in train] == list(range(4))
    assert all(r["results"] == r["clients"] == 2 and r["failures"] == 0 for r in train)
    tasks = [(size, kind) for topic, size, kind in published if topic.endswith("/task")]
    assert max(size for size, _ in tasks) <= limit
    assert any(kind == MsgKind.CHUNK for _, kind in tasks)  # the dense initial task went in chunks
    assert max(received) > limit  # and results above the limit came back in chunks from the edges
    assert coord.transport.rejected_messages == 0


def test_a_run_whose_rounds_get_no_results_says_so_and_exits_4(mosquitto, tmp_path):  # noqa: F811
    """Two edges announce themselves online and never answer a task: every round ends with 0 results."""
    broker = mosquitto()
    edges = []
    for e in ("edge0", "edge1"):
        c = MqttClient(BrokerConfig(url=broker.url), e)
        assert c.start(10)
        c.publish(f"prunefl/t/edge/{e}/status", encode_status(StatusMsg("online", {"n_samples": 100}),
                                                              federation="t", sender=e), retain=True)
        edges.append(c)
    try:
        p = subprocess.run([sys.executable, "-m", "coordinator.cli_coord", "--broker", broker.url, "--federation",
                            "t", "--dataset", "digits", "--model", "mlp", "--method", "fedavg", "--rounds", "2",
                            "--min-clients", "2", "--clients-per-round", "2", "--deadline", "2", "--eval-every", "1",
                            "--out", str(tmp_path / "run"), "--no-report", "--no-onnx"],
                           capture_output=True, text=True, timeout=300)
    finally:
        for c in edges:
            c.stop(final=(f"prunefl/t/edge/{c.client_id}/status", b""))
    assert p.returncode == ExitCode.BROKER, p.stderr[-3000:]
    assert "no round got a result (2 rounds with tasks sent, 0 results)" in p.stderr
    assert Path(tmp_path / "run" / "summary.json").exists()  # the outputs are still written
