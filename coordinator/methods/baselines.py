"""Baselines on the same engine: SNIP (one-shot at round 0), iterative magnitude pruning, fixed-mask re-init."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from coordinator.methods.base import BaseMethod
from coordinator.selection import select_clients
from prunefl_common.messages import TaskKind, TrainConfig, TrainResult

if TYPE_CHECKING:
    from coordinator.server import Coordinator

log = logging.getLogger(__name__)


def global_top_k(scores: list[np.ndarray], density: float) -> list[np.ndarray]:
    """Masks keeping the ``density`` fraction of all entries with the largest scores (across layers)."""
    flat = np.concatenate([s.ravel() for s in scores])
    k = max(1, round(density * flat.size))
    keep = np.zeros(flat.size, bool)
    keep[np.argpartition(-flat, k - 1)[:k]] = True
    out, off = [], 0
    for s in scores:
        out.append(keep[off:off + s.size].reshape(s.shape))
        off += s.size
    return out


def prune_by_pct(weights: np.ndarray, mask: np.ndarray, pct: float) -> np.ndarray:
    """Remove the ``pct`` fraction of kept weights with the smallest |w| (reference ``prune_by_pct``)."""
    kept = np.flatnonzero(mask.ravel())
    n = int(pct * kept.size)
    new = mask.copy()
    if n > 0:
        order = np.argpartition(np.abs(weights.ravel()[kept]), n - 1)[:n]
        new.reshape(-1)[kept[order]] = False
    return new


class Snip(BaseMethod):
    """One-shot pruning at round 0 by |w * g| (Lee et al., SNIP) to ``density``, then a fixed mask.

    g: the gradient of the initial weights on the round-0 clients' data, each summing ``local_steps``
    mini-batch gradients (a GRADIENT task: no update), weighted by samples; data stays on the clients.
    """

    def __init__(self, density: float) -> None:
        super().__init__(name="snip")
        if not 0 < density <= 1:
            raise ValueError("snip needs a density in (0, 1]")
        self.density = density

    def setup(self, coord: Coordinator) -> None:
        cfg = coord.config
        clients = select_clients(coord.state.rng, coord.transport.available_clients(), cfg.clients_per_round)
        got = coord.run_tasks(clients, TaskKind.GRADIENT,
                              TrainConfig(lr=cfg.lr, local_steps=cfg.local_steps, batch_size=cfg.batch_size))
        res = sorted((r for r in got.results if isinstance(r, TrainResult) and r.importance is not None),
                     key=lambda r: r.client_id)
        if not res:
            raise RuntimeError("SNIP: no client returned gradients")
        scores = []
        for p in coord.weight_params:
            g = sum(r.importance[p].astype(np.float64) for r in res)
            scores.append(np.abs(coord.state.weights[p] * g))
        masks = global_top_k(scores, self.density)
        coord.install_masks(dict(zip(coord.weight_params, masks, strict=True)))
        # a gradient round costs about a dense round's compute plus the download of the dense model
        dense = [coord.sizes[p] for p in coord.weight_params]
        coord.state.sim_time_s += coord.time_model.compute_time(dense, cfg.local_steps) + \
            coord.time_model.comm * sum(dense)
        coord.record(stage="snip", round=-1)


class IterativeMagnitude(BaseMethod):
    """Iterative magnitude pruning (reference ``iterative.py``): ``steps`` prunings, each removing the same
    fraction ``1 - density**(1/steps)`` of every layer's kept weights by |w|, every ``interval`` rounds
    (default: spread over the first half of the run), never regrowing."""

    def __init__(self, density: float, steps: int = 20, interval: int | None = None) -> None:
        super().__init__(name="imp")
        if not 0 < density <= 1 or steps <= 0:
            raise ValueError("imp needs a density in (0, 1] and steps > 0")
        self.density, self.steps, self.interval = density, steps, interval
        self.rate = 1.0 - density ** (1.0 / steps)

    def setup(self, coord: Coordinator) -> None:
        if self.interval is None:
            self.interval = max(1, int(coord.config.rounds / 2 / self.steps))
        coord.state.extra.setdefault("imp_prunes", 0)

    def maybe_reconfigure(self, coord: Coordinator, round_index: int) -> dict[int, np.ndarray] | None:
        st = coord.state
        assert self.interval is not None
        if round_index == 0 or round_index % self.interval or st.extra.get("imp_prunes", 0) >= self.steps:
            return None
        st.extra["imp_prunes"] = st.extra.get("imp_prunes", 0) + 1
        return {p: prune_by_pct(st.weights[p], st.masks[p], self.rate) for p in coord.weight_params}


class FixedMask(BaseMethod):
    """FedAvg under a given mask from the start: ``reinit`` (the masked original initialisation: a lottery
    ticket check) or ``random-reinit`` (a fresh random initialisation under the same mask)."""

    def __init__(self, masks: dict[int, np.ndarray], weights: list[np.ndarray] | None, name: str) -> None:
        super().__init__(name=name)
        self.masks, self.weights = masks, weights

    def setup(self, coord: Coordinator) -> None:
        if self.weights is not None:
            coord.state.weights = [np.array(w, np.float32) for w in self.weights]
        if sorted(self.masks) != coord.weight_params:
            raise ValueError(f"the mask covers parameters {sorted(self.masks)}, the model's weights are "
                             f"{coord.weight_params}")
        for p in coord.weight_params:
            if self.masks[p].shape != tuple(coord.shapes[p]):
                raise ValueError(f"mask of parameter {p}: shape {self.masks[p].shape}, expected {coord.shapes[p]}")
        coord.install_masks(self.masks)
