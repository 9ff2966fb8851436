"""Plain FedAvg, which the other methods build on; methods return plans, weights and masks (see strategy.py)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from coordinator.aggregation import aggregate_results
from coordinator.strategy import RoundView, SetupStep, Update
from coordinator.transport import ClientFailure, Gathered
from prunefl_common.messages import TrainConfig, TrainResult

log = logging.getLogger(__name__)


def fedavg_update(view: RoundView, results: list[TrainResult]) -> Update:
    """FedAvg of the round's (checked, fresh) sparse results; unchanged weights when fewer than ``min_clients``
    results came or the sum is not finite (the last good weights stay)."""
    if len(results) < view.config.min_clients:
        log.warning("round %d: %d results (< %d): weights unchanged", view.round, len(results),
                    view.config.min_clients)
        return Update()
    try:
        return Update(weights=aggregate_results(view.weights, dict(view.masks), results, view.round,
                                                view.mask_version, dict(view.kept_index)))
    except ValueError as e:  # e.g. an overflow to Inf
        log.error("round %d: aggregation failed (%s): weights unchanged", view.round, e)
        return Update()


@dataclass
class BaseMethod:
    """Dense or fixed-mask FedAvg of sparse increments; subclasses add pruning."""

    name: str = "fedavg"

    def setup(self, view: RoundView) -> SetupStep | None:
        return None

    def finish_setup(self, view: RoundView, gathered: Gathered | None) -> Update:
        return Update()

    def collect_importance(self, round_index: int) -> tuple[bool, bool]:
        """(accumulate z this round, upload it with the result)."""
        return False, False

    def configure_round(self, view: RoundView) -> TrainConfig:
        cfg = view.config
        collect, upload = self.collect_importance(view.round)
        return TrainConfig(lr=cfg.lr, local_steps=cfg.local_steps, batch_size=cfg.batch_size,
                           collect_importance=collect, upload_importance=upload)

    def aggregate_round(self, view: RoundView, results: list[TrainResult], failures: list[ClientFailure]) -> Update:
        return fedavg_update(view, results)

    def importance_requests(self, view: RoundView, results: list[TrainResult]) -> list[str]:
        """Clients (not among ``results``) asked for their accumulated importance this round: none."""
        return []

    def reconfigure(self, view: RoundView) -> Update | None:
        return None


class FedAvg(BaseMethod):
    """Conventional FL: the dense model, no pruning."""

    def __init__(self) -> None:
        super().__init__(name="fedavg")
