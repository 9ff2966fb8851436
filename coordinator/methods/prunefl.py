"""PruneFL (Jiang et al.): optional initial pruning at one client, then adaptive pruning every interval rounds."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from coordinator.methods.base import BaseMethod
from coordinator.result_check import initial_prune_problem
from prunefl_common.importance import split_importance
from prunefl_common.mask_optimizer import delta_for_round, optimize_masks
from prunefl_common.messages import InitialPruneConfig, InitialPruneResult, TaskKind, dense_from_values

if TYPE_CHECKING:
    from coordinator.server import Coordinator

log = logging.getLogger(__name__)


class PruneFL(BaseMethod):
    """``prunefl`` (initial + adaptive) and ``adaptive-only`` (initial=False).

    reconfig_interval: rounds between reconfigurations (50 in the paper); the first is at round
        ``reconfig_interval`` (0-based), as in the reference (``check_adj_round``).
    importance_window: rounds before each reconfiguration (the reconfiguration round included) in which
        clients accumulate importance; None = the whole interval (faithful: the reference accumulates always).
    initial_client: the client that runs initial pruning; None = the one with the most local samples.
    """

    def __init__(self, initial: bool = True, reconfig_interval: int = 50, importance_window: int | None = None,
                 delta0: float = 0.3, half_life: float = 10000.0, max_density: float | None = None,
                 initial_client: str | None = None, ip_max_passes: int = 1000, ip_interval: int | None = None,
                 ip_lr: float | None = None) -> None:
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

    # ---- initial pruning -------------------------------------------------------------------------------
    def _pick_initial_client(self, coord: Coordinator) -> str:
        avail = coord.transport.available_clients()
        if not avail:
            raise RuntimeError("no client is available for initial pruning")
        if self.initial_client is not None:
            if self.initial_client not in avail:
                raise RuntimeError(f"initial-pruning client {self.initial_client!r} is not available "
                                   f"(available: {', '.join(avail)})")
            return self.initial_client
        return max(sorted(avail), key=lambda c: int(coord.transport.client_info(c).get("n_samples", 0)))

    def setup(self, coord: Coordinator) -> None:
        if not self.initial:
            return
        cid = self._pick_initial_client(coord)
        tm = coord.time_model
        cfg = InitialPruneConfig(lr=self.ip_lr if self.ip_lr is not None else coord.config.lr,
                                 costs=[float(c) for c in tm.costs], intercept=tm.intercept,
                                 batch_size=coord.config.batch_size, reconfig_interval=self.ip_interval,
                                 max_passes=self.ip_max_passes, acc_threshold=1.5 / coord.spec.num_classes,
                                 delta=self.delta0, max_density=self.max_density, seed=0)
        got = coord.run_tasks([cid], TaskKind.INITIAL_PRUNE, cfg)
        # only cid's answer to this task: a result another edge sent for an earlier start (the coordinator was
        # restarted during initial pruning and a different edge was picked) is not it
        res = [r for r in got.results
               if isinstance(r, InitialPruneResult) and r.client_id == cid and r.round == coord.state.round]
        if not res:
            raise RuntimeError(f"initial pruning at {cid} failed: {[f.reason for f in got.failures]}")
        r = res[0]
        why = initial_prune_problem(r, coord.weight_params, coord.shapes)
        if why is not None:
            raise RuntimeError(f"initial pruning at {cid} returned an invalid result: {why}")
        st = coord.state
        # the client's kept values become the global weights; pruned positions start at zero
        st.weights = dense_from_values(r.values, r.masks, coord.shapes)
        coord.install_masks(r.masks)
        coord.forget_client_mask(cid)
        # its time counts: every pass is n_batches local iterations at that pass's mask (compute only)
        st.sim_time_s += sum(tm.compute_time(k, cfg.n_batches) for k in r.kept_history)
        st.extra["initial_pruning"] = {"client": cid, "passes": r.passes, "densities": r.densities,
                                       "train_accuracy": r.train_accuracy}
        log.info("initial pruning at %s: %d passes, density %.4f", cid, r.passes, st.density())
        loss, acc = coord.evaluate()
        coord.record(stage="initial_pruning", accuracy=acc, loss=loss, passes=r.passes, round=-1)

    # ---- adaptive pruning ------------------------------------------------------------------------------
    def is_reconfig_round(self, r: int) -> bool:
        return r > 0 and r % self.interval == 0

    def collect_importance(self, coord: Coordinator, round_index: int) -> tuple[bool, bool]:
        nxt = max(self.interval, -(-round_index // self.interval) * self.interval)
        collect = nxt - round_index < self.window
        return collect, self.is_reconfig_round(round_index)

    def maybe_reconfigure(self, coord: Coordinator, round_index: int) -> dict[int, np.ndarray] | None:
        st = coord.state
        if not self.is_reconfig_round(round_index) or st.importance is None:
            return None
        z, fixed = split_importance(st.importance, coord.weight_params)
        choice = optimize_masks(z, [st.weights[p] for p in coord.weight_params],
                                [st.masks[p] for p in coord.weight_params], list(coord.time_model.costs),
                                coord.time_model.intercept, delta_for_round(round_index, self.delta0, self.half_life),
                                fixed_importance=fixed, max_density=self.max_density)
        st.importance = None
        log.info("round %d: reconfigured, kept %s (removed %s, regrown %s)", round_index, choice.kept,
                 choice.removed, choice.regrown)
        return dict(zip(coord.weight_params, choice.masks, strict=True))
