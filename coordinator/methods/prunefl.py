"""PruneFL (Jiang et al.): optional initial pruning at one client, then adaptive pruning every interval rounds."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np

from coordinator.methods.base import BaseMethod, fedavg_update
from coordinator.result_check import initial_prune_problem
from coordinator.strategy import RoundView, SetupStep, Update
from coordinator.transport import ClientFailure, Gathered
from prunefl_common.importance import split_importance
from prunefl_common.mask_optimizer import TIE_RULES, delta_for_round, optimize_masks
from prunefl_common.messages import (
    InitialPruneConfig,
    InitialPruneResult,
    TaskKind,
    TrainConfig,
    TrainResult,
    dense_from_values,
)

log = logging.getLogger(__name__)


MAX_IMPORTANCE_TOP = 16.0


def next_importance_top(top: float, regrown: Sequence[int], kept_before: Sequence[int]) -> float:
    """The bound for the next interval's sparse uploads: doubled (up to 16) when the last choice regrew in some layer
    at least half of what a client could send there (``top`` x its kept count), which says the bound may have cut
    off weights the dense importance would have regrown; else unchanged."""
    tight = any(k > 0 and r >= 0.5 * top * k for r, k in zip(regrown, kept_before, strict=True))
    return min(MAX_IMPORTANCE_TOP, 2.0 * top) if tight else top


IMPORTANCE_FROM = ("interval", "selected")


class PruneFL(BaseMethod):
    """``prunefl`` (initial + adaptive), ``adaptive-only`` (initial=False) and ``ip-only`` (adaptive=False: initial
    pruning, then the fixed mask; the reference's ``-na -i``).

    reconfig_interval: rounds between reconfigurations (50 in the paper); the first is at round
        ``reconfig_interval`` (0-based), as in the reference (``check_adj_round``).
    importance_window: rounds before each reconfiguration (the reconfiguration round included) in which
        clients accumulate importance; None = the whole interval (faithful: the reference accumulates always).
    ip_deadline_s: seconds the initial-pruning client has to answer before the next client is asked (at most
        ``ip_fallbacks`` others); None = 3 x the time model's compute time of ``ip_max_passes`` dense passes + 300 s.
    initial_client: the client that runs initial pruning; None = the first (by id) of the clients announcing at least
        the median sample count (a count qualifies, it does not rank: a lying count cannot choose the client).
    importance_top: clients upload z at kept positions and, per layer, the largest z of at most this fraction of
        its kept count at pruned positions (what the mask choice can use); None = every position, dense.
    ip_masked_importance: initial pruning's z masked as in the reference (0 at pruned weights: IP never regrows);
        False: the dense gradient (docs/REPRODUCTION.md section 2).
    ties: the mask optimiser's rule for weights tied with the delta-cut magnitude: "keep" (reference) or "exact".
    ip_interval: passes between initial pruning's reconfigurations (None: ``reconfig_interval``, the reference).
    ip_budget_s: initial pruning's device-time budget (compute only, by the time model): the pass limit becomes
        the number of dense passes that fit in it (a pass at lower density costs less, so IP's charged time stays
        within the budget); None: only ``ip_max_passes``.
    importance_from: "interval" (reference): every client that trained with importance in the window contributes
        its z at the reconfiguration (the ones not selected then get an IMPORTANCE task); "selected": only the
        reconfiguration round's clients (docs/REPRODUCTION.md section 4).
    """

    def __init__(self, initial: bool = True, reconfig_interval: int = 50, importance_window: int | None = None,
                 delta0: float = 0.3, half_life: float = 10000.0, max_density: float | None = None,
                 initial_client: str | None = None, ip_max_passes: int = 1000, ip_interval: int | None = None,
                 ip_lr: float | None = None, importance_top: float | None = 1.0, adaptive: bool = True,
                 ip_masked_importance: bool = True, ties: str = "keep", importance_from: str = "interval",
                 ip_budget_s: float | None = None, ip_deadline_s: float | None = None, ip_fallbacks: int = 2) -> None:
        super().__init__(name="prunefl" if initial and adaptive else "ip-only" if initial else "adaptive-only")
        if reconfig_interval <= 0:
            raise ValueError("reconfig_interval must be positive")
        if not initial and not adaptive:
            raise ValueError("PruneFL without initial and adaptive pruning is FedAvg")
        if ties not in TIE_RULES or importance_from not in IMPORTANCE_FROM:
            raise ValueError(f"ties must be one of {TIE_RULES}, importance_from one of {IMPORTANCE_FROM}")
        self.adaptive = adaptive
        self.ip_masked_importance, self.ties, self.importance_from = ip_masked_importance, ties, importance_from
        self.initial = initial
        self.interval = reconfig_interval
        self.window = importance_window if importance_window is not None else reconfig_interval
        self.delta0, self.half_life, self.max_density = delta0, half_life, max_density
        self.initial_client = initial_client
        self.ip_max_passes = ip_max_passes
        self.ip_interval = ip_interval if ip_interval is not None else reconfig_interval
        self.ip_lr = ip_lr
        if ip_budget_s is not None and not ip_budget_s > 0:
            raise ValueError("ip_budget_s must be positive")
        self.ip_budget_s = ip_budget_s
        self.ip_deadline_s = ip_deadline_s
        self.ip_fallbacks = ip_fallbacks
        self.importance_top = importance_top

    # ---- initial pruning -------------------------------------------------------------------------------
    def _initial_clients(self, view: RoundView) -> list[str]:
        """The clients to ask for initial pruning, in order: ``initial_client`` (if given), then the clients
        announcing at least the median sample count, then the others, each group by id. An announced count is the
        edge's own word: it only qualifies a client, it never ranks it above the others, so announcing 10**12
        samples cannot win the choice."""
        avail = list(view.available)
        if not avail:
            raise RuntimeError("no client is available for initial pruning")
        first: list[str] = []
        if self.initial_client is not None:
            if self.initial_client not in avail:
                raise RuntimeError(f"initial-pruning client {self.initial_client!r} is not available "
                                   f"(available: {', '.join(avail)})")
            first = [self.initial_client]
        counts = {c: view.client_info.get(c, {}).get("n_samples") for c in avail}
        valid = {c: n for c, n in counts.items() if isinstance(n, int) and not isinstance(n, bool) and n > 0}
        med = float(np.median(list(valid.values()))) if valid else 0.0
        qualified = sorted(c for c, n in valid.items() if n >= med)
        order = first + qualified + sorted(c for c in avail if c not in qualified)
        return list(dict.fromkeys(order))

    def _pick_initial_client(self, view: RoundView) -> str:
        return self._initial_clients(view)[0]

    def _ip_deadline(self, view: RoundView) -> float:
        if self.ip_deadline_s is not None:
            return self.ip_deadline_s
        cfg = self._ip_config(view)
        dense = [view.sizes[p] for p in view.weight_params]
        return 3 * view.time_model.compute_time(dense, cfg.n_batches * cfg.max_passes) + 300.0

    def ip_pass_limit(self, view: RoundView, n_batches: int) -> int:
        """``ip_max_passes``, or fewer: the dense passes (n_batches iterations each) that fit in ``ip_budget_s``."""
        if self.ip_budget_s is None:
            return self.ip_max_passes
        dense_pass = view.time_model.compute_time([view.sizes[p] for p in view.weight_params], n_batches)
        return max(1, min(self.ip_max_passes, int(self.ip_budget_s / dense_pass))) if dense_pass > 0 else \
            self.ip_max_passes

    def _ip_config(self, view: RoundView) -> InitialPruneConfig:
        tm = view.time_model
        return InitialPruneConfig(lr=self.ip_lr if self.ip_lr is not None else view.config.lr,
                                  costs=[float(c) for c in tm.costs], intercept=tm.intercept,
                                  batch_size=view.config.batch_size, reconfig_interval=self.ip_interval,
                                  max_passes=self.ip_pass_limit(view, InitialPruneConfig.n_batches),
                                  acc_threshold=1.5 / view.num_classes,
                                  delta=self.delta0, max_density=self.max_density, seed=0,
                                  masked_importance=self.ip_masked_importance)

    def setup(self, view: RoundView) -> SetupStep | None:
        if not self.initial:
            return None
        order = self._initial_clients(view)
        return SetupStep(TaskKind.INITIAL_PRUNE, self._ip_config(view), clients=order[:1], deadline=False,
                         deadline_s=self._ip_deadline(view), fallbacks=order[1:1 + self.ip_fallbacks])

    def finish_setup(self, view: RoundView, gathered: Gathered | None) -> Update:
        if not self.initial or gathered is None or not gathered.sent_to:
            return Update()
        sent_to = gathered.sent_to[0]
        # only that client's answer to this task: a result another edge sent for an earlier start (the
        # coordinator was restarted during initial pruning and a different edge was picked) is not it
        res = [r for r in gathered.results
               if isinstance(r, InitialPruneResult) and r.client_id == sent_to and r.round == view.round]
        if not res:
            raise RuntimeError(f"initial pruning at {sent_to} failed: {[f.reason for f in gathered.failures]}")
        r = res[0]
        why = initial_prune_problem(r, list(view.weight_params), list(view.shapes))
        if why is not None:
            raise RuntimeError(f"initial pruning at {sent_to} returned an invalid result: {why}")
        cfg = self._ip_config(view)
        density = sum(int(m.sum()) for m in r.masks.values()) / max(1, sum(m.size for m in r.masks.values()))
        log.info("initial pruning at %s: %d passes, density %.4f", sent_to, r.passes, density)
        # the client's kept values become the global weights (pruned positions start at zero); its time counts:
        # every pass is n_batches local iterations at that pass's mask (compute only)
        return Update(weights=dense_from_values(r.values, r.masks, list(view.shapes)), masks=r.masks,
                      forget_masks=[sent_to],
                      sim_time_s=sum(view.time_model.compute_time(k, cfg.n_batches) for k in r.kept_history),
                      extra={"initial_pruning": {"client": sent_to, "passes": r.passes, "densities": r.densities,
                                                 "train_accuracy": r.train_accuracy}},
                      record={"stage": "initial_pruning", "passes": r.passes, "round": -1}, evaluate=True)

    # ---- adaptive pruning ------------------------------------------------------------------------------
    def is_reconfig_round(self, r: int) -> bool:
        return self.adaptive and r > 0 and r % self.interval == 0

    def _importance_top(self, view: RoundView) -> float | None:
        if self.importance_top is None:
            return None
        return float(view.extra.get("importance_top", self.importance_top))

    def configure_round(self, view: RoundView) -> TrainConfig:
        return dataclasses.replace(super().configure_round(view), importance_top=self._importance_top(view))

    def collect_importance(self, round_index: int) -> tuple[bool, bool]:
        if not self.adaptive:
            return False, False
        nxt = max(self.interval, -(-round_index // self.interval) * self.interval)
        collect = nxt - round_index < self.window
        return collect, self.is_reconfig_round(round_index)

    def aggregate_round(self, view: RoundView, results: list[TrainResult], failures: list[ClientFailure]) -> Update:
        upd = fedavg_update(view, results)
        collect, upload = self.collect_importance(view.round)
        if collect and not upload and self.importance_from == "interval":
            # who holds z of this interval (accumulated, not yet uploaded): asked at the reconfiguration round
            held = set(view.extra.get("importance_holders", [])) | {r.client_id for r in results}
            upd.extra["importance_holders"] = sorted(held)
        return upd

    def importance_requests(self, view: RoundView, results: list[TrainResult]) -> list[str]:
        """At a reconfiguration round (interval mode): the clients that trained with importance earlier in the
        interval and did not just upload it with a result of this round."""
        if self.importance_from != "interval" or not self.is_reconfig_round(view.round):
            return []
        uploaded = {r.client_id for r in results if r.importance is not None}
        return [c for c in view.extra.get("importance_holders", []) if c not in uploaded]

    def reconfigure(self, view: RoundView) -> Update | None:
        r = view.round
        if not self.is_reconfig_round(r):
            return None
        if view.importance is None:  # nobody's z arrived: the mask stays; the interval's holders start afresh
            return Update(extra={"importance_holders": []})
        wp = list(view.weight_params)
        z, fixed = split_importance(view.importance, wp)
        tm = view.time_model
        # the round time the choice trades against: the importance window's dense gradients averaged over the
        # interval (a constant per round: it does not depend on the mask, but it makes every round longer)
        intercept = tm.intercept + tm.importance_time() * min(self.window, self.interval) / self.interval
        choice = optimize_masks(z, [view.weights[p] for p in wp], [view.masks[p] for p in wp], list(tm.costs),
                                intercept, delta_for_round(r, self.delta0, self.half_life),
                                fixed_importance=fixed, max_density=self.max_density, ties=self.ties)
        log.info("round %d: reconfigured, kept %s (removed %s, regrown %s)", r, choice.kept, choice.removed,
                 choice.regrown)
        extra: dict[str, object] = {"importance_holders": []}
        top = self._importance_top(view)
        if top is not None:
            new_top = next_importance_top(top, choice.regrown, [int(view.masks[p].sum()) for p in wp])
            if new_top != top:
                log.warning("round %d: the choice regrew close to the sparse importance bound (%.3g x kept): the "
                            "next interval's uploads send %.3g x", r, top, new_top)
            extra["importance_top"] = new_top
        return Update(masks=dict(zip(wp, choice.masks, strict=True)), reset_importance=True, extra=extra)
