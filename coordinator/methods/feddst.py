"""FedDST (Bibikar et al., "Federated Dynamic Sparse Training", AAAI 2022) on this engine: a fixed density from the
start, and every ``interval`` rounds each participating client prunes a fraction of its kept weights by magnitude
and regrows as many by gradient magnitude; the server aggregates the clients' masks by vote.

Where it runs (docs/REPRODUCTION.md section 8): the per-client readjustment is computed on the server from what the
client uploads in that round, its trained kept values and its importance z = n (sum_k g_k)^2 of the round (a
monotone function of |sum_k g_k|, the dense gradient at every position, pruned ones included), because this wire
has no way yet for a result to carry a mask other than the task's. With the same inputs the client mask is the
same as if the client had computed it; what differs from the reference code is when: its clients readjust before
their last local epoch and train the regrown weights, ours readjust after the round's local steps, so regrown
weights start at zero on the server (RigL's and the reference's initial value) and the vote ranks by votes first.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from coordinator.methods.base import BaseMethod, fedavg_update
from coordinator.strategy import RoundView, SetupStep, Update
from coordinator.transport import ClientFailure, Gathered
from prunefl_common.importance import accumulate
from prunefl_common.messages import TrainConfig, TrainResult

log = logging.getLogger(__name__)


def readjust_client_mask(w: np.ndarray, z: np.ndarray, mask: np.ndarray, fraction: float) -> np.ndarray:
    """One client's readjusted mask of one layer: the ``int(fraction * kept)`` kept weights with the smallest |w|
    are pruned, and as many positions not kept after that (just-pruned ones included, as in RigL) with the largest
    z regrow. The kept count is unchanged. Ties: the lower flat position first (stable sorts)."""
    m = np.asarray(mask, bool).ravel()
    kept = np.flatnonzero(m)
    n = int(fraction * kept.size)
    if n <= 0:
        return m.reshape(mask.shape).copy()
    new = m.copy()
    drop = kept[np.argsort(np.abs(w.ravel()[kept]), kind="stable")[:n]]
    new[drop] = False
    free = np.flatnonzero(~new)
    grow = free[np.argsort(-z.ravel()[free], kind="stable")[:n]]
    new[grow] = True
    return new.reshape(mask.shape)


def vote_masks(client_masks: list[np.ndarray], n_samples: list[int], current: np.ndarray,
               weights: np.ndarray) -> np.ndarray:
    """The server's mask for one layer: the ``current.sum()`` positions with the most votes (each client's mask
    weighted by its samples, as the reference's ``aggregated_masks``), ties by |aggregated weight|, then the
    position currently kept, then the lower position. A weight kept by a sample-majority of the clients always
    stays when at most ``kept`` positions have such a majority."""
    k = int(np.count_nonzero(current))
    votes = np.zeros(current.size, np.float64)
    for m, n in zip(client_masks, n_samples, strict=True):
        votes += float(n) * np.asarray(m, bool).ravel()
    order = np.lexsort((np.arange(current.size), -np.asarray(current, bool).ravel().astype(np.int8),
                        -np.abs(np.asarray(weights, np.float64).ravel()), -votes))
    out = np.zeros(current.size, bool)
    out[order[:k]] = True
    return out.reshape(current.shape)


DISTRIBUTIONS = ("erk", "uniform")


def layer_densities(shapes: list[tuple[int, ...]], density: float, distribution: str = "erk") -> list[float]:
    """Per-layer densities whose weighted mean is ``density``: "uniform" (every layer the same) or "erk"
    (Erdős–Rényi-Kernel, RigL's and the reference's default: a layer's density proportional to sum(shape) /
    prod(shape), so small layers stay denser; layers that would exceed 1 are dense and the rest rescaled)."""
    if distribution == "uniform":
        return [density] * len(shapes)
    if distribution != "erk":
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}")
    sizes = np.array([float(np.prod(s)) for s in shapes])
    raw = np.array([float(sum(s)) / float(np.prod(s)) for s in shapes])
    dense = np.zeros(len(shapes), bool)
    while True:
        budget = density * sizes.sum() - sizes[dense].sum()
        eps = budget / float((raw * sizes)[~dense].sum())
        over = ~dense & (eps * raw > 1.0)
        if not over.any():
            return [1.0 if d else float(eps * r) for d, r in zip(dense, raw, strict=True)]
        dense |= over


def layer_magnitude_masks(weights: list[np.ndarray], density: float | list[float]) -> list[np.ndarray]:
    """Per layer, the ``round(density * size)`` largest |w| (the reference's ``layer_prune``; ``density`` one
    number or one per layer; ties: the lower position)."""
    out = []
    dens = density if isinstance(density, list) else [density] * len(weights)
    for w, d in zip(weights, dens, strict=True):
        k = max(1, round(d * w.size))
        order = np.argsort(-np.abs(w.ravel()), kind="stable")
        m = np.zeros(w.size, bool)
        m[order[:k]] = True
        out.append(m.reshape(w.shape))
    return out


class FedDST(BaseMethod):
    """density: the fixed overall density of the prunable layers, spread over them by ``distribution`` ("erk",
        the reference's default, or "uniform").
    interval: rounds between readjustments (the reference's ``--rounds-between-readjustments``, 10); readjustment
        rounds are 1, 1 + interval, ... as in the reference (``(round - 1) % R == 0``).
    alpha: the readjusted fraction of kept weights, cosine-annealed to 0 at ``decay_end`` (default: half the run,
        the reference's ``--rate-decay-end`` default)."""

    def __init__(self, density: float, interval: int = 10, alpha: float = 0.05, decay_end: int | None = None,
                 distribution: str = "erk") -> None:
        super().__init__(name="feddst")
        if not 0 < density <= 1 or interval <= 0 or not 0 <= alpha < 1:
            raise ValueError("feddst needs a density in (0, 1], interval > 0 and alpha in [0, 1)")
        if distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}")
        self.density, self.interval, self.alpha, self.decay_end = density, interval, alpha, decay_end
        self.distribution = distribution
        self._pending: tuple[int, dict[int, np.ndarray]] | None = None  # (round, masks) from aggregate_round

    def fraction(self, view: RoundView) -> float:
        end = self.decay_end if self.decay_end is not None else max(1, view.config.rounds // 2)
        r = view.round
        return 0.0 if r >= end else self.alpha * 0.5 * (1.0 + math.cos(math.pi * r / end))

    def is_readjust_round(self, view: RoundView) -> bool:
        return view.round >= 1 and (view.round - 1) % self.interval == 0 and self.fraction(view) > 0

    def setup(self, view: RoundView) -> SetupStep | None:
        return None

    def finish_setup(self, view: RoundView, gathered: Gathered | None) -> Update:
        wp = list(view.weight_params)
        dens = layer_densities([tuple(view.shapes[p]) for p in wp], self.density, self.distribution)
        masks = layer_magnitude_masks([np.asarray(view.weights[p]) for p in wp], dens)
        return Update(masks=dict(zip(wp, masks, strict=True)))

    def configure_round(self, view: RoundView) -> TrainConfig:
        cfg = view.config
        if not self.is_readjust_round(view):
            return TrainConfig(lr=cfg.lr, local_steps=cfg.local_steps, batch_size=cfg.batch_size)
        # z of this round only; sparse: kept positions plus twice the regrowth count at pruned ones (enough for
        # the top-n choice among pruned and just-pruned positions)
        return TrainConfig(lr=cfg.lr, local_steps=cfg.local_steps, batch_size=cfg.batch_size,
                           collect_importance=True, upload_importance=True,
                           importance_top=2.0 * self.fraction(view))

    def aggregate_round(self, view: RoundView, results: list[TrainResult], failures: list[ClientFailure]) -> Update:
        upd = fedavg_update(view, results)
        if not self.is_readjust_round(view) or upd.weights is None:
            return upd
        voters = [r for r in results if r.importance is not None]
        if not voters:
            log.warning("round %d: no client returned importance: the mask stays", view.round)
            return upd
        frac = self.fraction(view)
        wp = list(view.weight_params)
        per_client: dict[int, list[np.ndarray]] = {p: [] for p in wp}
        for res in voters:
            z = accumulate(None, res.importance, dict(view.kept_index), list(view.shapes))
            for p in wp:
                w = np.zeros(view.sizes[p], np.float32)
                w[view.kept_index[p]] = res.values[p]
                per_client[p].append(readjust_client_mask(w, z[p], np.asarray(view.masks[p]), frac))
        n = [r.n_samples for r in voters]
        new = {p: vote_masks(per_client[p], n, np.asarray(view.masks[p]), upd.weights[p]) for p in wp}
        weights = [np.array(w, np.float32) for w in upd.weights]
        for p in wp:  # regrown weights start at zero (RigL, and the reference's clients)
            weights[p][new[p] & ~np.asarray(view.masks[p], bool)] = 0.0
        changed = sum(int(np.count_nonzero(new[p] & ~np.asarray(view.masks[p], bool))) for p in wp)
        log.info("round %d: FedDST readjusted %.3g of kept weights per client; %d positions changed by the vote of "
                 "%d clients", view.round, frac, changed, len(voters))
        self._pending = (view.round, new)
        return Update(weights=weights)

    def reconfigure(self, view: RoundView) -> Update | None:
        pending, self._pending = self._pending, None
        if pending is None or pending[0] != view.round:
            return None
        return Update(masks=pending[1], reset_importance=True)
