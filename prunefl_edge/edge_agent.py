"""The edge agent (``prunefl-edge start``): one process per device, executing the coordinator's tasks with the
C core and answering over MQTT.

Life of the agent: load the local data; measure the device profile if none is cached
(:mod:`prunefl_edge.edge_profile`); connect (Last Will: a retained "offline" status) and announce itself with a
retained "online" status (samples, threads, classes, input shape, software, device profile, counters); then, for every
task on ``prunefl/<federation>/edge/<id>/task``: reassemble and decode it, build the network from the model
the task names (once), execute it with :class:`prunefl_edge.trainer.Trainer`, publish the result (in chunks
when large), and save the trainer's state (mask and its version, importance, batch position) atomically to
``state_dir``, so a restarted agent accepts mask changes instead of needing the full mask again. The state is
bound to the coordinator run that trained it (the run id in the task's model description, kept across the
coordinator's --resume): a task of another run finds it set aside as ``trainer_state.npz.run-<old run>`` and the
edge starting clean, and says so in its log (an earlier run's mask is never trained on). A state that
cannot be saved (disk full, read-only, I/O error) is logged as an error and counted (``state_save_failures``, in
the status); the result already published stands and the agent keeps serving tasks: only a restart cannot resume
from the state of after that task (the file on disk, if any, is an older but consistent state).

A task that cannot be executed (unknown mask version, a model that does not fit the data, a bad config)
gets a REJECT with the reason; a message that cannot be decoded is logged and dropped. Duplicate deliveries
(QoS 1 after a reconnect) are recognised by message id and executed once. SIGTERM: the current task is
finished and answered, the status set to "offline", the connection closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from prunefl_common.errors import InputError
from prunefl_common.messages import Task, TaskKind
from prunefl_common.model_spec import ModelSpec, ModelSpecError, spec_from_dict
from prunefl_common.npz_file import load_npz_with_meta, save_npz_atomic
from prunefl_common.protocol.chunks import Reassembler, split_message
from prunefl_common.protocol.mqtt_client import MqttClient, PacketTooLargeError
from prunefl_common.protocol.recent import RecentIds
from prunefl_common.protocol.topics import Topics
from prunefl_common.protocol.wire import (
    Decoded,
    Limits,
    ProtocolError,
    RejectMsg,
    StatusMsg,
    decode,
    encode_reject,
    encode_result,
    encode_status,
    peek_model,
)
from prunefl_common.run_id import RUN_KEY, split_run
from prunefl_common.time_model import DeviceProfile, ProfileError, sparse_thresholds
from prunefl_common.version import version
from prunefl_edge.edge_config import EdgeConfig
from prunefl_edge.edge_profile import announced, device_profile
from prunefl_edge.memory_phases import HeapReturn, PhasePeaks
from prunefl_edge.profiler import ProfileInterrupted
from prunefl_edge.trainer import MaskVersionError, TaskError, Trainer

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.npz"
STATE_FORMAT = "prunefl-edge-state/1"
SOFTWARE = f"prunefl-edge {version()}"


def load_local_data(cfg: EdgeConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, y, num_classes) of this edge: the data set at ``[data] path``, or its part when partitioned."""
    from prunefl_edge.datasets import load_dataset
    from prunefl_edge.partition import partition

    ds = load_dataset(cfg.data.path, cfg.data.format)
    x, y = ds.x_train, ds.y_train
    if cfg.data.partition is not None and cfg.data.num_partitions > 1:
        parts = partition(cfg.data.partition, y, cfg.data.num_partitions, seed=cfg.data.seed)
        idx = parts[cfg.data.partition_index]
        x, y = x[idx], y[idx]
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int32), ds.num_classes


def task_phase(task: Task) -> str:
    """The memory phase a task's execution counts under: training with and without importance apart."""
    if task.kind == TaskKind.TRAIN:
        cfg = task.config
        return "train_importance" if getattr(cfg, "collect_importance", False) else "train"
    return task.kind.value


def model_key(model: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:16]


class Inbox:
    """Payloads that arrived (paho's network thread puts) and wait for the agent's loop (which gets), at most
    ``max_bytes`` of them: a payload that does not fit evicts the oldest ones first (a flood on the task topic while
    the edge trains cannot exhaust its memory), and one larger than the whole budget is dropped; both counted."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._q: deque[bytes] = deque()
        self._bytes = 0
        self._cv = threading.Condition()
        self.dropped = 0
        self.dropped_bytes = 0

    @property
    def held_bytes(self) -> int:
        return self._bytes

    def put(self, payload: bytes) -> None:
        with self._cv:
            if len(payload) > self.max_bytes:
                self.dropped += 1
                self.dropped_bytes += len(payload)
                return
            while self._bytes + len(payload) > self.max_bytes:
                old = self._q.popleft()
                self._bytes -= len(old)
                self.dropped += 1
                self.dropped_bytes += len(old)
            self._q.append(payload)
            self._bytes += len(payload)
            self._cv.notify()

    def get(self, timeout: float) -> bytes:
        """The oldest payload; queue.Empty after ``timeout`` seconds without one."""
        with self._cv:
            if not self._q and not self._cv.wait_for(lambda: bool(self._q), timeout):
                raise queue.Empty
            payload = self._q.popleft()
            self._bytes -= len(payload)
            return payload


class EdgeAgent:
    def __init__(self, cfg: EdgeConfig, x: np.ndarray, y: np.ndarray, num_classes: int,
                 net_factory: Any = None) -> None:
        self.cfg = cfg
        self.x, self.y, self.num_classes = x, y, num_classes
        self.topics = Topics(cfg.federation)
        self.state_dir = Path(cfg.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._net_factory = net_factory
        # what waits while a task trains: two tasks' worth of bytes (a task's chunks while the previous one trains)
        self._inbox = Inbox(2 * cfg.max_message_bytes)
        # tasks are one at a time: at most two partial ones, two tasks' worth of bytes
        self._limits = Limits(max_message_bytes=cfg.max_message_bytes)
        self._reasm = Reassembler(self._limits, max_pending_bytes=self._limits.reassembly_budget(),
                                  max_pending_messages=2, max_pending_per_sender=2)
        self._seen = RecentIds(256)  # message ids of executed tasks (duplicates)
        self.trainer: Trainer | None = None
        self.profile: DeviceProfile | None = None
        self._model_key: str | None = None
        self._run: str | None = None  # the coordinator run the trainer's state belongs to (None: not announced)
        self._model_limits: Limits | None = None  # the model's (shapes checked), once a task named it
        self._saved: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None  # state file read at start
        self.stop_event = threading.Event()
        self.memory = PhasePeaks()  # peak RSS (MiB) per phase, announced in the status
        self._heap = HeapReturn()
        # the start of the last round executed: batch position, importance and its version and samples
        self._round_start: dict[tuple[int, str], tuple[dict[str, int], list[np.ndarray] | None, int, int]] = {}
        self.counters = {"tasks_done": 0, "tasks_rejected": 0, "bytes_received": 0, "bytes_sent": 0,
                         "messages_dropped": 0, "bytes_duplicate": 0,
                         "bytes_foreign": 0, "state_save_failures": 0, "publish_refused": 0}
        self.client = MqttClient(cfg.broker, client_id=cfg.id, subscriptions=[self.topics.task(cfg.id)],
                                 on_message=self._on_message,
                                 will=(self.topics.status(cfg.id), self._status_bytes("offline")),
                                 on_connect=self._announce)

    # ---- status ----------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return {"n_samples": int(len(self.y)), "threads": self.cfg.threads, "num_classes": self.num_classes,
                "input_shape": [int(d) for d in self.x.shape[1:]], "software": SOFTWARE,
                "mask_version": self._held_mask_version(), "run": self._held_run(),
                "profile": announced(self.profile), "peak_rss_mib": dict(self.memory.peaks), **self.counters,
                "inbox_dropped": self._inbox.dropped, "bytes_inbox_dropped": self._inbox.dropped_bytes}

    def _held_mask_version(self) -> int:
        """The trainer's mask version; before the first task of this start, the saved state's (applied then)."""
        if self.trainer is not None:
            return self.trainer.mask_version
        v = self._saved[0].get("mask_version") if self._saved is not None else None
        return v if isinstance(v, int) and not isinstance(v, bool) else -1

    def _held_run(self) -> str | None:
        """The run of the trainer's state; before the first task of this start, the saved state's."""
        if self.trainer is not None:
            return self._run
        v = self._saved[0].get("run") if self._saved is not None else None
        return v if isinstance(v, str) else None

    def _status_bytes(self, state: str) -> bytes:
        return encode_status(StatusMsg(state, self.info() if state != "offline" else {}),
                             federation=self.cfg.federation, sender=self.cfg.id)

    def _announce(self) -> None:
        try:
            self.client.publish(self.topics.status(self.cfg.id), self._status_bytes("online"), retain=True)
        except PacketTooLargeError as e:  # a status is a few KB: only a broker limit far below any usable one
            self.counters["publish_refused"] += 1
            log.error("cannot announce the status: %s", e)

    # ---- messages (network thread) ---------------------------------------------------------------------
    def _on_message(self, topic: str, payload: bytes) -> None:
        self._inbox.put(payload)

    # ---- the loop ---------------------------------------------------------------------------------------
    def run(self, connect_wait_s: float | None = None) -> None:
        self.memory.note("start")  # imports and local data, since the process began
        with self.memory.phase("start"):
            self._read_saved_state()
            self.load_profile()
        self.write_status_file()  # from the start (before the broker answers), as README's Operations says
        if self.stop_event.is_set():  # stopped during the start (the first-start profile): never connected
            log.info("edge %s stopped before connecting", self.cfg.id)
            return
        self.client.start(connect_wait_s)
        log.info("edge %s: %d local samples, federation %s, broker %s", self.cfg.id, len(self.y),
                 self.cfg.federation, self.cfg.broker.url)
        try:
            while not self.stop_event.is_set():
                try:
                    payload = self._inbox.get(timeout=0.5)
                except queue.Empty:
                    self._reasm.expire()
                    continue
                self._handle(payload)
        finally:
            self.client.stop(final=(self.topics.status(self.cfg.id), self._status_bytes("offline")))
            self.write_status_file()
            log.info("edge %s stopped", self.cfg.id)

    def _handle(self, payload: bytes) -> None:
        self.counters["bytes_received"] += len(payload)
        try:
            with self.memory.phase("task_decode"):
                whole = self._reasm.feed(payload)
                if whole is None:
                    return
                msg = decode(whole, self._limits_for(whole))
        except ProtocolError as e:
            self.counters["messages_dropped"] += 1
            log.warning("dropped an undecodable message on my task topic: %s", e)
            return
        if msg.header.federation != self.cfg.federation or not isinstance(msg.body, Task):
            self.counters["messages_dropped"] += 1
            self.counters["bytes_foreign"] += len(whole)
            log.warning("dropped a %s message from %s for federation %s on my task topic", msg.header.kind.name,
                        msg.header.sender, msg.header.federation)
            return
        if msg.header.msg_id in self._seen:
            self.counters["bytes_duplicate"] += len(payload)
            log.info("task %s (round %d) delivered again: already executed", msg.header.msg_id, msg.body.round)
            return
        del whole  # the task's bytes are decoded: only the arrays it carries stay (views into it, while used)
        self._execute(msg)
        self._seen.add(msg.header.msg_id)
        del msg
        self._heap.trim()

    def _limits_for(self, whole: bytes) -> Limits:
        """The model's limits (every declared shape checked against the model before anything is allocated) for a
        task about the model this edge runs; the configured ones for the first task, or one naming another model."""
        if self._model_limits is None:
            return self._limits
        model = peek_model(whole, self._limits)
        if model is not None:  # the model without the run id it carries (a new run has the same model)
            model = {k: v for k, v in model.items() if k != RUN_KEY}
        return self._model_limits if model is None or model_key(model) == self._model_key else self._limits

    def load_profile(self) -> None:
        """The device profile (cached, configured or measured now). A profile that cannot be had is logged and
        the edge runs without one: training matters more than the coordinator's time model."""
        try:
            self.profile = device_profile(self.cfg.profile, self.state_dir, tuple(self.x.shape[1:]),
                                          self.num_classes, self.cfg.threads, self._net_factory,
                                          stop=self.stop_event.is_set)
        except ProfileInterrupted:
            log.warning("device profile interrupted by the stop: not cached, measured again at the next start")
        except (ProfileError, InputError, ValueError, RuntimeError, OSError) as e:
            log.error("no device profile (%s): fix [profile] in %s, or set measure = false there", e,
                      self.cfg.source or "the config")

    def _ensure_trainer(self, msg: Decoded) -> Trainer:
        if msg.model is None:
            if self.trainer is None:
                raise TaskError("the task names no model and this edge has none yet")
            return self.trainer
        model, run = split_run(msg.model)  # (the decoder checked the run id)
        key = model_key(model)
        if self.trainer is not None and key == self._model_key and run == self._run:
            return self.trainer
        if self.trainer is not None and key == self._model_key:  # a new coordinator run reached this process
            log.warning("run %s: this edge's state belongs to run %s: starting clean", run, self._run)
            self._set_aside(self._run)
        try:
            spec: ModelSpec = spec_from_dict(model)
        except ModelSpecError as e:
            raise TaskError(f"bad model in the task: {e}") from e
        if tuple(spec.input_shape) != tuple(self.x.shape[1:]):
            raise TaskError(f"the model takes inputs {tuple(spec.input_shape)}, this edge's data is "
                            f"{tuple(self.x.shape[1:])}: check [data] on the edge and the coordinator's --model")
        if spec.num_classes < self.num_classes and int(self.y.max(initial=0)) >= spec.num_classes:
            raise TaskError(f"the model has {spec.num_classes} classes, this edge's labels reach "
                            f"{int(self.y.max())}")
        if self._net_factory is not None:
            net = self._net_factory(spec)
        else:
            from prunefl_edge.engine import Network

            net = Network(spec, threads=self.cfg.threads)
        if self.profile is not None:  # the measured dense/sparse switch-over, when the model has those layers
            for layer, density in sparse_thresholds(self.profile, spec).items():
                net.set_sparse_threshold(layer, density)
        if self.trainer is not None:
            close = getattr(self.trainer.net, "close", None)
            if close is not None:
                close()
        seed = int(hashlib.sha256(self.cfg.id.encode()).hexdigest()[:8], 16)
        self.trainer = Trainer(self.cfg.id, net, self.x, self.y, seed=seed)
        self._model_key, self._run = key, run
        self._round_start.clear()  # a rewind is within one run only
        pshapes = spec.param_shapes()
        derived = Limits.for_model([p.shape for p in pshapes], [i for i, p in enumerate(pshapes) if p.prunable], "edge")
        self._model_limits = Limits.for_model(derived.shapes or (), derived.prunable or (), "edge",
                                              min(derived.max_message_bytes, self.cfg.max_message_bytes))
        self._load_state(key, run)
        return self.trainer

    def _execute(self, msg: Decoded) -> None:
        task = msg.body
        assert isinstance(task, Task)
        t0 = time.perf_counter()
        log.info("round %d: %s task received (mask v%d)", task.round, task.kind.value, task.mask.version)
        try:
            with self.memory.phase("model"):
                trainer = self._ensure_trainer(msg)
                self._rewind_or_snapshot(trainer, (task.round, task.kind.value))
            with self.memory.phase(task_phase(task)):
                result = trainer.execute(task, release_values=True)  # the task's bytes go once its values are in
        except MaskVersionError as e:
            self._reject(msg, str(e), needs_full_mask=True)
            return
        except (TaskError, ValueError, RuntimeError) as e:  # RuntimeError: the C core refused (EngineError)
            self._reject(msg, str(e), needs_full_mask=False)
            return
        except Exception as e:  # a bug must cost this task, not the agent (and every later round) its life
            log.exception("round %d: the task failed unexpectedly", task.round)
            self._reject(msg, f"internal error on the edge: {type(e).__name__}: {e}", needs_full_mask=False)
            return
        with self.memory.phase("result_encode"):
            data = encode_result(result, federation=self.cfg.federation, sender=self.cfg.id)
            version = result.mask_version
            del result  # its arrays (importance above all) need not outlive the encoded bytes
            self._publish_result(data)
        self.counters["tasks_done"] += 1
        with self.memory.phase("state_save"):
            self._save_state()
        log.info("round %d: %s task done in %.2f s (mask v%d), %d bytes sent", task.round, task.kind.value,
                 time.perf_counter() - t0, version, len(data))
        self._announce()

    def _rewind_or_snapshot(self, trainer: Trainer, key: tuple[int, str]) -> None:
        """A task for the round this edge executed last (the coordinator restarted from its checkpoint, which is
        at most one round behind) runs from the same batch position and importance as the first time, so the
        resumed run equals an uninterrupted one. One snapshot only: during an importance window it holds a copy
        of the dense z, the largest buffer of an edge at low density."""
        if key in self._round_start:
            stream, imp, version, samples = self._round_start[key]
            trainer.stream.load(stream)
            trainer.importance = None if imp is None else [z.copy() for z in imp]
            trainer.importance_version, trainer.importance_samples = version, samples
            log.info("round %d (%s) again: rewound to the batch position it started from", *key)
            return
        self._round_start.clear()  # (before the copy: never two of them)
        imp = trainer.importance
        self._round_start[key] = (trainer.stream.state(), None if imp is None else [z.copy() for z in imp],
                                  trainer.importance_version, trainer.importance_samples)

    def _publish_result(self, data: bytes) -> None:
        topic = self.topics.result(self.cfg.id)
        # below the packet limit in play (the broker's, read at connection, or the configured one)
        payload = self.client.payload_limit(topic, self.cfg.max_payload_bytes)
        try:
            for part in split_message(data, payload, federation=self.cfg.federation, sender=self.cfg.id):
                self.client.publish(topic, part)
                self.counters["bytes_sent"] += len(part)
        except (PacketTooLargeError, ValueError) as e:
            # a broker whose packet limit leaves no room for even one chunk (about 1.5 KB): this result cannot be sent;
            # the agent serves on (its state is saved) and the status counts it, instead of dying on every task
            self.counters["publish_refused"] += 1
            log.error("cannot send a %d-byte message on %s: %s (raise the broker's max_packet_size)", len(data), topic,
                      e)

    def _reject(self, msg: Decoded, reason: str, needs_full_mask: bool) -> None:
        task = msg.body
        assert isinstance(task, Task)
        self.counters["tasks_rejected"] += 1
        log.warning("round %d: task rejected: %s", task.round, reason)
        data = encode_reject(RejectMsg(reason[:4000], needs_full_mask, msg.header.msg_id),
                             federation=self.cfg.federation,
                             sender=self.cfg.id, round=task.round, mask_version=task.mask.version)
        self._publish_result(data)

    # ---- local state ------------------------------------------------------------------------------------
    def _state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def _save_state(self) -> None:
        """Checkpoint the trainer's state after a task. A failure (ENOSPC, EROFS, EIO ...) is logged and counted,
        never raised: the task's result is already published, and the next tasks can still be served."""
        if self.trainer is not None:
            meta, arrays = self.trainer.state_dict()
            path = self._state_path()
            try:
                save_npz_atomic(path, {**meta, "model_key": self._model_key, "run": self._run,
                                       "format": STATE_FORMAT}, arrays)
            except OSError as e:
                self.counters["state_save_failures"] += 1
                with contextlib.suppress(OSError):  # a half-written temporary file would only hold the space
                    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
                log.error("cannot save the state to %s (%s): serving tasks on, but a restart would not resume from "
                          "this task's state (%d failed saves so far)", path, e, self.counters["state_save_failures"])
        self.write_status_file()

    def write_status_file(self) -> None:
        """``state_dir/status.json``: what the retained status says, for operators and tests. A failure to write it
        is logged only (the retained status on the broker says the same)."""
        tmp = self.state_dir / "status.json.tmp"
        try:
            tmp.write_text(json.dumps(self.info(), indent=1))
            os.replace(tmp, self.state_dir / "status.json")
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            log.error("cannot write %s (%s)", self.state_dir / "status.json", e)

    def _read_saved_state(self) -> None:
        """Read the saved state once, at start (it is applied when the first task names the model); an
        unreadable file is moved aside."""
        p = self._state_path()
        if not p.exists():
            return
        try:
            self._saved = load_npz_with_meta(p)
        except (OSError, ValueError, KeyError) as e:
            bad = p.with_name(p.name + ".corrupt")
            os.replace(p, bad)
            log.warning("saved state %s unreadable (%s): moved to %s, starting fresh", p, e, bad)
            return
        log.info("saved state found: mask version %s (model %s)", self._saved[0].get("mask_version"),
                 self._saved[0].get("model_key"))

    def _set_aside(self, old_run: Any) -> Path | None:
        """Move the state file of another run to ``trainer_state.npz.run-<its run>`` (``.run-none`` when it names
        none), replacing an older one of that name: kept for inspection, never resumed."""
        p = self._state_path()
        tag = old_run if isinstance(old_run, str) and old_run else "none"
        aside = p.with_name(f"{p.name}.run-{tag}")
        try:
            os.replace(p, aside)
        except FileNotFoundError:
            return None
        except OSError as e:
            log.error("cannot move %s aside (%s): it will be overwritten by this run's state", p, e)
            return None
        return aside

    def _load_state(self, key: str, run: str | None) -> None:
        saved, self._saved = self._saved, None  # only the state of before this start is worth resuming
        if self.trainer is None or saved is None:
            return
        meta, arrays = saved
        if meta.get("model_key") != key:
            log.info("saved state is for another model: not used")
            return
        if run is not None and meta.get("run") != run:
            aside = self._set_aside(meta.get("run"))
            log.warning("saved state (mask version %s) belongs to coordinator run %s, this task to run %s: "
                        "starting clean%s", meta.get("mask_version"), meta.get("run") or "(none recorded)", run,
                        f"; the old state is kept at {aside}" if aside else "")
            return
        try:
            self.trainer.load_state_dict(meta, arrays)
            log.info("resumed: mask version %d", self.trainer.mask_version)
        except (ValueError, KeyError, TaskError) as e:
            log.warning("saved state not usable (%s): starting from the coordinator's next full mask", e)
