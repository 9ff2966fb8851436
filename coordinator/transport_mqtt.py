"""The coordinator's side of MQTT: tasks out on each edge's task topic, results and statuses in.

Edges are discovered from their retained status (``online`` / ``offline``, the Last Will); an edge is
available while its last status is ``online``. Results are reassembled from chunks and decoded on arrival
(paho's network thread only queues bytes). A message is accepted only from the edge its topic names (the
broker's ACL makes that the sender's identity); anything undecodable, foreign or mislabelled is logged and
counted as rejected, never raised. Duplicates (a QoS-1 redelivery after a reconnect) are dropped by message
id, so no update is aggregated twice.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from coordinator.transport import ClientFailure, Gathered, Transport
from prunefl_common.messages import InitialPruneResult, Task, TrainResult
from prunefl_common.protocol.chunks import Reassembler, split_message
from prunefl_common.protocol.codec import Decoded, RejectMsg, StatusMsg, decode, encode_task, peek_header
from prunefl_common.protocol.fields import Limits, ProtocolError
from prunefl_common.protocol.mqtt_client import BrokerConfig, MqttClient
from prunefl_common.protocol.recent import RecentIds
from prunefl_common.protocol.topics import Topics

log = logging.getLogger(__name__)


@dataclass
class EdgeInfo:
    state: str = "unknown"
    info: dict[str, Any] = field(default_factory=dict)
    since: float = 0.0


class MqttTransport(Transport):
    def __init__(self, broker: BrokerConfig, federation: str, model: dict[str, Any] | None,
                 client_id: str = "coordinator", max_payload_bytes: int = 4 * 2**20,
                 limits: Limits | None = None, offline_grace_s: float = 60.0,
                 sizes: dict[int, int] | None = None, reassembly_bytes: int | None = None) -> None:
        self.topics = Topics(federation)
        self.federation = federation
        self.sender = client_id
        self.model = model
        self.sizes = sizes  # weights per prunable parameter: lets a mask change go as a bitmap when cheaper
        self.max_payload = max_payload_bytes
        self.limits = limits or Limits()
        self.offline_grace_s = offline_grace_s
        self.edges: dict[str, EdgeInfo] = {}
        self._comebacks: dict[str, int] = {}  # edge -> times its status went from offline to online
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._results: queue.Queue[tuple[str, Decoded, float]] = queue.Queue()  # (edge, message, arrival time)
        self._sent_at: dict[str, float] = {}  # edge -> when its last task was handed to the client
        self._task_ids: dict[str, str] = {}  # edge -> msg_id of the last task sent to it (a REJECT must name it)
        self.unanswered_rejects = 0  # REJECTs that answer no task this coordinator sent (forged tasks, old edges)
        self.forgotten_edges = 0  # edges whose retained status was cleared
        self._probe = f"probe-{uuid.uuid4().hex[:12]}"  # see settle()
        self._probe_back = threading.Event()
        # partial chunked results: a budget in bytes (default two messages at the limit), two per edge, so that one
        # edge's chunk flood evicts its own partial messages only
        self._reasm = Reassembler(self.limits, max_pending_bytes=reassembly_bytes or self.limits.reassembly_budget(),
                                  max_pending_per_sender=2)
        self._seen = RecentIds(4096)  # result message ids: a redelivery is dropped, never aggregated twice
        self.rejected_messages = 0  # undecodable, foreign or mislabelled messages, and bad chunks
        self.bytes_received = 0
        self.bytes_sent = 0
        self.client = MqttClient(broker, client_id=client_id,
                                 subscriptions=[self.topics.all_status, self.topics.all_results],
                                 on_message=self._on_message)

    def start(self, wait_s: float = 30.0, fresh: bool = False) -> None:
        """Connect; ``fresh``: a new run, so first drop the broker's session of this client id (results queued
        for an earlier run, which could otherwise match this run's round and mask version). A resumed run keeps
        it: results that came while the coordinator was down are the ones it asked for."""
        if fresh:
            self.client.discard_session(min(wait_s, 10.0))
        if not self.client.start(wait_s):
            raise ConnectionError(f"cannot reach the MQTT broker at {self.client.config.url} within {wait_s:.0f} s: "
                                  "is it running, and are the URL, port and credentials right?")

    def settle(self, timeout_s: float = 3.0) -> bool:
        """Wait until the broker has delivered the retained statuses of this federation (a probe published after
        the subscription comes back after them: a broker forwards one client's messages in order); False when the
        probe did not come back in time (an ACL that forbids it: then the statuses seen so far are all there is)."""
        self._probe_back.clear()
        self.client.publish(self.topics.status(self._probe), b"")
        return self._probe_back.wait(timeout_s)

    # ---- incoming (paho network thread) -----------------------------------------------------------------
    def _reject(self, topic: str, why: str) -> None:
        self.rejected_messages += 1
        log.warning("rejected a message on %s: %s", topic, why)

    def _on_message(self, topic: str, payload: bytes) -> None:
        where = self.topics.edge_of(topic)
        if where is None:
            return
        edge, leaf = where
        self.bytes_received += len(payload)
        if leaf == "status":
            if edge == self._probe:
                self._probe_back.set()
                return
            if not payload:  # a cleared retained status: the edge is gone for good (decommissioned, or a ghost)
                with self._changed:
                    if self.edges.pop(edge, None) is not None:
                        self.forgotten_edges += 1
                        log.info("edge %s: its retained status was cleared; forgotten", edge)
                        self._changed.notify_all()
                return
            try:
                msg = decode(payload, self.limits)
            except ProtocolError as e:
                self._reject(topic, str(e))
                return
            if not isinstance(msg.body, StatusMsg) or msg.header.sender != edge:
                self._reject(topic, f"a {msg.header.kind.name} from {msg.header.sender!r} on {edge}'s status topic")
                return
            with self._changed:
                prev = self.edges.get(edge)
                self.edges[edge] = EdgeInfo(msg.body.state, dict(msg.body.info) or (prev.info if prev else {}),
                                            time.monotonic())
                if prev is None or prev.state != msg.body.state:
                    log.info("edge %s is %s", edge, msg.body.state)
                if prev is not None and prev.state == "offline" and msg.body.state != "offline":
                    self._comebacks[edge] = self._comebacks.get(edge, 0) + 1
                self._changed.notify_all()
            return
        if leaf != "result":
            return
        try:
            whole = self._reasm.feed(payload)
            if whole is None:
                return
            msg = decode(whole, self.limits)
        except ProtocolError as e:
            self._reject(topic, str(e))
            return
        if msg.header.sender != edge or msg.header.federation != self.federation:
            self._reject(topic, f"sender {msg.header.sender!r} of federation {msg.header.federation!r} on {edge}'s "
                                "result topic")
            return
        body = msg.body
        if isinstance(body, TrainResult | InitialPruneResult) and body.client_id != edge:
            self._reject(topic, f"result names client {body.client_id!r}, the topic {edge!r}")
            return
        if not isinstance(body, TrainResult | InitialPruneResult | RejectMsg):
            self._reject(topic, f"a {msg.header.kind.name} message on a result topic")
            return
        with self._lock:
            if not self._seen.add(msg.header.msg_id):
                log.info("duplicate delivery of %s from %s dropped", msg.header.msg_id, edge)
                return
        self._results.put((edge, msg, time.monotonic()))

    # ---- Transport -------------------------------------------------------------------------------------
    def available_clients(self) -> list[str]:
        with self._lock:
            return sorted(e for e, i in self.edges.items() if i.state in ("online", "busy"))

    def client_info(self, client_id: str) -> dict[str, Any]:
        with self._lock:
            e = self.edges.get(client_id)
            return dict(e.info) if e else {}

    def comebacks(self, client_id: str) -> int:
        with self._lock:
            return self._comebacks.get(client_id, 0)

    def wait_for_clients(self, n: int, timeout_s: float | None = None, progress_every_s: float = 10.0) -> list[str]:
        """Block until at least ``n`` edges are online (or the timeout passes); returns those online."""
        end = None if timeout_s is None else time.monotonic() + timeout_s
        last = 0.0
        with self._changed:
            while True:
                online = sorted(e for e, i in self.edges.items() if i.state in ("online", "busy"))
                if len(online) >= n:
                    return online
                now = time.monotonic()
                if end is not None and now >= end:
                    return online
                if now - last >= progress_every_s:
                    log.info("waiting for edges: %d of %d online (%s)", len(online), n, ", ".join(online) or "none")
                    last = now
                self._changed.wait(1.0 if end is None else max(0.01, min(1.0, end - now)))

    def send(self, client_id: str, task: Task) -> int:
        self._sent_at[client_id] = time.monotonic()
        data = encode_task(task, federation=self.federation, sender=self.sender, model=self.model, sizes=self.sizes)
        self._task_ids[client_id] = peek_header(data, self.limits).msg_id
        n = 0
        topic = self.topics.task(client_id)
        # below the packet limit in play (the broker's, read at connection, or the configured one)
        payload = self.client.payload_limit(topic, self.max_payload)
        for part in split_message(data, payload, federation=self.federation, sender=self.sender):
            self.client.publish(topic, part)
            n += len(part)
        self.bytes_sent += n
        return n

    def gather_interruptible(self, client_ids: Sequence[str], round_index: int,
                             deadline_s: float | None) -> Gathered:
        return self.gather(client_ids, round_index, deadline_s, interruptible=True)

    def gather(self, client_ids: Sequence[str], round_index: int, deadline_s: float | None,
               interruptible: bool = False) -> Gathered:
        out = Gathered()
        waiting = set(client_ids)
        end = None if deadline_s is None else time.monotonic() + deadline_s
        offline_since: dict[str, float] = {}
        while waiting:
            now = time.monotonic()
            if end is not None and now >= end:
                break
            if interruptible and self.stop is not None and self.stop.is_set():
                for e in sorted(waiting):
                    out.failures.append(ClientFailure(e, round_index, "stopped"))
                log.warning("round %d: stopped while waiting for %s", round_index, ", ".join(sorted(waiting)))
                return out
            timeout = 0.5 if end is None else max(0.0, min(0.5, end - now))
            try:
                edge, msg, arrived = self._results.get(timeout=timeout)
            except queue.Empty:
                if interruptible or end is None:  # initial pruning: give up on an edge gone for too long
                    with self._lock:
                        for e in list(waiting):
                            info = self.edges.get(e)
                            if info is not None and info.state == "offline":
                                first = offline_since.setdefault(e, time.monotonic())
                                if time.monotonic() - first > self.offline_grace_s:
                                    waiting.discard(e)
                                    out.failures.append(ClientFailure(e, round_index, "disconnected"))
                            else:
                                offline_since.pop(e, None)
                continue
            body = msg.body
            if msg.header.round != round_index or edge not in waiting:
                if isinstance(body, TrainResult | InitialPruneResult):
                    out.results.append(body)  # the coordinator drops it as stale and says so
                    out.bytes_up += msg.nbytes
                else:
                    log.info("late reject from %s for round %d ignored", edge, msg.header.round)
                continue
            if isinstance(body, RejectMsg) and body.task_id != self._task_ids.get(edge):
                self.unanswered_rejects += 1
                log.warning("round %d: a REJECT from %s that answers no task sent to it (task %s) ignored: %s",
                            round_index, edge, body.task_id, body.reason[:200])
                continue
            waiting.discard(edge)
            if isinstance(body, RejectMsg):
                out.failures.append(ClientFailure(edge, round_index, f"rejected: {body.reason}",
                                                  needs_full_mask=body.needs_full_mask))
            else:
                out.results.append(body)
                out.bytes_up += msg.nbytes
                if edge in self._sent_at:
                    out.round_trip_s[edge] = arrived - self._sent_at[edge]
        for e in sorted(waiting):
            out.failures.append(ClientFailure(e, round_index, "timeout"))
        if waiting:
            log.warning("round %d: no answer from %s by the deadline", round_index, ", ".join(sorted(waiting)))
        return out

    def counters(self) -> dict[str, int]:
        return {"rejected_messages": self.rejected_messages, "partial_messages_evicted": self._reasm.evicted,
                "partial_messages_expired": self._reasm.expired, "unanswered_rejects": self.unanswered_rejects,
                "forgotten_edges": self.forgotten_edges}

    def close(self) -> None:
        self.client.stop()
