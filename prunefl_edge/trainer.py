"""The edge-side trainer: one client's network, local data and state; executes coordinator tasks.

The same object serves the in-process simulator and the MQTT edge agent: a transport decodes a
:class:`prunefl_common.messages.Task`, calls :meth:`Trainer.execute`, and encodes the result it returns.

State kept between tasks: the mask and its version (so a task may carry only a mask change), the importance
accumulated since the last upload, and the position in the local data stream. :meth:`Trainer.state_dict`
/ :meth:`Trainer.load_state_dict` give them as plain arrays/JSON for an edge that restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from prunefl_common.importance import sparse_importance
from prunefl_common.mask_delta import apply_mask_delta
from prunefl_common.mask_optimizer import optimize_masks
from prunefl_common.messages import (
    InitialPruneConfig,
    InitialPruneResult,
    MaskUpdate,
    SparseImportance,
    Task,
    TaskKind,
    TrainConfig,
    TrainResult,
)

log = logging.getLogger(__name__)


class TaskError(ValueError):
    """A task this client cannot execute (unknown mask version, wrong sizes, bad config)."""


class MaskVersionError(TaskError):
    """The task refers to a mask version this client does not hold: the coordinator must send the full mask."""


class BatchStream:
    """Endless mini-batches over ``n`` samples: a fresh seeded permutation per epoch, no sample reused within one.

    The state is two integers (epoch, position), so a restarted edge continues the same stream.
    """

    def __init__(self, n: int, seed: int) -> None:
        if n <= 0:
            raise TaskError("a client needs at least one local sample")
        self.n, self.seed = n, seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def next(self, batch: int) -> np.ndarray:
        batch = min(batch, self.n)
        if self.pos + batch > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation(self.epoch)
        out = self._perm[self.pos:self.pos + batch]
        self.pos += batch
        return out

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load(self, st: dict[str, int]) -> None:
        self.epoch, self.pos = int(st["epoch"]), int(st["pos"])
        self._perm = self._permutation(self.epoch)


class Trainer:
    """Executes train / gradient / initial-pruning tasks on a :class:`prunefl_edge.engine.Network`.

    net: the client's network (its architecture must be the federation's model).
    x, y: local data, float32 ``(n, C, H, W)`` and int labels ``(n,)``.
    seed: seeds the local batch order (and the initial-pruning sample choice).
    sgd_config: builds the engine's SGD settings (default ``prunefl_edge.engine.SGDConfig``).
    """

    def __init__(self, client_id: str, net: Any, x: np.ndarray, y: np.ndarray, seed: int = 0,
                 sgd_config: Callable[..., Any] | None = None) -> None:
        if len(x) != len(y):
            raise TaskError(f"client {client_id}: {len(x)} samples but {len(y)} labels")
        self.client_id = client_id
        self.net = net
        self.x = np.ascontiguousarray(x, dtype=np.float32)
        self.y = np.ascontiguousarray(y, dtype=np.int32)
        self.seed = seed
        self.shapes = [tuple(p.shape) for p in net.param_shapes]
        self.weight_params = [i for i, p in enumerate(net.param_shapes) if p.prunable]
        self.masks: dict[int, np.ndarray] = {p: np.ones(self.shapes[p], bool) for p in self.weight_params}
        self.mask_version = -1  # none received yet: the first task must carry a full mask
        self.importance: list[np.ndarray] | None = None  # z accumulated since the last upload
        # the mask version z was accumulated under, and the samples it covers: z belongs to the reconfiguration
        # interval of that version; a client that missed the interval's upload drops it when a newer mask arrives
        self.importance_version = -1
        self.importance_samples = 0
        self.stream = BatchStream(len(self.y), seed)
        self._release_values = False
        if sgd_config is None:
            from prunefl_edge.engine import SGDConfig

            sgd_config = SGDConfig
        self._sgd_config = sgd_config

    @property
    def n_samples(self) -> int:
        return len(self.y)

    # ---- state for a restarting edge -------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"mask_version": self.mask_version, "stream": self.stream.state(),
                "has_importance": self.importance is not None, "importance_version": self.importance_version,
                "importance_samples": self.importance_samples}
        arrays = {f"m{p}": m for p, m in self.masks.items()}
        if self.importance is not None:
            arrays.update({f"z{i}": z for i, z in enumerate(self.importance)})
        return meta, arrays

    def load_state_dict(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        masks = {p: np.asarray(arrays[f"m{p}"], bool) for p in self.weight_params}
        self._install_masks(masks, int(meta["mask_version"]))
        self.stream.load(meta["stream"])
        self.importance = ([np.array(arrays[f"z{i}"], np.float32) for i in range(len(self.shapes))]
                           if meta["has_importance"] else None)
        # state saved before these fields existed: z is taken to belong to the mask the state holds
        self.importance_version = int(meta.get("importance_version", self.mask_version))
        self.importance_samples = int(meta.get("importance_samples", 0))

    # ---- tasks -----------------------------------------------------------------------------------------
    def execute(self, task: Task, release_values: bool = False) -> TrainResult | InitialPruneResult:
        """Run one task. ``release_values``: the caller owns ``task`` alone, so its values are dropped from it once
        they are in the network (an edge need not hold a dense task's weights through minutes of training)."""
        self._release_values = release_values
        try:
            return self._execute(task)
        finally:
            self._release_values = False

    def _execute(self, task: Task) -> TrainResult | InitialPruneResult:
        self._apply_mask(task.mask)
        if task.kind == TaskKind.TRAIN:
            return self._train(task)
        if task.kind == TaskKind.GRADIENT:
            return self._gradient(task)
        if task.kind == TaskKind.INITIAL_PRUNE:
            return self._initial_prune(task)
        if task.kind == TaskKind.IMPORTANCE:
            return self._upload_importance(task)
        raise TaskError(f"unknown task kind {task.kind!r}")

    def _install_masks(self, masks: dict[int, np.ndarray], version: int) -> None:
        changed = any(not np.array_equal(masks[p], self.masks[p]) for p in self.weight_params)
        if changed or self.mask_version < 0:
            self.net.set_masks(masks)
        self.masks = masks
        self.mask_version = version
        if self.importance is not None and version != self.importance_version:
            # z of an earlier interval whose reconfiguration has happened without it: it would be summed into the
            # next interval's importance, which the reference never does (every upload covers one interval)
            log.info("client %s: drops importance of mask version %d (now %d)", self.client_id,
                     self.importance_version, version)
            self._reset_importance()

    def _apply_mask(self, upd: MaskUpdate) -> None:
        if upd.full is not None:
            if sorted(upd.full) != self.weight_params:
                raise TaskError(f"full mask covers parameters {sorted(upd.full)}, the model's weights are "
                                f"{self.weight_params}")
            masks = {}
            for p in self.weight_params:
                m = np.array(upd.full[p], dtype=bool, copy=True)  # never alias the sender's arrays
                if m.shape != self.shapes[p]:
                    raise TaskError(f"mask of parameter {p}: shape {m.shape}, expected {self.shapes[p]}")
                masks[p] = m
            self._install_masks(masks, upd.version)
        elif upd.delta is not None:
            if upd.version == self.mask_version:
                # already there: a task that reached this client late (after a partition) carried the change; the
                # coordinator, which never got that task's result in time, still believed the older version
                return
            if upd.delta.base_version != self.mask_version:
                raise MaskVersionError(f"client {self.client_id} holds mask version {self.mask_version}, the "
                                       f"delta applies to {upd.delta.base_version}")
            self._install_masks(apply_mask_delta(self.masks, upd.delta, self.mask_version), upd.version)
        elif upd.version != self.mask_version:
            raise MaskVersionError(f"client {self.client_id} holds mask version {self.mask_version}, the task "
                                   f"uses {upd.version} without sending it")

    def _load_values(self, task: Task) -> None:
        """The task's kept values straight into the network (no dense copy of any weight)."""
        self._set_values(task.values)
        if self._release_values:
            task.values = []

    def _set_values(self, values: list[np.ndarray]) -> None:
        if not values:
            return
        if len(values) != len(self.shapes):
            raise TaskError(f"client {self.client_id}: {len(values)} value arrays for {len(self.shapes)} parameters")
        for p, v in enumerate(values):
            want = int(self.masks[p].sum()) if p in self.masks else int(np.prod(self.shapes[p]))
            if np.size(v) != want:
                raise TaskError(f"client {self.client_id}: parameter {p} has {np.size(v)} values, its mask keeps "
                                f"{want}")
        try:
            self.net.set_kept_values(values)
        except (ValueError, RuntimeError) as e:  # RuntimeError: the C core refused them (a non-finite value)
            raise TaskError(f"client {self.client_id}: {e}") from e

    def _sgd(self, cfg: TrainConfig) -> Any:
        return self._sgd_config(cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def _train(self, task: Task) -> TrainResult:
        cfg = task.config
        if not isinstance(cfg, TrainConfig) or cfg.local_steps <= 0 or cfg.batch_size <= 0 or not cfg.lr > 0:
            raise TaskError(f"bad train config {cfg!r}")
        t0 = time.perf_counter()
        self._load_values(task)
        self.net.reset_momentum()
        sgd = self._sgd(cfg)
        if cfg.collect_importance:
            self.net.set_importance(True)
            self.net.reset_grad_sums()
        n = 0
        loss_sum = 0.0
        correct = 0
        try:
            for _ in range(cfg.local_steps):
                idx = self.stream.next(cfg.batch_size)
                r = self.net.train_step(self.x[idx], self.y[idx], sgd)
                n += len(idx)
                loss_sum += float(r.loss) * len(idx)
                correct += int(r.correct)
            if cfg.collect_importance:
                self._accumulate_importance(n)
        finally:
            if cfg.collect_importance:
                self.net.set_importance(False)
        upload = self._take_importance(cfg) if cfg.upload_importance else None
        values = self.net.get_kept_values()
        return TrainResult(self.client_id, task.round, self.mask_version, n, values, upload,
                           loss=loss_sum / n, accuracy=correct / n, compute_s=time.perf_counter() - t0)

    def _accumulate_importance(self, n: int) -> None:
        """This round into z: ``z += n * a**2`` (prunefl_common.importance.add_client_round), in C; z is tagged with
        the mask version it is accumulated under."""
        if self.importance is None:
            self.importance = [np.zeros(s, np.float32) for s in self.shapes]
            self.importance_version = self.mask_version
        self.net.add_importance(self.importance, float(n))
        self.importance_samples += n

    def _reset_importance(self) -> None:
        self.importance, self.importance_samples = None, 0

    def _take_importance(self, cfg: TrainConfig) -> list[np.ndarray] | SparseImportance | None:
        """The accumulated z as uploaded (None if there is none; sparse when ``cfg.importance_top`` says so); the
        sum starts afresh. The one place an edge turns its z into an upload (train results and IMPORTANCE tasks)."""
        z: list[np.ndarray] | SparseImportance | None = self.importance
        self._reset_importance()
        if z is not None and cfg.importance_top is not None:  # what the mask choice can use (issue 13)
            z = sparse_importance(z, self.masks, cfg.importance_top)
        return z

    def _upload_importance(self, task: Task) -> TrainResult:
        """An IMPORTANCE task: no training, the accumulated z (None when this client holds none)."""
        if not isinstance(task.config, TrainConfig):
            raise TaskError(f"bad importance config {task.config!r}")
        n = self.importance_samples
        z = self._take_importance(task.config)
        return TrainResult(self.client_id, task.round, self.mask_version, n if z is not None else 0, [], z)

    def _gradient(self, task: Task) -> TrainResult:
        """Sum of the dense gradients of ``local_steps`` batches at the given weights, no update (SNIP)."""
        cfg = task.config
        if not isinstance(cfg, TrainConfig):
            raise TaskError(f"bad gradient config {cfg!r}")
        t0 = time.perf_counter()
        self._load_values(task)
        self.net.set_importance(True)
        self.net.reset_grad_sums()
        n, loss_sum = 0, 0.0
        try:
            for _ in range(cfg.local_steps):
                idx = self.stream.next(cfg.batch_size)
                r = self.net.forward_backward(self.x[idx], self.y[idx])
                n += len(idx)
                loss_sum += float(r.loss) * len(idx)
            sums = [np.asarray(g, np.float32).copy() for g in self.net.grad_sums()]
        finally:
            self.net.set_importance(False)
        return TrainResult(self.client_id, task.round, self.mask_version, n, [], sums, loss=loss_sum / n,
                           compute_s=time.perf_counter() - t0)

    def _initial_prune(self, task: Task) -> InitialPruneResult:
        """PruneFL's initial pruning on local data (reference ``AdaptiveServer.initial_pruning``).

        10 batches of 20 local samples, reused every pass; SGD at the initial lr; the squared gradient of every
        parameter accumulated each step (``masked_importance``, the reference: the gradient w.r.t. the masked
        weights, zero at pruned ones, so IP only removes; otherwise the dense gradient, so IP may regrow); from
        the pass where training accuracy (checked every 10 passes, as
        the reference does) reaches 1.5/#classes on, a reconfiguration every ``reconfig_interval`` passes with
        the federation's time model and delta 0.3; stop when the density changed by <= 10% for 5
        reconfigurations in a row, or after ``max_passes``.
        """
        cfg = task.config
        if not isinstance(cfg, InitialPruneConfig):
            raise TaskError(f"bad initial-pruning config {cfg!r}")
        if len(cfg.costs) != len(self.weight_params):
            raise TaskError(f"{len(cfg.costs)} layer costs for {len(self.weight_params)} prunable layers")
        t0 = time.perf_counter()
        self._load_values(task)
        self.net.reset_momentum()
        sgd = self._sgd_config(cfg.lr)
        rng = np.random.default_rng([self.seed, 0x1F])
        need = cfg.n_batches * cfg.batch_size
        pick = rng.permutation(self.n_samples)[:need] if self.n_samples >= need else rng.choice(self.n_samples, need)
        batches = [pick[i * cfg.batch_size:(i + 1) * cfg.batch_size] for i in range(cfg.n_batches)]
        xs = np.ascontiguousarray(self.x[pick])
        ys = np.ascontiguousarray(self.y[pick])

        masked = cfg.masked_importance
        # memory: z (float32, the model's size) is the one dense buffer of the loop; the squares are added in C from
        # the network's own gradient buffers; the last values of pruned weights are kept only when they can regrow
        z = [np.zeros(s, np.float32) for s in self.shapes]
        shadow = None if masked else [np.array(w, np.float32) for w in self.net.get_weights()]
        start_pass: int | None = None
        prev_density: float | None = None
        small_changes: list[bool] = []
        kept_history: list[list[int]] = []
        densities: list[float] = []
        train_acc = float("nan")
        passes = 0
        total_w = sum(int(np.prod(self.shapes[p])) for p in self.weight_params)
        # masked (the reference): the masked gradient of each step, which the SGD step computes anyway; dense: the
        # engine's dense dW of every weight (pruned ones included), which costs a dense weight gradient per step
        self.net.set_importance(not masked)
        try:
            for i in range(1, cfg.max_passes + 1):
                passes = i
                kept_history.append([int(self.masks[p].sum()) for p in self.weight_params])
                if (i - 1) % 10 == 0:
                    # in training-size batches: a larger one would grow every activation buffer of the network to it
                    train_acc = self.net.evaluate(xs, ys, batch_size=cfg.batch_size).accuracy
                    if start_pass is None and train_acc >= cfg.acc_threshold:
                        start_pass = i
                        log.info("initial pruning: reconfiguration starts at pass %d (train acc %.3f)", i, train_acc)
                for b in batches:
                    if not masked:
                        self.net.reset_grad_sums()
                    self.net.train_step(self.x[b], self.y[b], sgd)
                    if masked:
                        self.net.add_step_importance(z, 1.0)
                    else:
                        self.net.add_importance(z, 1.0)
                if start_pass is not None and (i - start_pass) % cfg.reconfig_interval == 0:
                    # the kept values, not a dense copy: |w| at kept positions is all the choice reads
                    weights = self.net.get_weights() if shadow is not None else self.net.get_kept_values()
                    if shadow is not None:
                        for p in self.weight_params:
                            shadow[p][self.masks[p]] = weights[p][self.masks[p]]
                    fixed = float(sum(z[j].sum(dtype=np.float64) for j in range(len(z)) if j not in self.masks))
                    wp = self.weight_params
                    choice = optimize_masks([z[p] for p in wp], [weights[p] for p in wp], [self.masks[p] for p in wp],
                                            cfg.costs, cfg.intercept, cfg.delta, fixed_importance=fixed,
                                            max_density=cfg.max_density)
                    new = dict(zip(self.weight_params, choice.masks, strict=True))
                    regrown = any(choice.regrown)
                    del choice
                    if shadow is None:
                        del weights  # (before the network rebuilds its layers: the peak of the loop)
                    self.net.set_masks(new)  # kept weights keep their values; newly kept ones start at zero
                    self.masks = new
                    if shadow is not None:
                        if regrown:  # regrown weights resume where they were
                            self.net.set_weights([shadow[j] if j in new else weights[j] for j in range(len(weights))])
                        del weights
                    for acc in z:
                        acc[...] = 0.0
                    density = sum(int(m.sum()) for m in new.values()) / total_w
                    densities.append(density)
                    if prev_density is not None:
                        small_changes.append(abs(density / prev_density - 1.0) <= cfg.stop_change)
                    prev_density = density
                    log.info("initial pruning: pass %d, density %.4f", i, density)
                    if len(small_changes) >= cfg.stop_count and all(small_changes[-cfg.stop_count:]):
                        break
        finally:
            self.net.set_importance(False)
        del z
        values = self.net.get_kept_values()
        answered = self.mask_version
        if densities:  # this mask has no version yet: the coordinator numbers it and sends it in full next time
            self.mask_version = -1
        return InitialPruneResult(self.client_id, task.round, {p: m.copy() for p, m in self.masks.items()}, values,
                                  passes, kept_history, densities, train_acc, time.perf_counter() - t0,
                                  mask_version=answered)
