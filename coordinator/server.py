"""The coordinator's round loop, written against :class:`coordinator.transport.Transport`.

Per round: select K of the available clients (seeded), ask the method for the round's training config, send
each selected client its task (the kept weights, and the mask in full, as a change, or not at all depending
on the mask version the client holds), gather results until the deadline, drop stale, duplicate or invalid ones,
sum the importance they carry, let the method aggregate and reconfigure, apply what it returns, account simulated
time and bytes, evaluate every ``eval_every`` rounds, and emit one metrics record.

The method (:mod:`coordinator.strategy`, Flower's ``Strategy``) holds the algorithm and returns plans, weights
and masks; it is handed a read-only :class:`~coordinator.strategy.RoundView`. Only this loop talks to the
transport and writes the state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coordinator.aggregation import (
    NOT_SELECTED,
    clip_to_median,
    kept_index,
    sample_budget,
    split_fresh,
    weigh_results,
)
from coordinator.client_ledger import ClientLedger
from coordinator.result_check import train_result_problem
from coordinator.selection import select_clients
from coordinator.state import GlobalState
from coordinator.stragglers import StragglerPolicy, eligible, forget_returned, read_book, record_round
from coordinator.strategy import Method, RoundView, SetupStep, Update
from coordinator.transport import Gathered, Transport
from prunefl_common.importance import accumulate
from prunefl_common.mask_delta import mask_delta
from prunefl_common.messages import MaskUpdate, Task, TaskKind, TrainConfig, TrainResult, kept_values
from prunefl_common.model_spec import ModelSpec
from prunefl_common.time_model import TimeModel

log = logging.getLogger(__name__)

Evaluator = Callable[[GlobalState], tuple[float, float]]  # state -> (loss, accuracy) on held-out data


@dataclass
class ServerConfig:
    rounds: int
    clients_per_round: int = 10
    lr: float = 0.25
    local_steps: int = 5
    batch_size: int = 20
    eval_every: int = 10
    deadline_s: float | None = None
    min_clients: int = 1  # a round with fewer results keeps the weights unchanged (and says so)
    max_update_norm: float | None = None  # results whose update (L2, all parameters) is larger are not aggregated
    clip_updates: float | None = None  # robust aggregate: updates longer than this x the round's median are scaled
    stragglers: StragglerPolicy = field(default_factory=StragglerPolicy)  # default: never bench an edge


class Interrupted(Exception):
    """A stop was asked for (SIGTERM) while a setup step (initial pruning) was waiting: nothing of it is applied, the
    checkpoint from before it stands (``--resume`` runs it again)."""


def link_time_per_weight(results: Sequence[TrainResult], round_trip_s: dict[str, float], kept: int) -> float | None:
    """The measured counterpart of the time model's b: per result, (round trip - the client's compute time) per
    kept weight, the median over the round's results; None when the transport does not time round trips."""
    links = [max(0.0, round_trip_s[r.client_id] - r.compute_s) / max(1, kept)
             for r in results if r.client_id in round_trip_s]
    return float(np.median(links)) if links else None


class Coordinator:
    def __init__(self, transport: Transport, method: Method, state: GlobalState, spec: ModelSpec,
                 config: ServerConfig, time_model: TimeModel, evaluator: Evaluator | None = None,
                 on_round: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.transport = transport
        self.method = method
        self.state = state
        self.spec = spec
        self.config = config
        self.time_model = time_model
        self.evaluator = evaluator
        self.on_round = on_round
        pshapes = spec.param_shapes()
        self.shapes = [p.shape for p in pshapes]
        self.weight_params = [i for i, p in enumerate(pshapes) if p.prunable]
        self.layer_names = [spec.layer_name(pshapes[p].layer) for p in self.weight_params]
        self.sizes = {p: pshapes[p].size for p in self.weight_params}
        self.ledger = ClientLedger()
        self._mask_history: dict[int, dict[int, np.ndarray]] = {state.mask_version: state.masks}
        # kept values of the weights sent in tasks, for (that weights list itself, mask version): an `is` test, not
        # id(), whose number a later list may reuse
        self._values_cache: tuple[list[np.ndarray], int, list[np.ndarray]] | None = None
        self._index_cache: tuple[int, dict[int, np.ndarray]] | None = None  # kept_index per mask version
        self.records: list[dict[str, Any]] = []
        self._wall0 = time.perf_counter()
        self._stage_bytes = (0, 0)

    # ---- what methods see, and what the loop does with what they return ------------------------------------
    def kept_counts(self) -> list[int]:
        return self.state.kept(self.weight_params)

    def view(self) -> RoundView:
        st = self.state
        avail = self.transport.available_clients()
        return RoundView(round=st.round, weights=st.weights, masks=st.masks, mask_version=st.mask_version,
                         importance=st.importance, kept_index=self._kept_index(), weight_params=self.weight_params,
                         shapes=self.shapes, sizes=self.sizes, num_classes=self.spec.num_classes, config=self.config,
                         time_model=self.time_model, available=avail,
                         client_info={c: self.transport.client_info(c) for c in avail}, extra=st.extra)

    def install_masks(self, masks: dict[int, np.ndarray]) -> None:
        """New global masks (a new mask version); clients get the change with their next task."""
        self.state.set_masks(masks)
        self._mask_history[self.state.mask_version] = self.state.masks
        for v in [v for v in self._mask_history if v < self.state.mask_version - 3]:
            del self._mask_history[v]
        self._values_cache = None

    def apply(self, update: Update) -> None:
        """What a method returned, into the state (and the metrics, when it asks for a record)."""
        st = self.state
        if update.weights is not None:
            st.weights = [np.asarray(w, np.float32) for w in update.weights]
        if update.masks is not None:
            self.install_masks(update.masks)
        if update.reset_importance:
            st.importance = None
        st.sim_time_s += update.sim_time_s
        st.extra.update(update.extra)
        for cid in update.forget_masks:
            self.ledger.forget(cid)
        if update.record is not None:
            loss, acc = self.evaluate() if update.evaluate else (None, None)
            self.record(**{"accuracy": acc, "loss": loss, **update.record})

    def _mask_update(self, client_id: str) -> MaskUpdate:
        cur = self.state.mask_version
        held = self.ledger.version(client_id)
        if client_id in self.ledger.returned:
            # back from offline: if the version it announces is not the one believed, the full mask, which
            # applies whatever it holds, instead of a change it would reject and lose the round for
            announced = self.transport.client_info(client_id).get("mask_version")
            if announced != held:
                log.info("%s is back holding mask version %s, not %d: it gets the full mask", client_id, announced,
                         held)
                self.ledger.forget(client_id)
                held = self.ledger.version(client_id)
        if held == cur:
            return MaskUpdate(cur)
        if held in self._mask_history:
            return MaskUpdate(cur, delta=mask_delta(self._mask_history[held], self.state.masks, held, cur))
        return MaskUpdate(cur, full=self.state.masks)

    def _values(self) -> list[np.ndarray]:
        c = self._values_cache
        if c is None or c[0] is not self.state.weights or c[1] != self.state.mask_version:
            self._values_cache = c = (self.state.weights, self.state.mask_version,
                                      kept_values(self.state.weights, self.state.masks))
        return c[2]

    def _kept_index(self) -> dict[int, np.ndarray]:
        if self._index_cache is None or self._index_cache[0] != self.state.mask_version:
            self._index_cache = (self.state.mask_version, kept_index(self.state.masks))
        return self._index_cache[1]

    def run_tasks(self, client_ids: Sequence[str], kind: TaskKind, config: Any, deadline: bool = True,
                  deadline_s: float | None = None, values: bool = True) -> Gathered:
        """Send one task per client (current weights and mask; ``values`` False: no weights) and gather the answers
        within the round deadline (``deadline`` False: without one, for initial pruning's minutes of local
        training; ``deadline_s``: this one); counts bytes."""
        r = self.state.round
        values_sent = self._values() if values else []
        sent = []
        for cid in client_ids:
            task = Task(r, kind, self._mask_update(cid), values_sent, config)
            self.state.bytes_down += self.transport.send(cid, task)
            sent.append(cid)
        wait = deadline_s if deadline_s is not None else self.config.deadline_s if deadline else None
        # a step without the round deadline (initial pruning: minutes to hours) stops waiting on SIGTERM
        got = self.transport.gather_interruptible(sent, r, wait) if not deadline else \
            self.transport.gather(sent, r, wait)
        got.sent_to = sent
        for f in got.failures:
            # a client that did not answer may still run the task later (a partition heals, a slow link
            # delivers), so it holds either its old mask version or the task's: when those differ, the next
            # task carries the full mask, which applies to both
            unsure = f.reason in ("timeout", "disconnected") and self.ledger.version(f.client_id) != \
                self.state.mask_version
            if f.needs_full_mask or unsure:
                self.ledger.forget(f.client_id)
        for res in got.results:
            if res.round == r and res.client_id in sent:
                self.ledger.holds(res.client_id, res.mask_version)
        self.state.bytes_up += got.bytes_up
        return got

    def _importance_uploads(self, client_ids: Sequence[str], train_cfg: TrainConfig) -> tuple[int, int]:
        """IMPORTANCE tasks to ``client_ids`` (no training, no weights sent; uploads as ``train_cfg`` asks, sparse or
        dense); the z they return is summed into the state like the z that train results carry. Importance that is
        not piggybacked on a result goes only this way. Returns (clients whose z was summed, bytes up + down)."""
        available = set(self.transport.available_clients())
        ids = [c for c in client_ids if c in available]
        if not ids:
            return 0, 0
        st = self.state
        before = st.bytes_up + st.bytes_down
        got = self.run_tasks(ids, TaskKind.IMPORTANCE, train_cfg, values=False)
        summed = 0
        for res in got.results:
            if not isinstance(res, TrainResult) or res.importance is None or res.client_id not in ids:
                continue
            why = None if (res.round == st.round and res.mask_version == st.mask_version) else "stale"
            why = why or train_result_problem(res, st.masks, self.shapes, False)
            if why is None:
                try:
                    st.importance = accumulate(st.importance, res.importance, self._kept_index(), self.shapes)
                    summed += 1
                except ValueError as e:
                    why = str(e)
            if why is not None:
                log.warning("round %d: importance of %s not used: %s", st.round, res.client_id, why)
        log.info("round %d: importance from %d of %d clients asked (%d failures)", st.round, summed, len(ids),
                 len(got.failures))
        return summed, st.bytes_up + st.bytes_down - before

    def densities(self) -> dict[str, float]:
        return {name: float(np.count_nonzero(self.state.masks[p]) / self.sizes[p])
                for name, p in zip(self.layer_names, self.weight_params, strict=True)}

    def record(self, **fields: Any) -> dict[str, Any]:
        st = self.state
        rec: dict[str, Any] = {
            "round": st.round, "method": self.method.name, "density": st.density(),
            "density_per_layer": self.densities(), "mask_version": st.mask_version,
            "sim_time_s": st.sim_time_s, "bytes_up": st.bytes_up, "bytes_down": st.bytes_down,
            "wall_time_s": time.perf_counter() - self._wall0, "accuracy": None, "loss": None,
        }
        rec.update(fields)
        self.records.append(rec)
        if self.on_round is not None:
            self.on_round(rec)
        return rec

    def evaluate(self) -> tuple[float | None, float | None]:
        if self.evaluator is None:
            return None, None
        loss, acc = self.evaluator(self.state)
        return float(loss), float(acc)

    # ---- the loop --------------------------------------------------------------------------------------
    def setup(self) -> None:
        """The method's steps before round 0 (initial pruning, SNIP's gradients, a given mask)."""
        self.ledger.observe(self.transport.available_clients(), self.transport.comebacks)
        step: SetupStep | None = self.method.setup(self.view())
        if step is None:
            self.apply(self.method.finish_setup(self.view(), None))
            return
        clients = list(step.clients) if step.clients is not None else select_clients(
            self.state.rng, self.transport.available_clients(), step.count or self.config.clients_per_round)
        tries = [clients, *[[c] for c in step.fallbacks]]
        for i, these in enumerate(tries):
            got = self.run_tasks(these, step.kind, step.config, step.deadline, step.deadline_s)
            if any(f.reason == "stopped" for f in got.failures):
                raise Interrupted(f"stopped while waiting for {', '.join(these)} ({step.kind.value})")
            # only the answers of the clients the step's tasks went to, for this step
            foreign = [x for x in got.results if x.client_id not in got.sent_to or x.round != self.state.round]
            for x in foreign:
                log.warning("setup: dropped a result of %s (round %d): not an answer to a task sent", x.client_id,
                            x.round)
            got.results = [x for x in got.results if x not in foreign]
            try:
                update = self.method.finish_setup(self.view(), got)
            except RuntimeError as e:
                if i + 1 == len(tries):
                    raise
                for c in these:  # it may still run the task: its mask version is not known any more
                    self.ledger.forget(c)
                log.warning("%s: trying %s instead", e, ", ".join(tries[i + 1]))
                self.record(stage="setup_fallback", failed=list(these), reason=str(e)[:500], next=tries[i + 1])
                continue
            self.apply(update)
            return

    def run_round(self) -> dict[str, Any]:
        st, cfg = self.state, self.config
        r = st.round
        available = self.transport.available_clients()
        # an edge benched for missing the deadline is left out, as long as half of K (and min_clients) remain; one
        # that went offline meanwhile starts afresh when it is back (a partition healed, a link fixed)
        book = read_book(st.extra)
        forget_returned(book, available, self.ledger.observe(available, self.transport.comebacks))
        pool, benched = eligible(book, available, r, max(cfg.min_clients, (cfg.clients_per_round + 1) // 2))
        clients = select_clients(st.rng, pool, cfg.clients_per_round)
        if not clients:
            raise RuntimeError("no client is available")
        train_cfg = self.method.configure_round(self.view())
        kept_during = self.kept_counts()
        # the FedAvg weight of a result is bounded by what the coordinator knows at selection (the task's samples,
        # the count the client announced then), never by what the result claims alone
        budgets = {c: sample_budget(train_cfg.local_steps, train_cfg.batch_size,
                                    self.transport.client_info(c).get("n_samples")) for c in clients}
        got = self.run_tasks(clients, TaskKind.TRAIN, train_cfg)
        results = [x for x in got.results if isinstance(x, TrainResult)]
        fresh, rejected = split_fresh(results, r, st.mask_version, set(clients))
        unselected = sorted({res.client_id for res, why in rejected if why == NOT_SELECTED})
        rejected = [(res, why) for res, why in rejected if why != NOT_SELECTED]
        for c in unselected:
            log.warning("round %d: dropped a result of %s, which was not selected for this round", r, c)
        expect_values = train_cfg.local_steps > 0
        sent = self._values()  # what the clients were sent (weights and mask unchanged since run_tasks)
        invalid = 0
        for res in list(fresh):
            why = train_result_problem(res, st.masks, self.shapes, expect_values, sent, cfg.max_update_norm)
            if why is not None:
                fresh.remove(res)
                rejected.append((res, f"invalid: {why}"))
                invalid += 1
                log.warning("round %d: rejected the result of %s: %s", r, res.client_id, why)
        for res, why in rejected:
            log.info("round %d: dropped result of %s (%s)", r, res.client_id, why)
        fresh, capped = weigh_results(fresh, budgets)
        for c in capped:
            log.warning("round %d: %s claimed more samples than its task could have used: weighted by %d", r, c,
                        budgets[c])
        clipped: list[str] = []
        if cfg.clip_updates is not None and expect_values:
            fresh, clipped = clip_to_median(fresh, sent, cfg.clip_updates)
        self.apply(self.method.aggregate_round(self.view(), fresh, got.failures))
        for res in fresh:
            if res.importance is not None:
                st.importance = accumulate(st.importance, res.importance, self._kept_index(), self.shapes)
        z_clients, z_bytes = self._importance_uploads(self.method.importance_requests(self.view(), fresh), train_cfg)
        st.sim_time_s += self.time_model.round_time(kept_during, importance=train_cfg.collect_importance)
        change = self.method.reconfigure(self.view())
        reconfigured = change is not None and change.masks is not None
        if change is not None:
            self.apply(change)
        loss = acc = None
        if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
            loss, acc = self.evaluate()
        n = sum(x.n_samples for x in fresh)
        # what went wrong, per client: selected ones without a usable result (timeout, disconnected, rejected,
        # invalid ...), results of earlier rounds that came late, and clients that report failing to save their state
        missed = {f.client_id: f.reason for f in got.failures}
        missed.update({res.client_id: why for res, why in rejected if res.round == r})
        late = sorted(res.client_id for res, _ in rejected if res.round != r)
        if cfg.stragglers.misses > 0:
            in_time = {res.client_id for res in results if res.round == r and res.client_id in budgets}
            timed_out = [f.client_id for f in got.failures if f.reason == "timeout"]
            for c, until in record_round(book, cfg.stragglers, r, timed_out, in_time).items():
                log.warning("round %d: %s missed the deadline %d rounds in a row: left out of selection until round "
                            "%d", r, c, book[c]["misses"], until)
            st.extra["stragglers"] = book
        save_failures = {c: n_f for c in self.transport.available_clients()
                         if isinstance(n_f := self.transport.client_info(c).get("state_save_failures"), int)
                         and n_f > 0}
        rec = self.record(
            stage="train", accuracy=acc, loss=loss, clients=len(clients), results=len(fresh),
            failures=len(got.failures) + len(rejected), invalid_results=invalid, reconfigured=reconfigured,
            unselected_results=len(unselected), capped_weights=len(capped), clipped_updates=len(clipped),
            missed=missed, late_results=late, benched=benched, state_save_failures=save_failures,
            dropped_messages=self.transport.counters(),
            max_compute_s=max((x.compute_s for x in fresh), default=None),
            link_s_per_weight=link_time_per_weight(fresh, got.round_trip_s, sum(kept_during)),
            train_loss=(sum(x.loss * x.n_samples for x in fresh) / n) if n else None,
            train_accuracy=(sum(x.accuracy * x.n_samples for x in fresh) / n) if n else None,
            importance_uploads=sum(x.importance is not None for x in fresh) + z_clients,
            importance_request_bytes=z_bytes)
        st.round = r + 1
        return rec

    def run(self, checkpoint: Callable[[GlobalState], None] | None = None) -> list[dict[str, Any]]:
        if self.state.round == 0 and not self.state.extra.get("setup_done"):
            self.setup()
            self.state.extra["setup_done"] = True
        while self.state.round < self.config.rounds:
            self.run_round()
            if checkpoint is not None:
                checkpoint(self.state)
        return self.records
