"""Baselines on the same engine: SNIP (one-shot at round 0), iterative magnitude pruning, fixed-mask re-init."""

from __future__ import annotations

import logging

import numpy as np

from coordinator.methods.base import BaseMethod
from coordinator.strategy import RoundView, SetupStep, Update
from coordinator.transport import Gathered
from prunefl_common.messages import TaskKind, TrainConfig, TrainResult

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

    def setup(self, view: RoundView) -> SetupStep:
        cfg = view.config
        return SetupStep(TaskKind.GRADIENT, TrainConfig(lr=cfg.lr, local_steps=cfg.local_steps,
                                                        batch_size=cfg.batch_size), count=cfg.clients_per_round)

    def finish_setup(self, view: RoundView, gathered: Gathered | None) -> Update:
        res = sorted((r for r in (gathered.results if gathered else [])
                      if isinstance(r, TrainResult) and r.importance is not None), key=lambda r: r.client_id)
        if not res:
            raise RuntimeError("SNIP: no client returned gradients")
        scores = []
        for p in view.weight_params:
            g = sum(r.importance[p].astype(np.float64) for r in res)
            scores.append(np.abs(view.weights[p] * g))
        masks = global_top_k(scores, self.density)
        # a gradient round costs about a dense round's compute plus the download of the dense model
        cfg, tm = view.config, view.time_model
        dense = [view.sizes[p] for p in view.weight_params]
        return Update(masks=dict(zip(view.weight_params, masks, strict=True)),
                      sim_time_s=tm.compute_time(dense, cfg.local_steps) + tm.comm * sum(dense),
                      record={"stage": "snip", "round": -1})


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

    def _interval(self, view: RoundView) -> int:
        return self.interval if self.interval is not None else max(1, int(view.config.rounds / 2 / self.steps))

    def reconfigure(self, view: RoundView) -> Update | None:
        r, done = view.round, int(view.extra.get("imp_prunes", 0))
        if r == 0 or r % self._interval(view) or done >= self.steps:
            return None
        return Update(masks={p: prune_by_pct(view.weights[p], view.masks[p], self.rate) for p in view.weight_params},
                      extra={"imp_prunes": done + 1})


class FixedMask(BaseMethod):
    """FedAvg under a given mask from the start: ``reinit`` (the masked original initialisation: a lottery
    ticket check) or ``random-reinit`` (a fresh random initialisation under the same mask)."""

    def __init__(self, masks: dict[int, np.ndarray], weights: list[np.ndarray] | None, name: str) -> None:
        super().__init__(name=name)
        self.masks, self.weights = masks, weights

    def finish_setup(self, view: RoundView, gathered: Gathered | None) -> Update:
        if sorted(self.masks) != list(view.weight_params):
            raise ValueError(f"the mask covers parameters {sorted(self.masks)}, the model's weights are "
                             f"{list(view.weight_params)}")
        for p in view.weight_params:
            if self.masks[p].shape != tuple(view.shapes[p]):
                raise ValueError(f"mask of parameter {p}: shape {self.masks[p].shape}, expected {view.shapes[p]}")
        weights = None if self.weights is None else [np.array(w, np.float32) for w in self.weights]
        return Update(weights=weights, masks=self.masks)
