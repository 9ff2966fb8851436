"""The broker configuration of firmware_scripts/provision_broker.sh, against a real Mosquitto on 127.0.0.1.

What a fleet relies on: TLS with the generated certificates works; plain TCP on the TLS listener does not; an edge
can neither publish as another edge nor read another edge's tasks nor take over its session; clients the CA does not
know (another CA's certificate, no certificate, a revoked or rotated-out certificate, a wrong password) are refused;
and a whole federation (prunefl-coord and prunefl-edge processes with their generated credentials) runs through it
without a single ACL denial.
Every "does not arrive" is checked against a control message sent after it on the same path, so no test waits on a
fixed sleep. Mosquitto and openssl missing is a failure, not a skip.
"""

from __future__ import annotations

import queue
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from mosquitto_util import Broker, find_mosquitto, free_port, running_mosquitto
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
PROVISION = ROOT / "firmware_scripts" / "provision_broker.sh"
FED = "lab"
EDGE_A, EDGE_B = "pi-a", "pi-b"
COORD = "coordinator"
TIMEOUT = 5.0  # seconds, for every wait on the broker


def task(edge: str) -> str:
    return f"prunefl/{FED}/edge/{edge}/task"


def result(edge: str) -> str:
    return f"prunefl/{FED}/edge/{edge}/result"


def status(edge: str) -> str:
    return f"prunefl/{FED}/edge/{edge}/status"


def provision(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(PROVISION), *args], check=True, capture_output=True, text=True, timeout=120)


# -- clients ----------------------------------------------------------------------------------------------------
class Client:
    """A paho-mqtt 2.x client with blocking, time-bounded helpers."""

    def __init__(self, client_id: str, creds: Path | None = None, *, tls: bool = True, with_cert: bool = True,
                 username: str | None = None, password: str | None = None,
                 protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv311) -> None:
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
        self.protocol = protocol
        if tls:
            assert creds is not None
            cert = (creds / "client.crt", creds / "client.key") if with_cert else (None, None)
            self.c.tls_set(ca_certs=str(creds / "ca.crt"), certfile=cert[0] and str(cert[0]),
                           keyfile=cert[1] and str(cert[1]), cert_reqs=ssl.CERT_REQUIRED)
        if username is not None:
            self.c.username_pw_set(username, password)
        self.c.reconnect_delay_set(30, 60)  # a refused client must not hammer the broker while the test waits
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.connected, self.ended = threading.Event(), threading.Event()
        self.connect_rc: object = None
        self.suback: queue.Queue[list] = queue.Queue()
        self.c.on_connect = self._on_connect
        self.c.on_connect_fail = lambda *_: self.ended.set()
        self.c.on_disconnect = lambda *_: self.ended.set()
        self.c.on_message = lambda _c, _u, m: self.messages.put((m.topic, m.payload))
        self.c.on_subscribe = lambda _c, _u, _mid, codes, _p: self.suback.put(list(codes))

    def _on_connect(self, _c, _u, _flags, rc, _p) -> None:
        self.connect_rc = rc
        (self.ended if rc.is_failure else self.connected).set()

    def connect(self, broker: Broker, port: int | None = None) -> bool:
        """True when the broker accepted the connection (CONNACK success) within TIMEOUT."""
        try:
            self.c.connect(broker.host, port or broker.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self.c.loop_start()
        for _ in range(int(TIMEOUT / 0.05)):
            if self.connected.is_set() or self.ended.is_set():
                break
            self.connected.wait(0.05)
        return self.connected.is_set() and not self.ended.is_set()

    def subscribe(self, topic: str) -> list:
        self.c.subscribe(topic, qos=1)
        return self.suback.get(timeout=TIMEOUT)

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(TIMEOUT)

    def receive_until(self, topic: str, payload: bytes) -> list[tuple[str, bytes]]:
        """Every message up to and including (topic, payload); fails after TIMEOUT."""
        got = []
        while True:
            try:
                msg = self.messages.get(timeout=TIMEOUT)
            except queue.Empty:
                pytest.fail(f"control message {payload!r} on {topic} never arrived; got {got}")
            got.append(msg)
            if msg == (topic, payload):
                return got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@dataclass
class Fleet:
    pki: Path          # provisioning directory of the federation
    rogue: Path        # another CA's directory, with a certificate for an edge of the same name
    broker: Broker

    def creds(self, who: str) -> Path:
        return self.pki / "clients" / who


@pytest.fixture(scope="module")
def tools() -> None:
    find_mosquitto()  # raises MosquittoMissing with the fix
    assert shutil.which("openssl"), "openssl is not installed: sudo apt-get install openssl"


@pytest.fixture(scope="module")
def fleet(tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    base = tmp_path_factory.mktemp("fleet")
    port = free_port()
    provision("init", "--dir", str(base / "pki"), "--federation", FED, "--edges", f"{EDGE_A},{EDGE_B}",
              "--port", str(port), "--bind", "127.0.0.1")
    provision("init", "--dir", str(base / "rogue"), "--federation", FED, "--edges", EDGE_A, "--port", str(port))
    conf = (base / "pki" / "broker" / "mosquitto.conf").read_text()
    with running_mosquitto(base / "broker", conf, port=port) as broker:
        yield Fleet(base / "pki", base / "rogue", broker)


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def connected(clients: list[Client], fleet: Fleet, who: str, **kw) -> Client:
    c = Client(who, fleet.creds(who), **kw)
    clients.append(c)
    assert c.connect(fleet.broker), f"{who} could not connect: {c.connect_rc}\n{fleet.broker.log()[-3000:]}"
    return c


def refused(clients: list[Client], fleet: Fleet, client: Client, port: int | None = None) -> bool:
    clients.append(client)
    return not client.connect(fleet.broker, port)


# -- tests ------------------------------------------------------------------------------------------------------
PROTOCOLS = pytest.mark.parametrize("protocol", [mqtt.MQTTv311, mqtt.MQTTv5], ids=["mqtt311", "mqtt5"])


def test_generated_config_is_locked_down(fleet: Fleet) -> None:
    conf = (fleet.pki / "broker" / "mosquitto.conf").read_text().splitlines()
    for line in ("allow_anonymous false", "require_certificate true", "use_identity_as_username true",
                 "use_username_as_clientid true", "tls_version tlsv1.2"):
        assert line in conf
    assert sum(line.startswith("listener ") for line in conf) == 1, "no plain listener unless asked"
    assert (fleet.pki / "ca" / "ca.key").stat().st_mode & 0o077 == 0
    assert (fleet.pki / "clients" / EDGE_A / "client.key").stat().st_mode & 0o077 == 0


@PROTOCOLS
def test_tls_with_generated_certificates_carries_an_edges_traffic(fleet: Fleet, clients: list[Client],
                                                                   protocol) -> None:
    coord = connected(clients, fleet, COORD, protocol=protocol)
    edge = connected(clients, fleet, EDGE_A, protocol=protocol)
    assert coord.subscribe(f"prunefl/{FED}/#")[0].value < 0x80
    assert edge.subscribe(task(EDGE_A))[0].value < 0x80
    edge.publish(status(EDGE_A), b"online", retain=True)
    edge.publish(result(EDGE_A), b"update-1")
    got = coord.receive_until(result(EDGE_A), b"update-1")
    assert (status(EDGE_A), b"online") in got
    coord.publish(task(EDGE_A), b"round-1")
    assert edge.receive_until(task(EDGE_A), b"round-1") == [(task(EDGE_A), b"round-1")]
    edge.publish(status(EDGE_A), b"", retain=True)  # clear the retained status for the next tests


def test_plain_tcp_on_the_tls_listener_is_refused(fleet: Fleet, clients: list[Client]) -> None:
    assert refused(clients, fleet, Client(COORD, tls=False))
    assert refused(clients, fleet, Client(COORD, tls=False, username=COORD, password="x"))


@PROTOCOLS
def test_edge_cannot_publish_as_another_edge(fleet: Fleet, clients: list[Client], protocol) -> None:
    coord = connected(clients, fleet, COORD, protocol=protocol)
    coord.subscribe(f"prunefl/{FED}/#")
    a = connected(clients, fleet, EDGE_A, protocol=protocol)
    forged = [result(EDGE_B), status(EDGE_B), task(EDGE_B), task(EDGE_A), f"prunefl/{FED}/coordinator",
              f"prunefl/{FED}/edge/{EDGE_B}/result/chunk/0", f"prunefl/other/edge/{EDGE_A}/result"]
    for topic in forged:
        a.publish(topic, b"forged")
    a.publish(status(EDGE_B), b"online", retain=True)
    a.publish(result(EDGE_A), b"control")
    got = coord.receive_until(result(EDGE_A), b"control")
    assert got == [(result(EDGE_A), b"control")], f"forged messages reached the coordinator: {got}"


@PROTOCOLS
def test_edge_cannot_read_another_edges_tasks(fleet: Fleet, clients: list[Client], protocol) -> None:
    coord = connected(clients, fleet, COORD, protocol=protocol)
    a = connected(clients, fleet, EDGE_A, protocol=protocol)
    b = connected(clients, fleet, EDGE_B, protocol=protocol)
    b.subscribe(task(EDGE_B))
    a.subscribe(task(EDGE_A))
    for pattern in (task(EDGE_B), f"prunefl/{FED}/edge/+/task", f"prunefl/{FED}/#", "#",
                    result(EDGE_B), status(EDGE_B)):
        a.subscribe(pattern)  # may be granted or refused in the SUBACK; what matters is what it delivers
    coord.publish(task(EDGE_B), b"secret-task")
    b.publish(result(EDGE_B), b"secret-result")
    coord.publish(task(EDGE_A), b"control")
    assert b.receive_until(task(EDGE_B), b"secret-task") == [(task(EDGE_B), b"secret-task")]
    got = a.receive_until(task(EDGE_A), b"control")
    assert all(payload == b"control" and topic == task(EDGE_A) for topic, payload in got), got


def test_edge_cannot_take_over_another_edges_session(fleet: Fleet, clients: list[Client]) -> None:
    coord = connected(clients, fleet, COORD)
    b = connected(clients, fleet, EDGE_B)
    b.subscribe(task(EDGE_B))
    # A presents B's client id: the broker replaces it with A's identity, so B stays connected
    impostor = Client(EDGE_B, fleet.creds(EDGE_A))
    clients.append(impostor)
    assert impostor.connect(fleet.broker)
    impostor.subscribe(task(EDGE_B))
    coord.publish(task(EDGE_B), b"after-impostor")
    assert b.receive_until(task(EDGE_B), b"after-impostor")
    assert not b.ended.is_set(), "edge B was disconnected by a client presenting its id"
    assert impostor.messages.empty()


def test_unknown_clients_are_refused(fleet: Fleet, clients: list[Client]) -> None:
    # a certificate with a valid edge's CN from another CA
    assert refused(clients, fleet, Client(EDGE_A, fleet.rogue / "clients" / EDGE_A))
    # TLS without a client certificate, with or without a username/password
    assert refused(clients, fleet, Client(EDGE_A, fleet.creds(EDGE_A), with_cert=False))
    assert refused(clients, fleet, Client(EDGE_A, fleet.creds(EDGE_A), with_cert=False, username=EDGE_A,
                                          password="guess"))
    # a client that does not trust the broker (another CA as its trust anchor) refuses the server itself
    rogue_trust = Client(EDGE_A, fleet.creds(EDGE_A))
    rogue_trust.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=EDGE_A)
    rogue_trust.c.tls_set(ca_certs=str(fleet.rogue / "clients" / EDGE_A / "ca.crt"),
                          certfile=str(fleet.creds(EDGE_A) / "client.crt"),
                          keyfile=str(fleet.creds(EDGE_A) / "client.key"))
    assert refused(clients, fleet, rogue_trust)


def test_rotated_and_revoked_certificates_are_refused(tools, tmp_path: Path, clients: list[Client]) -> None:
    port = free_port()
    pki = tmp_path / "pki"
    provision("init", "--dir", str(pki), "--federation", FED, "--edges", f"{EDGE_A},{EDGE_B}", "--port", str(port))
    old_a = tmp_path / "old-a"
    shutil.copytree(pki / "clients" / EDGE_A, old_a)
    provision("rotate-edge", "--dir", str(pki), EDGE_A)
    provision("revoke-edge", "--dir", str(pki), EDGE_B)
    assert f"user {EDGE_B}" not in (pki / "broker" / "acl").read_text()
    assert not (pki / "clients" / EDGE_B).exists()
    conf = (pki / "broker" / "mosquitto.conf").read_text()
    index = (pki / "ca" / "index.txt").read_text().splitlines()
    assert any(line.startswith("R") and line.endswith(f"/CN={EDGE_B}") for line in index)
    with running_mosquitto(tmp_path / "broker", conf, port=port) as broker:
        fleet = Fleet(pki, pki, broker)
        connected(clients, fleet, EDGE_A)                         # the new certificate works
        assert refused(clients, fleet, Client(EDGE_A, old_a))     # the rotated-out one is in the CRL


def test_revoked_edge_certificate_is_refused(tools, tmp_path: Path, clients: list[Client]) -> None:
    port = free_port()
    pki = tmp_path / "pki"
    provision("init", "--dir", str(pki), "--federation", FED, "--edges", EDGE_B, "--port", str(port))
    kept = tmp_path / "b"
    shutil.copytree(pki / "clients" / EDGE_B, kept)
    provision("revoke-edge", "--dir", str(pki), EDGE_B)
    conf = (pki / "broker" / "mosquitto.conf").read_text()
    with running_mosquitto(tmp_path / "broker", conf, port=port) as broker:
        assert not Client(EDGE_B, kept).connect(broker)
        ok = Client(COORD, pki / "clients" / COORD)
        clients.append(ok)
        assert ok.connect(broker)


def test_password_mode_and_plain_loopback_listener(tools, tmp_path: Path, clients: list[Client]) -> None:
    if not shutil.which("mosquitto_passwd"):
        pytest.fail("mosquitto_passwd is not installed: sudo apt-get install mosquitto")
    port, plain = free_port(), free_port()
    pki = tmp_path / "pki"
    provision("init", "--dir", str(pki), "--federation", FED, "--edges", f"{EDGE_A},{EDGE_B}", "--auth", "password",
              "--port", str(port), "--plain-loopback-port", str(plain))
    conf = (pki / "broker" / "mosquitto.conf").read_text()
    assert f"listener {plain} 127.0.0.1" in conf

    def pw(who: str) -> str:
        return (pki / "clients" / who / "password").read_text().strip()

    with running_mosquitto(tmp_path / "broker", conf, port=port) as broker:
        fleet = Fleet(pki, pki, broker)
        coord = Client(COORD, tls=False, username=COORD, password=pw(COORD))  # plain, loopback
        clients.append(coord)
        assert coord.connect(broker, plain)
        coord.subscribe(f"prunefl/{FED}/#")
        a = connected(clients, fleet, EDGE_A, with_cert=False, username=EDGE_A, password=pw(EDGE_A))
        assert refused(clients, fleet, Client(EDGE_B, fleet.creds(EDGE_B), with_cert=False, username=EDGE_B,
                                              password=pw(EDGE_A)))
        assert refused(clients, fleet, Client(EDGE_A, tls=False, username=EDGE_A, password=pw(EDGE_A)))
        assert refused(clients, fleet, Client("x", tls=False), plain)
        a.publish(result(EDGE_B), b"forged")
        a.publish(result(EDGE_A), b"control")
        assert coord.receive_until(result(EDGE_A), b"control") == [(result(EDGE_A), b"control")]


def test_revocation_takes_effect_on_reload(tools, tmp_path: Path, clients: list[Client]) -> None:
    """`systemctl reload mosquitto` (SIGHUP) after revoke-edge: the edge's ACL is gone at once, even on its open
    connection, and its certificate no longer connects (Mosquitto 2.0 re-reads the CRL on SIGHUP)."""
    port = free_port()
    pki = tmp_path / "pki"
    provision("init", "--dir", str(pki), "--federation", FED, "--edges", f"{EDGE_A},{EDGE_B}", "--port", str(port))
    kept = tmp_path / "b"
    shutil.copytree(pki / "clients" / EDGE_B, kept)
    conf = (pki / "broker" / "mosquitto.conf").read_text()
    with running_mosquitto(tmp_path / "broker", conf, port=port) as broker:
        fleet = Fleet(pki, pki, broker)
        coord = connected(clients, fleet, COORD)
        coord.subscribe(f"prunefl/{FED}/#")
        b = Client(EDGE_B, kept)
        clients.append(b)
        assert b.connect(broker)
        b.subscribe(task(EDGE_B))
        provision("revoke-edge", "--dir", str(pki), EDGE_B)
        broker.reload()
        a = connected(clients, fleet, EDGE_A)  # a fresh connection is accepted only once the reload is done
        b.publish(result(EDGE_B), b"after-revoke")
        coord.publish(task(EDGE_B), b"after-revoke")
        a.publish(result(EDGE_A), b"control")
        assert coord.receive_until(result(EDGE_A), b"control") == [(task(EDGE_B), b"after-revoke"),
                                                                   (result(EDGE_A), b"control")]
        # the task for B was published before this one: had B still been allowed to read it, it would be there now
        a.subscribe(task(EDGE_A))
        coord.publish(task(EDGE_A), b"control")
        a.receive_until(task(EDGE_A), b"control")
        time.sleep(0.2)
        assert b.messages.empty()
        assert refused(clients, fleet, Client(EDGE_B, kept))


def test_a_whole_federation_runs_through_the_provisioned_tls_broker(tools, tmp_path: Path) -> None:
    """The real programs on the real config: prunefl-coord with the coordinator's certificate and three
    prunefl-edge processes with their own, through Mosquitto with provision_broker.sh's TLS listener and ACL. The
    ACL must allow everything the protocol does (retained statuses, Last Will, tasks, chunked results) and the
    run must finish with every edge's results aggregated."""
    import json

    from coordinator.cli_coord import CoordOptions, run
    from coordinator.local_federation import LocalEdges
    from prunefl_edge.edge_config import write_edge_config
    from prunefl_edge.inputs import load_data

    edges_ids = ["edge0", "edge1", "edge2"]
    port = free_port()
    pki = tmp_path / "pki"
    provision("init", "--dir", str(pki), "--federation", FED, "--edges", ",".join(edges_ids), "--port", str(port),
              "--bind", "127.0.0.1")
    conf = (pki / "broker" / "mosquitto.conf").read_text()
    url = f"mqtts://127.0.0.1:{port}"
    with running_mosquitto(tmp_path / "broker", conf, port=port) as broker:
        edges = LocalEdges(tmp_path / "edges", url, FED, 3, "digits", 0.2, 0)
        edges.prepare(load_data("digits", 0.2, 0))
        for eid in edges_ids:  # each edge's config names its own credentials from the provisioning directory
            c, d = pki / "clients" / eid, tmp_path / "edges" / eid
            write_edge_config(edges.configs[eid], {
                "edge": {"id": eid, "federation": FED, "state_dir": str(d / "state")},
                "broker": {"url": url, "keepalive": 10, "ca_file": str(c / "ca.crt"),
                           "cert_file": str(c / "client.crt"), "key_file": str(c / "client.key")},
                "data": {"path": str(d / "train.npz"), "format": "npz"},
                "profile": {"measure": False},
            })
            edges.start_edge(eid)
        try:
            co = pki / "clients" / COORD
            out = tmp_path / "run"
            coord = run(CoordOptions(
                broker=url, ca_file=str(co / "ca.crt"), cert_file=str(co / "client.crt"),
                key_file=str(co / "client.key"), client_id=COORD, federation=FED, dataset="digits", model="mlp",
                method="prunefl", rounds=6, min_clients=3, wait_timeout=60, clients_per_round=3, deadline=30,
                lr=0.1, eval_every=3, reconfig_interval=3, ip_max_passes=3, max_payload_bytes=65536,
                out=str(out), report=False, export_onnx=False), progress=False)
        finally:
            edges.stop()
        recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in recs if r["stage"] == "train"]
        assert [r["round"] for r in train] == list(range(6))
        assert all(r["results"] == 3 and r["failures"] == 0 for r in train)
        assert coord.state.mask_version >= 2 and coord.transport.rejected_messages == 0
        log = broker.log()
        assert "denied" not in log.lower(), log[-3000:]  # the ACL allowed all the protocol needs
        # control: the same log does show a denial when an edge oversteps
        rogue = Client("edge0", pki / "clients" / "edge0")
        try:
            assert rogue.connect(broker)
            rogue.publish(f"prunefl/{FED}/edge/edge1/result", b"x")
            t0 = time.monotonic()
            while "denied" not in broker.log().lower() and time.monotonic() - t0 < TIMEOUT:
                time.sleep(0.05)
            assert "denied publish" in broker.log().lower()
        finally:
            rogue.close()
