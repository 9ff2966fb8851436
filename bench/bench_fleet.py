"""Fleet load: what one coordinator and one Mosquitto broker cost per round as the number of edges grows.

For each N in ``--edges`` (default 10, 50, 120) the script starts a fresh Mosquitto on a free loopback port, N
*light* edges and the real coordinator (:class:`coordinator.server.Coordinator` over
:class:`coordinator.transport_mqtt.MqttTransport`, assembled as ``prunefl-coord`` does it), each in its own
process, and runs ``--rounds`` rounds with all N edges selected in every round.

A light edge is a real MQTT client (:class:`prunefl_common.protocol.mqtt_client.MqttClient`, its own connection,
Last Will and retained "online" status like ``prunefl-edge``) that does not train: it decodes each task,
answers after a simulated training time (``--train-s``) with a TrainResult whose values are precomputed per mask
version (its own weights' kept values under the task's mask; a few weight variants are shared by the edges of a
worker process), chunked like the real edge, and re-announces its status after every task like the real edge.
The method is FedAvg under a fixed random mask of ``--density`` (``fixed-mask``; plain ``fedavg`` at density 1):
sparse messages, no reconfiguration, so every edge can answer every round without training.

Measured per N (the first round, which also sends the full mask, is left out when there are two or more):

* round: wall time of ``Coordinator.run_round`` (median), and the slowest edge's simulated training;
* overhead = round - slowest training: what the coordinator, the broker and the network add;
* coordinator CPU per round (``time.process_time`` of the coordinator process: its main thread and paho's
  network thread, where results are decoded) and its peak RSS (``ru_maxrss``);
* broker and light-edge CPU per round (``/proc/<pid>/stat``, 10 ms ticks: a mean over the rounds), for context:
  on a small machine all of them share the cores with the coordinator;
* bytes per round: tasks + results in wire format (statuses not counted);
* reference, measured in the same coordinator process after the rounds: the same round's message work done
  in-process without MQTT (encode the N tasks, decode the N results and N statuses, check and aggregate them), and
  the ratio overhead / in-process.

Run it (the C library is only needed by the model import; Mosquitto must be installed)::

    PRUNEFL_EDGE_LIB=build/native/libprunefl.so python bench/bench_fleet.py [--edges 10,50,120] [--rounds 5]
        [--density 0.1] [--model mlp|conv2] [--train-s 0.1] [--edge-procs 2] [--json fleet.json]

Reading the result: "overhead" at N is the latency a round pays for the fleet's size beyond training; divide by
N for the cost per edge; "x in-process" says how much of it is message transport and scheduling rather than the
coordinator's unavoidable encode/decode/check/aggregate work. Measured on the 2-core development machine (light
edges, broker and coordinator sharing both cores; ``--rounds 6`` and ``--model conv2 --edges 10,50,100
--rounds 4``):

* MLP on digits, density 0.1 (50 kB per edge per round): 47 / 49 / 96 ms overhead per round at 10 / 50 / 120 edges,
  coordinator CPU 9 / 39 / 77 ms per round, peak RSS 62 / 64 / 67 MB, measured with Nagle's algorithm on (paho's
  and Mosquitto's default; ``--nagle`` now). The 10-edge figure was mostly Nagle meeting delayed ACKs on small
  messages: 12 ms with TCP_NODELAY on the clients and in Mosquitto, which the runtime (``BrokerConfig.tcp_nodelay``)
  and firmware_scripts/provision_broker.sh now set and this script uses by default. (On a later, slower machine
  with one core busy the two were within noise: 36-50 ms without Nagle, 47-49 ms with.)
* Conv-2 on MNIST, density 0.1 (5.2 MB per edge per round, task and result): 0.11 / 0.61 / 1.15 s overhead at
  10 / 50 / 100 edges, coordinator CPU 8 ms per edge per round, peak RSS 223 / 354 / 511 MB, 2.4-3.0x the
  in-process work.

So the coordinator's cost is linear in N, about 8 ms of one core per Conv-2 edge per round: against a Pi 4's
Conv-2 round (tens of seconds) one coordinator core keeps up with thousands of edges, and the broker's network link
is the first limit (100 edges x 5.2 MB = 0.5 GB per round, ~5 s on gigabit Ethernet). Beyond one broker's reach
use an MQTT broker cluster (e.g. EMQX, or Mosquitto bridges), keeping the coordinator one subscriber; the
coordinator is stateless apart from its checkpoint, so it can be restarted or moved (``prunefl-coord --resume``)
without the edges noticing more than a delayed task.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import math
import multiprocessing as mp
import os
import queue
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from coordinator.aggregation import aggregate_results, kept_index  # noqa: E402
from coordinator.result_check import train_result_problem  # noqa: E402
from prunefl_common.mask_delta import MaskDeltaError, apply_mask_delta  # noqa: E402
from prunefl_common.messages import MaskUpdate, Task, TaskKind, TrainConfig, TrainResult, kept_values  # noqa: E402
from prunefl_common.protocol import wire  # noqa: E402
from prunefl_common.protocol.chunks import Reassembler, split_message  # noqa: E402
from prunefl_common.protocol.mqtt_client import BrokerConfig, MqttClient  # noqa: E402
from prunefl_common.protocol.recent import RecentIds  # noqa: E402
from prunefl_common.protocol.topics import Topics  # noqa: E402

log = logging.getLogger("bench_fleet")

FEDERATION = "fleet"
SOFTWARE = "bench-fleet light edge"
VARIANTS = 4  # distinct weight sets per edge worker (edge k answers with variant k % VARIANTS)
MAX_PAYLOAD = 4 * 2**20  # prunefl-edge's and prunefl-coord's default max_payload_bytes
LOCAL_STEPS = 5
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- shared helpers ------------------------------------------------------------------------------------------------
def edge_id(i: int) -> str:
    return f"edge-{i:04d}"


def variant_weights(weights: Sequence[np.ndarray], variant: int) -> list[np.ndarray]:
    """An edge's "trained" weights: the initial ones plus a small fixed shift (so updates differ by edge)."""
    shift = np.float32(1e-3 * (variant + 1))
    return [np.asarray(w, np.float32) + shift for w in weights]


def fixed_masks(weights: Sequence[np.ndarray], prunable: Sequence[int], density: float,
                seed: int) -> dict[int, np.ndarray]:
    """A random mask keeping ``density`` of every prunable weight (at least one per parameter)."""
    rng = np.random.default_rng([seed, 99])
    out = {}
    for p in prunable:
        m = rng.random(weights[p].shape) < density
        if not m.any():
            m.reshape(-1)[0] = True
        out[p] = m
    return out


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process from /proc (0.0 when it is gone)."""
    try:
        fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields_[11]) + int(fields_[12])) / CLK_TCK  # fields 14 and 15 of stat(5), after "(comm)"


def proc_status_kb(pid: int | str, key: str) -> int:
    """A ``kB`` line of /proc/<pid>/status (VmHWM, VmRSS), 0 when unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def setup_logging(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(processName)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    if level > logging.DEBUG:  # one line per connection / status change is noise at 120 edges
        for name in ("prunefl_common.protocol.mqtt_client", "coordinator.transport_mqtt"):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))


# ---- light edges (worker processes) --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EdgeJob:
    url: str
    ids: tuple[str, ...]
    first_index: int  # index of ids[0] in the fleet (variant and sample count)
    model: str
    num_classes: int
    input_shape: tuple[int, int, int]
    seed: int
    train_s: float
    n_samples: int
    tcp_nodelay: bool
    log_level: int


@dataclass
class LightEdge:
    """One simulated device: its connection, its chunk reassembler, the masks it holds and its counters."""

    id: str
    variant: int
    n_samples: int
    client: MqttClient | None = None
    reasm: Reassembler = field(default_factory=Reassembler)
    seen: RecentIds = field(default_factory=lambda: RecentIds(64))
    masks: dict[int, dict[int, np.ndarray]] = field(default_factory=dict)  # mask version -> masks (last two)
    counters: dict[str, int] = field(default_factory=lambda: {"tasks_done": 0, "tasks_rejected": 0,
                                                              "bytes_received": 0, "bytes_sent": 0})


class LightFleet:
    """Many light edges in one process: paho's network threads only queue the payloads; one thread decodes the
    tasks, finds the precomputed answer and publishes it when the simulated training is over."""

    def __init__(self, job: EdgeJob) -> None:
        from prunefl_edge.inputs import load_model

        self.job = job
        self.topics = Topics(FEDERATION)
        self.spec, weights = load_model(job.model, job.num_classes, job.input_shape, job.seed)
        self.variants = [variant_weights(weights, v) for v in range(VARIANTS)]
        self._values: dict[tuple[int, int], list[np.ndarray]] = {}  # (variant, mask version) -> kept values
        self.inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._due: list[tuple[float, int, str, list[bytes]]] = []  # heap of answers waiting for "training"
        self._seq = 0
        self.edges: dict[str, LightEdge] = {}
        bc = BrokerConfig(url=job.url, tcp_nodelay=job.tcp_nodelay)
        for k, eid in enumerate(job.ids):
            idx = job.first_index + k
            e = LightEdge(eid, idx % VARIANTS, job.n_samples)
            e.client = MqttClient(bc, client_id=eid, subscriptions=[self.topics.task(eid)],
                                  on_message=self._queue_for(eid),
                                  will=(self.topics.status(eid), self._status(e, "offline")),
                                  on_connect=self._announcer(e))
            self.edges[eid] = e

    def _queue_for(self, eid: str) -> Any:
        def on_message(topic: str, payload: bytes) -> None:
            self.inbox.put((eid, payload))
        return on_message

    def _announcer(self, e: LightEdge) -> Any:
        def announce() -> None:
            self._announce(e)
        return announce

    def _status(self, e: LightEdge, state: str) -> bytes:
        info: dict[str, Any] = {}
        if state != "offline":
            held = max(e.masks, default=-1)
            info = {"n_samples": e.n_samples, "threads": 1, "num_classes": self.job.num_classes,
                    "input_shape": list(self.job.input_shape), "software": SOFTWARE, "mask_version": held,
                    "profile": None, **e.counters}
        return wire.encode_status(wire.StatusMsg(state, info), federation=FEDERATION, sender=e.id)

    def _announce(self, e: LightEdge) -> None:
        assert e.client is not None
        e.client.publish(self.topics.status(e.id), self._status(e, "online"), retain=True)

    def kept(self, variant: int, version: int, masks: dict[int, np.ndarray]) -> list[np.ndarray]:
        key = (variant, version)
        if key not in self._values:
            self._values[key] = kept_values(self.variants[variant], masks)
            for old in [k for k in self._values if k[1] < version - 1]:
                del self._values[old]
        return self._values[key]

    # ---- a task ------------------------------------------------------------------------------------------------
    def handle(self, eid: str, payload: bytes, now: float) -> None:
        e = self.edges[eid]
        e.counters["bytes_received"] += len(payload)
        try:
            whole = e.reasm.feed(payload, now)
            if whole is None:
                return
            msg = wire.decode(whole)
        except wire.ProtocolError as err:
            log.warning("%s: dropped an undecodable task message: %s", eid, err)
            return
        task = msg.body
        if not isinstance(task, Task) or msg.header.federation != FEDERATION:
            log.warning("%s: dropped a %s message on the task topic", eid, msg.header.kind.name)
            return
        if not e.seen.add(msg.header.msg_id):
            return  # a QoS-1 redelivery
        mu = task.mask
        masks: dict[int, np.ndarray] | None
        if mu.full is not None:
            masks = {p: np.asarray(m, bool) for p, m in mu.full.items()}
        elif mu.delta is not None:
            base = e.masks.get(mu.delta.base_version)
            try:
                masks = None if base is None else apply_mask_delta(base, mu.delta, mu.delta.base_version)
            except MaskDeltaError:
                masks = None
        else:
            masks = e.masks.get(mu.version)
        if masks is None:
            self._send(e, now, [wire.encode_reject(wire.RejectMsg(f"mask version {mu.version} unknown here", True),
                                              federation=FEDERATION, sender=e.id, round=task.round,
                                              mask_version=mu.version)])
            e.counters["tasks_rejected"] += 1
            return
        e.masks[mu.version] = masks
        for v in [v for v in e.masks if v < mu.version - 1]:
            del e.masks[v]
        result = TrainResult(e.id, task.round, mu.version, e.n_samples, self.kept(e.variant, mu.version, masks),
                             None, loss=0.5, accuracy=0.8, compute_s=self.job.train_s)
        data = wire.encode_result(result, federation=FEDERATION, sender=e.id)
        parts = split_message(data, MAX_PAYLOAD, federation=FEDERATION, sender=e.id)
        e.counters["tasks_done"] += 1
        self._send(e, now + self.job.train_s, parts)

    def _send(self, e: LightEdge, due: float, parts: list[bytes]) -> None:
        self._seq += 1
        heapq.heappush(self._due, (due, self._seq, e.id, parts))

    def publish_due(self, now: float) -> None:
        while self._due and self._due[0][0] <= now:
            _, _, eid, parts = heapq.heappop(self._due)
            e = self.edges[eid]
            assert e.client is not None
            for part in parts:
                e.client.publish(self.topics.result(eid), part)
                e.counters["bytes_sent"] += len(part)
            self._announce(e)  # like prunefl-edge after every task

    # ---- the loop ----------------------------------------------------------------------------------------------
    def run(self, stop: Any) -> None:
        for e in self.edges.values():
            assert e.client is not None
            e.client.start()
        try:
            while not stop.is_set():
                now = time.monotonic()
                wait = 0.2 if not self._due else min(0.2, max(0.0, self._due[0][0] - now))
                try:
                    eid, payload = self.inbox.get(timeout=wait)
                except queue.Empty:
                    pass
                else:
                    self.handle(eid, payload, time.monotonic())
                self.publish_due(time.monotonic())
        finally:
            for e in self.edges.values():
                assert e.client is not None
                e.client.stop()


def edge_worker(job: EdgeJob, stop: Any) -> None:
    """Process entry point: run ``job.ids`` as light edges until ``stop`` is set."""
    setup_logging(job.log_level)
    LightFleet(job).run(stop)


# ---- the coordinator (its own process, so its CPU and RSS are its own) ---------------------------------------------
@dataclass(frozen=True)
class CoordJob:
    url: str
    n_edges: int
    rounds: int
    model: str
    num_classes: int
    input_shape: tuple[int, int, int]
    density: float
    seed: int
    deadline_s: float
    connect_timeout_s: float
    broker_pid: int
    worker_pids: tuple[int, ...]
    tcp_nodelay: bool
    log_level: int


def in_process_round(coord: Any, n_edges: int, repeat: int = 7) -> float:
    """Median seconds of one round's message work without MQTT: encode the N tasks (as ``MqttTransport.send``),
    wire.decode N results and N statuses, check the results (as ``run_round``) and aggregate them."""
    st = coord.state
    tr = coord.transport
    sent = kept_values(st.weights, st.masks)
    variants = [kept_values(variant_weights(st.weights, v), st.masks) for v in range(VARIANTS)]
    ids = [edge_id(i) for i in range(n_edges)]
    results = [wire.encode_result(TrainResult(cid, st.round, st.mask_version, 100, variants[i % VARIANTS], None, 0.5,
                                              0.8, 0.1), federation=FEDERATION, sender=cid)
               for i, cid in enumerate(ids)]
    statuses = [wire.encode_status(wire.StatusMsg("online", {"n_samples": 100, "threads": 1, "software": SOFTWARE}),
                                   federation=FEDERATION, sender=cid) for cid in ids]
    cfg = TrainConfig(lr=coord.config.lr, local_steps=coord.config.local_steps, batch_size=coord.config.batch_size)
    index = kept_index(st.masks)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _cid in ids:
            task = Task(st.round, TaskKind.TRAIN, MaskUpdate(st.mask_version), sent, cfg)
            data = wire.encode_task(task, federation=FEDERATION, sender=tr.sender, model=tr.model, sizes=tr.sizes)
            split_message(data, MAX_PAYLOAD, federation=FEDERATION, sender=tr.sender)
        for s in statuses:
            wire.decode(s)
        got = [wire.decode(b).body for b in results]
        for r in got:
            if train_result_problem(r, st.masks, coord.shapes, True, sent, None) is not None:
                raise RuntimeError("the in-process reference built an invalid result")
        aggregate_results(st.weights, st.masks, got, st.round, st.mask_version, index)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def coordinator_worker(job: CoordJob, out: Any) -> None:
    """Process entry point: the real coordinator over MQTT for ``job.rounds`` rounds; puts its figures on ``out``."""
    setup_logging(job.log_level)
    try:
        out.put(run_coordinator(job))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises
        log.exception("coordinator failed")
        out.put({"error": f"{type(e).__name__}: {e}"})


def run_coordinator(job: CoordJob) -> dict[str, Any]:
    from coordinator.methods import FedAvg, FixedMask
    from coordinator.server import Coordinator, ServerConfig
    from coordinator.state import GlobalState
    from coordinator.transport_mqtt import MqttTransport
    from prunefl_common.model_spec import spec_to_dict
    from prunefl_common.time_model import TimeModel, load_profile
    from prunefl_edge.inputs import load_model

    spec, weights = load_model(job.model, job.num_classes, job.input_shape, job.seed)
    pshapes = spec.param_shapes()
    prunable = [i for i, p in enumerate(pshapes) if p.prunable]
    time_model = TimeModel.from_profile(load_profile("pi4-reference"), spec, LOCAL_STEPS)
    ones = {i: np.ones(pshapes[i].shape, bool) for i in prunable}
    state = GlobalState.create(weights, ones, job.seed)
    method = FedAvg() if job.density >= 1 else FixedMask(fixed_masks(weights, prunable, job.density, job.seed),
                                                         None, "fixed-mask")
    bc = BrokerConfig(url=job.url, tcp_nodelay=job.tcp_nodelay)
    transport = MqttTransport(bc, FEDERATION, spec_to_dict(spec), client_id="coordinator",
                              max_payload_bytes=MAX_PAYLOAD, sizes={i: pshapes[i].size for i in prunable})
    try:
        transport.start()
        rss_start_kb = proc_status_kb("self", "VmRSS")
        t0 = time.perf_counter()
        online = transport.wait_for_clients(job.n_edges, job.connect_timeout_s)
        connect_s = time.perf_counter() - t0
        if len(online) < job.n_edges:
            raise ConnectionError(f"{len(online)} of {job.n_edges} edges online after {job.connect_timeout_s:.0f} s")
        log.info("%d edges online after %.1f s", len(online), connect_s)
        rss_setup_kb = proc_status_kb("self", "VmHWM")  # the model import's transient peak is in here
        with contextlib.suppress(OSError):  # from here VmHWM is the peak of the rounds (proc(5): clear_refs)
            Path("/proc/self/clear_refs").write_text("5")
        # no evaluator: evaluation costs the same at any N (and eval_every is beyond the run anyway)
        cfg = ServerConfig(rounds=job.rounds + 1, clients_per_round=job.n_edges, lr=0.1, local_steps=LOCAL_STEPS,
                           eval_every=job.rounds + 1, deadline_s=job.deadline_s)
        coord = Coordinator(transport, method, state, spec, cfg, time_model, None, None)
        coord.setup()
        rounds = []
        for _ in range(job.rounds):
            b0 = (state.bytes_down, state.bytes_up, transport.bytes_sent, transport.bytes_received)
            cpu0 = (time.process_time(), proc_cpu_s(job.broker_pid), sum(proc_cpu_s(p) for p in job.worker_pids))
            t = time.perf_counter()
            rec = coord.run_round()
            wall = time.perf_counter() - t
            cpu1 = (time.process_time(), proc_cpu_s(job.broker_pid), sum(proc_cpu_s(p) for p in job.worker_pids))
            rounds.append({"round": rec["round"], "wall_s": wall, "max_train_s": rec["max_compute_s"] or 0.0,
                           "results": rec["results"], "failures": rec["failures"],
                           "coord_cpu_s": cpu1[0] - cpu0[0], "broker_cpu_s": cpu1[1] - cpu0[1],
                           "edges_cpu_s": cpu1[2] - cpu0[2],
                           "bytes_down": state.bytes_down - b0[0], "bytes_up": state.bytes_up - b0[1],
                           "mqtt_bytes_out": transport.bytes_sent - b0[2],
                           "mqtt_bytes_in": transport.bytes_received - b0[3]})
            log.info("N=%d round %d: %.0f ms, %d/%d results", job.n_edges, rec["round"], wall * 1e3, rec["results"],
                     job.n_edges)
        rounds_hwm_kb = proc_status_kb("self", "VmHWM")  # before the reference allocates
        peak_rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        broker_hwm_kb = proc_status_kb(job.broker_pid, "VmHWM")
        ref_s = in_process_round(coord, job.n_edges)
        return {"n_edges": job.n_edges, "connect_s": connect_s, "rounds": rounds,
                "coord_rss_start_kb": rss_start_kb, "coord_setup_peak_kb": rss_setup_kb,
                "coord_rounds_peak_kb": rounds_hwm_kb, "coord_ru_maxrss_kb": peak_rss_kb,
                "broker_peak_rss_kb": broker_hwm_kb, "in_process_s": ref_s, "density": state.density(),
                "rejected_messages": transport.rejected_messages}
    finally:
        transport.close()


# ---- one N -----------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def lean_mosquitto(workdir: Path, tcp_nodelay: bool = True, attempts: int = 3) -> Iterator[Any]:
    """Mosquitto on a free loopback port with its default limits; logging of errors and warnings only (the tests'
    helper logs every packet, which would be part of the measurement); ``set_tcp_nodelay`` as
    firmware_scripts/provision_broker.sh configures it, unless ``tcp_nodelay`` is False."""
    from mosquitto_util import Broker, MosquittoError, free_port

    workdir.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        port = free_port()
        log_path = workdir / "mosquitto.log"
        lines = [f"listener {port} 127.0.0.1", "allow_anonymous true", "persistence false",
                 f"log_dest file {log_path}", "log_type error", "log_type warning"]
        if tcp_nodelay:
            lines.append("set_tcp_nodelay true")
        if os.geteuid() == 0:
            lines.append("user root")
        conf = workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        broker = Broker("127.0.0.1", port, workdir, conf, log_path)
        try:
            broker.start()
            break
        except MosquittoError:
            if attempt == attempts - 1:
                raise
    try:
        yield broker
    finally:
        broker.stop()


def run_fleet(n: int, args: argparse.Namespace, num_classes: int, input_shape: tuple[int, int, int],
              n_train: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    with (tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp,
          lean_mosquitto(Path(tmp) / "broker", not args.nagle) as broker):
        stop = ctx.Event()
        procs = max(1, min(args.edge_procs, n))
        per = math.ceil(n / procs)
        n_samples = max(1, n_train // n)
        workers = []
        try:
            for w in range(procs):
                lo, hi = w * per, min(n, (w + 1) * per)
                if lo >= hi:
                    break
                job = EdgeJob(broker.url, tuple(edge_id(i) for i in range(lo, hi)), lo, args.model, num_classes,
                              input_shape, args.seed, args.train_s, n_samples, not args.nagle, level)
                p = ctx.Process(target=edge_worker, args=(job, stop), name=f"edges-{w}", daemon=True)
                p.start()
                workers.append(p)
            out = ctx.Queue()
            assert broker.process is not None
            cjob = CoordJob(broker.url, n, args.rounds, args.model, num_classes, input_shape, args.density, args.seed,
                            args.deadline, args.connect_timeout, broker.process.pid,
                            tuple(p.pid for p in workers if p.pid is not None), not args.nagle, level)
            coord = ctx.Process(target=coordinator_worker, args=(cjob, out), name="coordinator", daemon=True)
            coord.start()
            limit = time.monotonic() + args.connect_timeout + args.rounds * (args.deadline + 30) + 120
            while True:
                try:
                    res: dict[str, Any] = out.get(timeout=1.0)
                    break
                except queue.Empty:
                    if not coord.is_alive() or time.monotonic() > limit:
                        raise RuntimeError(f"N={n}: the coordinator process ended without a result "
                                           f"(exit code {coord.exitcode}); broker log:\n{broker.log()}") from None
            coord.join(30)
            if "error" in res:
                raise RuntimeError(f"N={n}: {res['error']}")
            return res
        finally:
            stop.set()
            for p in workers:
                p.join(30)
                if p.is_alive():
                    p.terminate()
                    p.join(5)


# ---- summary and output ----------------------------------------------------------------------------------------------
def summarize(res: dict[str, Any]) -> dict[str, Any]:
    rounds = res["rounds"]
    warm = rounds[1:] if len(rounds) > 1 else rounds
    over = [r["wall_s"] - r["max_train_s"] for r in warm]

    def mean(key: str) -> float:
        return sum(r[key] for r in warm) / len(warm)

    s = {"edges": res["n_edges"], "measured_rounds": len(warm),
         "round_ms": statistics.median(r["wall_s"] for r in warm) * 1e3,
         "train_ms": statistics.median(r["max_train_s"] for r in warm) * 1e3,
         "overhead_ms": statistics.median(over) * 1e3,
         "first_round_overhead_ms": (rounds[0]["wall_s"] - rounds[0]["max_train_s"]) * 1e3,
         "coord_cpu_ms": mean("coord_cpu_s") * 1e3, "broker_cpu_ms": mean("broker_cpu_s") * 1e3,
         "edges_cpu_ms": mean("edges_cpu_s") * 1e3,
         "coord_rss_start_mb": res["coord_rss_start_kb"] / 1024,
         "coord_peak_rss_mb": res["coord_rounds_peak_kb"] / 1024,
         "broker_peak_rss_mb": res["broker_peak_rss_kb"] / 1024,
         "bytes_per_round": mean("bytes_down") + mean("bytes_up"),
         "mqtt_bytes_per_round": mean("mqtt_bytes_out") + mean("mqtt_bytes_in"),
         "results": min(r["results"] for r in rounds), "failures": sum(r["failures"] for r in rounds),
         "connect_s": res["connect_s"], "in_process_ms": res["in_process_s"] * 1e3}
    s["overhead_per_edge_ms"] = s["overhead_ms"] / s["edges"]
    s["overhead_vs_in_process"] = s["overhead_ms"] / s["in_process_ms"] if s["in_process_ms"] > 0 else float("nan")
    return s


def table(rows: Sequence[dict[str, Any]]) -> str:
    head = ["edges", "results", "round ms", "slowest training ms", "overhead ms", "per edge ms", "coord CPU ms",
            "broker CPU ms", "light edges CPU ms", "coord RSS MB before / peak in rounds", "bytes/round",
            "in-process ms", "overhead / in-process"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    for s in rows:
        cells = [str(s["edges"]), f"{s['results']}/{s['edges']}", f"{s['round_ms']:.0f}", f"{s['train_ms']:.0f}",
                 f"{s['overhead_ms']:.0f}", f"{s['overhead_per_edge_ms']:.2f}", f"{s['coord_cpu_ms']:.0f}",
                 f"{s['broker_cpu_ms']:.0f}", f"{s['edges_cpu_ms']:.0f}",
                 f"{s['coord_rss_start_mb']:.0f} / {s['coord_peak_rss_mb']:.0f}",
                 f"{s['bytes_per_round'] / 1e6:.2f} MB", f"{s['in_process_ms']:.1f}",
                 f"{s['overhead_vs_in_process']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_edges(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--edges {text!r}: a comma-separated list of integers") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"--edges {text!r}: positive integers")
    return out


def raise_nofile() -> None:
    """Soft RLIMIT_NOFILE up to the hard limit (inherited by the broker and the workers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="See the module docstring (bench/bench_fleet.py) for how to read the table.")
    p.add_argument("--edges", type=parse_edges, default=parse_edges("10,50,120"),
                   help="fleet sizes, comma-separated (default 10,50,120)")
    p.add_argument("--rounds", type=int, default=5, help="rounds per fleet size; the first is not in the medians "
                                                         "when there are two or more (default 5)")
    p.add_argument("--density", type=float, default=0.1, help="fixed mask density; 1 = dense FedAvg (default 0.1)")
    p.add_argument("--model", choices=("mlp", "conv2"), default="mlp", help="(default mlp)")
    p.add_argument("--dataset", help="default: digits for mlp, mnist5k for conv2 (28x28 inputs)")
    p.add_argument("--train-s", type=float, default=0.1, help="simulated training time per task (default 0.1)")
    p.add_argument("--edge-procs", type=int, default=2, help="worker processes running the light edges (default 2)")
    p.add_argument("--deadline", type=float, default=120.0, help="round deadline in seconds (default 120)")
    p.add_argument("--connect-timeout", type=float, default=120.0, help="seconds for all edges to come online")
    p.add_argument("--nagle", action="store_true",
                   help="the comparison: Nagle's algorithm on every client socket and in Mosquitto, as paho and "
                        "Mosquitto default to (the runtime and provision_broker.sh turn it off: with delayed ACKs it "
                        "stalls small messages by ~40 ms)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the figures (and every round's) to this file")
    p.add_argument("-v", "--verbose", action="store_true", help="log every round")
    args = p.parse_args(argv)
    if args.rounds < 1 or not 0 < args.density <= 1 or args.train_s < 0 or args.edge_procs < 1:
        p.error("--rounds >= 1, 0 < --density <= 1, --train-s >= 0 and --edge-procs >= 1")
    setup_logging(logging.INFO if args.verbose else logging.WARNING)
    raise_nofile()

    from prunefl_edge.inputs import load_data

    dataset = args.dataset or ("mnist5k" if args.model == "conv2" else "digits")
    data = load_data(dataset, 0.2, args.seed)
    input_shape = tuple(int(d) for d in data.x_train.shape[1:])
    assert len(input_shape) == 3
    rows, raw = [], []
    for n in args.edges:
        t = time.perf_counter()
        res = run_fleet(n, args, data.num_classes, input_shape, len(data.y_train))  # type: ignore[arg-type]
        raw.append(res)
        rows.append(summarize(res))
        print(f"N={n}: {args.rounds} rounds in {time.perf_counter() - t:.1f} s (all edges online after "
              f"{res['connect_s']:.1f} s)", file=sys.stderr, flush=True)
    print(f"## Fleet load: {args.model} on {dataset}, fixed mask density {args.density}, {args.rounds} rounds "
          f"(medians of rounds 2..{args.rounds} when {args.rounds} >= 2), simulated training {args.train_s * 1e3:.0f} "
          f"ms, {os.cpu_count()} CPUs shared by coordinator, broker and light edges\n")
    print(table(rows))
    print("\noverhead = round wall time - slowest simulated training (what coordinator + broker + network add); "
          "CPU columns are per round; in-process = the same round's encode/wire.decode/check/aggregate without MQTT, "
          "in the coordinator process.")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": args.model, "dataset": dataset, "density": args.density,
                                         "rounds": args.rounds, "train_s": args.train_s, "cpus": os.cpu_count(),
                                         "summary": rows, "runs": raw}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
