"""The method (Flower's Strategy) interface and plain FedAvg, which the other methods build on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from coordinator.transport import ClientFailure
from prunefl_common.importance import accumulate
from prunefl_common.messages import TrainConfig, TrainResult

if TYPE_CHECKING:
    from coordinator.server import Coordinator


@dataclass
class BaseMethod:
    """Dense or fixed-mask FedAvg of sparse increments; subclasses add pruning."""

    name: str = "fedavg"

    def setup(self, coord: Coordinator) -> None:
        return None

    def collect_importance(self, coord: Coordinator, round_index: int) -> tuple[bool, bool]:
        """(accumulate z this round, upload it with the result)."""
        return False, False

    def configure_round(self, coord: Coordinator, round_index: int) -> TrainConfig:
        cfg = coord.config
        collect, upload = self.collect_importance(coord, round_index)
        return TrainConfig(lr=cfg.lr, local_steps=cfg.local_steps, batch_size=cfg.batch_size,
                           collect_importance=collect, upload_importance=upload)

    def aggregate_round(self, coord: Coordinator, results: list[TrainResult], failures: list[ClientFailure]) -> None:
        coord.aggregate(results)
        for r in results:
            if r.importance is not None:
                coord.state.importance = accumulate(coord.state.importance, r.importance)

    def maybe_reconfigure(self, coord: Coordinator, round_index: int) -> dict[int, np.ndarray] | None:
        return None


class FedAvg(BaseMethod):
    """Conventional FL: the dense model, no pruning."""

    def __init__(self) -> None:
        super().__init__(name="fedavg")
