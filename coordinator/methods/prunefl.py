"""PruneFL (Jiang et al.): optional initial pruning at one client, then adaptive pruning every interval rounds."""

from __future__ import annotations

import logging

import numpy as np

from coordinator.methods.base import BaseMethod
from coordinator.result_check import initial_prune_problem
from coordinator.strategy import RoundView, SetupStep, Update
from coordinator.transport import Gathered
from prunefl_common.importance import split_importance
from prunefl_common.mask_optimizer import delta_for_round, optimize_masks
from prunefl_common.messages import InitialPruneConfig, InitialPruneResult, TaskKind, dense_from_values

log = logging.getLogger(__name__)


class PruneFL(BaseMethod):
    """``prunefl`` (initial + adaptive) and ``adaptive-only`` (initial=False).

    reconfig_interval: rounds between reconfigurations (50 in the paper); the first is at round
        ``reconfig_interval`` (0-based), as in the reference (``check_adj_round``).
    importance_window: rounds before each reconfiguration (the reconfiguration round included) in which
        clients accumulate importance; None = the whole interval (faithful: the reference accumulates always).
    ip_deadline_s: seconds the initial-pruning client has to answer before the next client is asked (at most
        ``ip_fallbacks`` others); None = 3 x the time model's compute time of ``ip_max_passes`` dense passes + 300 s.
    initial_client: the client that runs initial pruning; None = the first (by id) of the clients announcing at least
        the median sample count (a count qualifies, it does not rank: a lying count cannot choose the client).
    """

    def __init__(self, initial: bool = True, reconfig_interval: int = 50, importance_window: int | None = None,
                 delta0: float = 0.3, half_life: float = 10000.0, max_density: float | None = None,
                 initial_client: str | None = None, ip_max_passes: int = 1000, ip_interval: int | None = None,
                 ip_lr: float | None = None, ip_deadline_s: float | None = None, ip_fallbacks: int = 2) -> None:
        super().__init__(name="prunefl" if initial else "adaptive-only")
        if reconfig_interval <= 0:
            raise ValueError("reconfig_interval must be positive")
        self.initial = initial
        self.interval = reconfig_interval
        self.window = importance_window if importance_window is not None else reconfig_interval
        self.delta0, self.half_life, self.max_density = delta0, half_life, max_density
        self.initial_client = initial_client
        self.ip_max_passes = ip_max_passes
        self.ip_interval = ip_interval if ip_interval is not None else reconfig_interval
        self.ip_lr = ip_lr
        self.ip_deadline_s = ip_deadline_s
        self.ip_fallbacks = ip_fallbacks

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

    def _ip_config(self, view: RoundView) -> InitialPruneConfig:
        tm = view.time_model
        return InitialPruneConfig(lr=self.ip_lr if self.ip_lr is not None else view.config.lr,
                                  costs=[float(c) for c in tm.costs], intercept=tm.intercept,
                                  batch_size=view.config.batch_size, reconfig_interval=self.ip_interval,
                                  max_passes=self.ip_max_passes, acc_threshold=1.5 / view.num_classes,
                                  delta=self.delta0, max_density=self.max_density, seed=0)

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
        return r > 0 and r % self.interval == 0

    def collect_importance(self, round_index: int) -> tuple[bool, bool]:
        nxt = max(self.interval, -(-round_index // self.interval) * self.interval)
        collect = nxt - round_index < self.window
        return collect, self.is_reconfig_round(round_index)

    def reconfigure(self, view: RoundView) -> Update | None:
        r = view.round
        if not self.is_reconfig_round(r) or view.importance is None:
            return None
        wp = list(view.weight_params)
        z, fixed = split_importance(view.importance, wp)
        tm = view.time_model
        choice = optimize_masks(z, [view.weights[p] for p in wp], [view.masks[p] for p in wp], list(tm.costs),
                                tm.intercept, delta_for_round(r, self.delta0, self.half_life),
                                fixed_importance=fixed, max_density=self.max_density)
        log.info("round %d: reconfigured, kept %s (removed %s, regrown %s)", r, choice.kept, choice.removed,
                 choice.regrown)
        return Update(masks=dict(zip(wp, choice.masks, strict=True)), reset_importance=True)
