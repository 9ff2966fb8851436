"""FedAvg of sparse increments (PruneFL reference): ``w <- w + sum_i (n_i/N) (w_i - w * m)`` at kept positions.

A client under mask ``m`` returns its weights at kept positions; a pruned position has ``w_i = 0`` and
``w * m = 0`` there, so it keeps its old server value: a weight regrown later resumes where it was.
Pure functions; the caller owns the state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from coordinator.messages import TrainResult


class StaleUpdateError(ValueError):
    """A result for another round or mask version reached aggregation."""


def aggregate_sparse(weights: Sequence[np.ndarray], masks: dict[int, np.ndarray],
                     updates: Sequence[tuple[Sequence[np.ndarray], int]]) -> list[np.ndarray]:
    """New global weights from ``(kept values per parameter, n_samples)`` updates, all under ``masks``.

    Sums in float64 in the order given (sort the updates for bit-for-bit reproducibility); returns float32.
    With no update (or no samples) the weights are returned unchanged (copies).
    """
    total = sum(int(n) for _, n in updates)
    out = [np.array(w, dtype=np.float32, copy=True) for w in weights]
    if total <= 0:
        return out
    for p, w in enumerate(out):
        flat = w.reshape(-1)
        idx = np.flatnonzero(np.asarray(masks[p], bool).ravel()) if p in masks else None
        old = (flat if idx is None else flat[idx]).astype(np.float64)
        inc = np.zeros_like(old)
        for vals, n in updates:
            v = np.asarray(vals[p])
            if v.size != old.size:
                raise ValueError(f"parameter {p}: update has {v.size} values, the mask keeps {old.size}")
            inc += (int(n) / total) * (v.astype(np.float64).ravel() - old)
        new = (old + inc).astype(np.float32)
        if not np.all(np.isfinite(new)):
            raise ValueError(f"parameter {p}: aggregated weights are not finite")
        if idx is None:
            flat[:] = new
        else:
            flat[idx] = new
    return out


def split_fresh(results: Sequence[TrainResult], round_index: int,
                mask_version: int) -> tuple[list[TrainResult], list[tuple[TrainResult, str]]]:
    """(results for this round and mask version, one per client, sorted by client id; the others, with why)."""
    fresh: dict[str, TrainResult] = {}
    rejected: list[tuple[TrainResult, str]] = []
    for r in results:
        if r.round != round_index:
            rejected.append((r, f"round {r.round}, expected {round_index}"))
        elif r.mask_version != mask_version:
            rejected.append((r, f"mask version {r.mask_version}, expected {mask_version}"))
        elif r.client_id in fresh:
            rejected.append((r, "duplicate"))
        elif r.n_samples <= 0:
            rejected.append((r, "no samples"))
        else:
            fresh[r.client_id] = r
    return [fresh[k] for k in sorted(fresh)], rejected


def aggregate_results(weights: Sequence[np.ndarray], masks: dict[int, np.ndarray], results: Sequence[TrainResult],
                      round_index: int, mask_version: int) -> list[np.ndarray]:
    """Aggregate results that must all belong to ``round_index`` / ``mask_version`` (else StaleUpdateError)."""
    for r in results:
        if r.round != round_index or r.mask_version != mask_version:
            raise StaleUpdateError(f"result of {r.client_id} is for round {r.round} / mask version {r.mask_version}, "
                                   f"aggregating round {round_index} / mask version {mask_version}")
    ordered = sorted(results, key=lambda r: r.client_id)
    return aggregate_sparse(weights, masks, [(r.values, r.n_samples) for r in ordered])
