"""PruneFL's mask choice: maximise (approximate risk reduction of the kept set) / (round time), greedily.

Faithful to the reference implementation (``control/algorithm.py`` of jiangyuang/PruneFL):

1. In each prunable layer ``l`` the fraction ``delta`` of currently kept weights with the smallest ``|w|``
   become *removal candidates*; the other kept weights stay (the "stay set" S). With ``ties="keep"`` (the
   default, the reference's ``process_layer``: ``w_thr = sort(|w_kept|)[int(dtp * num_kept)]``, stay
   ``|w| >= w_thr``) every kept weight tied with the cut magnitude stays, so fewer than ``int(delta * kept)``
   may become candidates; ``ties="exact"`` makes exactly ``int(delta * kept)`` candidates, ties broken by
   position order of ``np.argpartition`` (this project's earlier behaviour).
2. ``N = sum(z[S]) + fixed`` (``fixed``: the importance of parameters that are never pruned, e.g. biases:
   numerator only) and ``D = c + sum_l |S_l| * (a_l + b)``.
3. Candidates (the removal candidates plus every currently pruned weight) are taken in descending order of
   ``z_j / (a_l + b)`` across layers, and each is added while its ratio exceeds the running ``N / D``
   (adding it updates ``N += z_j`` and ``D += a_l + b``). An optional maximum density caps the kept count.

The reference merges per-layer sorted lists with a heap, one weight at a time. Adding a weight whose ratio
exceeds ``N/D`` raises ``N/D`` (to a value still below that ratio), so the greedy stops with exactly the set
``{z/c > R}``, R being that set's own ``N/D``; this version finds R by Dinkelbach's fixed-point iteration
(a few vectorised passes over the candidates, no sort), which gives the same set (Conv-2, 6.6M weights:
well under a second).

A layer whose per-weight cost ``a_l + b`` is zero costs nothing to keep: its candidates have an infinite ratio
and are all added (before any other), subject to the maximum density.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class MaskOptimizerError(ValueError):
    """Inputs the optimiser cannot use (shape mismatch, negative cost, NaN importance)."""


TIE_RULES = ("keep", "exact")  # "keep": the reference's |w| >= thr stays; "exact": exactly int(delta * kept) removed


def removal_candidates(magnitudes: np.ndarray, delta: float, ties: str = "keep") -> np.ndarray:
    """Positions (into ``magnitudes``, the |w| of one layer's kept weights) that become removal candidates."""
    if ties not in TIE_RULES:
        raise MaskOptimizerError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    mags = np.asarray(magnitudes)
    n_dec = int(delta * mags.size)
    if n_dec <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_dec >= mags.size:
        return np.arange(mags.size)
    if ties == "keep":  # the reference: thr = sort(|w|)[n_dec]; |w| < thr are candidates, ties with thr stay
        thr = np.partition(mags, n_dec)[n_dec]
        return np.flatnonzero(mags < thr)
    return np.argpartition(mags, n_dec - 1)[:n_dec]  # the n_dec smallest (deterministic for equal inputs)


def _stay_set(mask: np.ndarray, w: np.ndarray, delta: float, ties: str) -> np.ndarray:
    """The kept weights that stay (flat bool): all but the removal candidates. ``w``: the layer's weights, dense
    (flat, the mask's size) or its kept values in mask order. With ``ties="keep"`` no index array is built: the cut
    magnitude from an in-place partition of one float32 copy of the kept |w|, then ``|w| >= thr`` where kept."""
    s = mask.copy()
    n_kept = int(np.count_nonzero(mask))
    kept_values = w.size == n_kept and (w.size != mask.size or n_kept == mask.size)
    if not kept_values and w.size != mask.size:
        raise MaskOptimizerError(f"weights: {w.size} values for a mask of {mask.size} keeping {n_kept}")
    n_dec = int(delta * n_kept)
    if n_dec <= 0:
        return s
    if n_dec >= n_kept:
        s[:] = False
        return s
    if ties == "keep":
        # one float32 copy of the kept |w|, then in place
        mags = w.astype(np.float32, copy=True) if kept_values else w[mask].astype(np.float32, copy=False)
        np.abs(mags, out=mags)
        mags.partition(n_dec)
        thr = mags[n_dec]
        del mags
        if kept_values:
            s[mask] = (w >= thr) | (w <= -thr)
        else:
            s &= (w >= thr) | (w <= -thr)  # |w| >= thr without a float copy of every weight
        return s
    kept_idx = np.flatnonzero(mask)
    mags = np.abs(np.asarray(w if kept_values else w[kept_idx], dtype=np.float32))
    s[kept_idx[removal_candidates(mags, delta, ties)]] = False
    return s


def _above(z: np.ndarray, x: float) -> np.ndarray:
    """``z > x`` exactly for float64 ``x``, also when ``z`` is float32 (compared in float32, with ``x`` rounded
    towards the right float32 neighbour, so no float64 copy of ``z`` is made)."""
    if z.dtype != np.float32:
        return z > x
    x32 = np.float32(x)
    if float(x32) > x:  # the smallest float32 above x: z > x <=> z >= x32
        return z >= x32
    return z > x32  # x32 <= x: the next float32 after x32 is above x


def delta_for_round(round_index: int, initial: float = 0.3, half_life: float = 10000.0) -> float:
    """The removal fraction of the reference: ``0.3 * 0.5 ** (round / 10000)``."""
    if half_life <= 0:
        raise MaskOptimizerError("half_life must be positive")
    return float(initial * 0.5 ** (round_index / half_life))


@dataclass(frozen=True)
class MaskChoice:
    """The optimiser's answer: one bool mask per prunable layer (same shapes as given) and diagnostics."""

    masks: list[np.ndarray]
    objective: float  # N / D of the chosen set
    kept: list[int]  # kept weights per layer
    removed: list[int]  # previously kept weights now pruned, per layer
    regrown: list[int]  # previously pruned weights now kept, per layer


def _check(name: str, arrays: Sequence[np.ndarray], shapes: Sequence[tuple[int, ...]]) -> None:
    if len(arrays) != len(shapes):
        raise MaskOptimizerError(f"{name}: expected {len(shapes)} layers, got {len(arrays)}")
    for i, (a, s) in enumerate(zip(arrays, shapes, strict=True)):
        if tuple(np.shape(a)) != tuple(s):
            raise MaskOptimizerError(f"{name}[{i}]: shape {np.shape(a)} != mask shape {s}")


def optimize_masks(
    importance: Sequence[np.ndarray],
    weights: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    costs: Sequence[float],
    intercept: float,
    delta: float,
    fixed_importance: float = 0.0,
    max_density: float | None = None,
    ties: str = "keep",
) -> MaskChoice:
    """Choose new masks for the prunable layers.

    importance: z per weight (>= 0), one array per prunable layer, pruned positions included.
    weights:    current values, dense (the mask's shape) or the kept values in mask order (only |w| at kept
                positions is used: an edge passes what its network holds, without a dense copy).
    masks:      current masks (bool), one per prunable layer.
    costs:      per layer, ``a_l + b``: the round time per kept weight (compute + communication), >= 0.
    intercept:  c, the per-round constant time (> 0 unless some cost is positive).
    delta:      fraction in [0, 1] of each layer's kept weights that become removal candidates.
    fixed_importance: sum of z over parameters never pruned (biases): numerator only.
    max_density: optional cap on (kept prunable weights) / (all prunable weights).
    ties:       "keep" (reference): kept weights tied with the delta-cut magnitude stay; "exact": exactly
                ``int(delta * kept)`` removal candidates per layer.
    """
    shapes = [tuple(np.shape(m)) for m in masks]
    _check("importance", importance, shapes)
    if len(weights) != len(shapes):
        raise MaskOptimizerError(f"weights: expected {len(shapes)} layers, got {len(weights)}")
    for i, (w, sh) in enumerate(zip(weights, shapes, strict=True)):  # dense of the mask's shape, or kept values
        if tuple(np.shape(w)) != tuple(sh) and np.ndim(w) != 1:
            raise MaskOptimizerError(f"weights[{i}]: shape {np.shape(w)} is neither the mask's {sh} nor a vector "
                                     "of kept values")
    if len(costs) != len(shapes):
        raise MaskOptimizerError(f"costs: expected {len(shapes)} values, got {len(costs)}")
    cost = np.asarray(costs, dtype=np.float64)
    if not np.all(np.isfinite(cost)) or np.any(cost < 0):
        raise MaskOptimizerError(f"costs must be finite and >= 0, got {list(costs)}")
    if not 0.0 <= delta <= 1.0:
        raise MaskOptimizerError(f"delta must be in [0, 1], got {delta}")
    if not np.isfinite(intercept) or intercept < 0:
        raise MaskOptimizerError(f"intercept must be finite and >= 0, got {intercept}")
    if ties not in TIE_RULES:
        raise MaskOptimizerError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    if max_density is not None and not 0.0 < max_density <= 1.0:
        raise MaskOptimizerError(f"max_density must be in (0, 1], got {max_density}")

    # Memory: per layer only bool arrays of its size and z as given (float32 on an edge), no float64 copies, no index
    # arrays of every weight: initial pruning runs this on the device with the dense model's z.
    stay: list[np.ndarray] = []  # S per layer (flat bool)
    cand: list[np.ndarray] = []  # candidates per layer: removal candidates + pruned (flat bool, = ~S)
    zs: list[np.ndarray] = []
    numerator = float(fixed_importance)
    denominator = float(intercept)
    for li, (z, w, m) in enumerate(zip(importance, weights, masks, strict=True)):
        zf = np.asarray(z).ravel()
        if zf.dtype not in (np.float32, np.float64):
            zf = zf.astype(np.float64)
        if not np.isfinite(zf.sum(dtype=np.float64)) or (zf.size and zf.min() < 0):
            raise MaskOptimizerError(f"importance[{li}] must be finite and >= 0")
        mf = np.asarray(m, dtype=bool).ravel()
        s = _stay_set(mf, np.asarray(w).ravel(), delta, ties)
        stay.append(s)
        cand.append(~s)
        zs.append(zf)
        numerator += float(np.sum(zf, where=s, dtype=np.float64))
        denominator += float(np.count_nonzero(s)) * float(cost[li])
    if denominator <= 0:
        raise MaskOptimizerError("round time is zero: give a positive intercept or positive costs")

    total = sum(int(np.prod(sh)) for sh in shapes)
    n_stay = sum(int(np.count_nonzero(s)) for s in stay)
    budget = None if max_density is None else max(0, int(np.floor(max_density * total)) - n_stay)

    # free layers (cost 0): every candidate is added, first, in position order (they raise N, leave D unchanged)
    free = [float(cost[li]) == 0.0 for li in range(len(shapes))]
    picked: list[np.ndarray | None] = [None] * len(shapes)  # per layer: the added candidates (flat bool)
    for li in range(len(shapes)):
        if free[li]:
            sel = cand[li].copy()
            n_cand = int(np.count_nonzero(sel))
            if budget is not None and n_cand > budget:
                sel[np.flatnonzero(sel)[budget:]] = False
            picked[li] = sel
            numerator += float(np.sum(zs[li], where=sel, dtype=np.float64))
            if budget is not None:
                budget -= min(budget, n_cand)

    # paid candidates. The greedy (descending z/c, add while z/c > N/D) ends with the set {z/c > R} where R is
    # the N/D of that set: R is the fixed point of t -> (N0 + sum_{z/c>t} z) / (D0 + sum_{z/c>t} c), found by
    # Dinkelbach's iteration from t = N0/D0 (each step O(candidates), no sort; the chosen set only shrinks).
    paid = [li for li in range(len(shapes)) if not free[li]]
    t = numerator / denominator
    count = -1
    while True:
        num, den, n = numerator, denominator, 0
        for li in paid:
            sel = cand[li] & _above(zs[li], t * float(cost[li]))
            k = int(np.count_nonzero(sel))
            n += k
            num += float(np.sum(zs[li], where=sel, dtype=np.float64))
            den += k * float(cost[li])
        if n == count:
            break
        count, t_new = n, num / den
        if t_new <= t:  # no improvement possible (floating point): keep the current set
            break
        t = t_new
    chosen = {li: cand[li] & _above(zs[li], t * float(cost[li])) for li in paid}
    n_chosen = sum(int(np.count_nonzero(c)) for c in chosen.values())
    if budget is not None and n_chosen > budget:  # the cap: the `budget` best ratios (the greedy's prefix)
        pos = [np.flatnonzero(chosen[li]) for li in paid]
        ratios = np.concatenate([zs[li][p].astype(np.float64) / cost[li] for li, p in zip(paid, pos, strict=True)])
        owner = np.concatenate([np.full(p.size, li) for li, p in zip(paid, pos, strict=True)])
        flat = np.concatenate(pos)
        best = np.argsort(-ratios, kind="stable")[:budget]
        for li in paid:
            keep = np.zeros_like(chosen[li])
            keep[flat[best[owner[best] == li]]] = True
            chosen[li] = keep
    for li in paid:
        picked[li] = chosen[li]
        numerator += float(np.sum(zs[li], where=chosen[li], dtype=np.float64))
        denominator += int(np.count_nonzero(chosen[li])) * float(cost[li])

    new_masks: list[np.ndarray] = []
    kept: list[int] = []
    removed: list[int] = []
    regrown: list[int] = []
    for li, (s, m) in enumerate(zip(stay, masks, strict=True)):
        nm = s
        if picked[li] is not None:
            nm |= picked[li]
        old = np.asarray(m, dtype=bool).ravel()
        kept.append(int(np.count_nonzero(nm)))
        removed.append(int(np.count_nonzero(old & ~nm)))
        regrown.append(int(np.count_nonzero(~old & nm)))
        new_masks.append(nm.reshape(shapes[li]))
    return MaskChoice(new_masks, float(numerator / denominator), kept, removed, regrown)
