"""FedAvg of sparse increments (PruneFL reference): ``w <- w + sum_i (n_i/N) (w_i - w * m)`` at kept positions.

A client under mask ``m`` returns its weights at kept positions; a pruned position has ``w_i = 0`` and
``w * m = 0`` there, so it keeps its old server value: a weight regrown later resumes where it was.
Pure functions; the caller owns the state.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace

import numpy as np

from prunefl_common.messages import TrainResult

NOT_SELECTED = "not selected for this round"


class StaleUpdateError(ValueError):
    """A result for another round or mask version reached aggregation."""


def kept_index(masks: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Flat positions of the kept weights per masked parameter (callers cache it per mask version)."""
    return {p: np.flatnonzero(np.asarray(m, bool).ravel()) for p, m in masks.items()}


def aggregate_sparse(weights: Sequence[np.ndarray], masks: dict[int, np.ndarray],
                     updates: Sequence[tuple[Sequence[np.ndarray], int]],
                     index: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    """New global weights from ``(kept values per parameter, n_samples)`` updates, all under ``masks``.

    ``index``: :func:`kept_index` of ``masks`` when the caller has it cached. Sums in float64 in the order given
    (sort the updates for bit-for-bit reproducibility); returns float32. Every parameter is checked before any
    is written: on an error (wrong size, non-finite result) nothing changes. With no update (or no samples)
    the weights are returned unchanged (copies).
    """
    total = sum(int(n) for _, n in updates)
    if total <= 0:
        return [np.array(w, dtype=np.float32, copy=True) for w in weights]
    index = kept_index(masks) if index is None else index
    new_kept: list[np.ndarray] = []
    for p, w in enumerate(weights):
        kept = int(np.size(w)) if p not in index else len(index[p])
        # w + sum_i (n_i/N)(w_i - w) = sum_i (n_i/N) w_i at kept positions, as sum_i n_i = N: the old value drops
        # out, so no gather of it (the larger half of the work at Conv-2 sizes); float64 sum in the order given
        acc = np.zeros(kept, np.float64)
        tmp = np.empty(kept, np.float64)
        for vals, n in updates:
            v = np.asarray(vals[p]).reshape(-1)
            if v.size != kept:
                raise ValueError(f"parameter {p}: update has {v.size} values, the mask keeps {kept}")
            np.multiply(v, np.float64(int(n) / total), out=tmp)  # a float64 scalar: a float64 product
            acc += tmp
        new = acc.astype(np.float32)
        if not np.all(np.isfinite(new)):
            raise ValueError(f"parameter {p}: aggregated weights are not finite")
        new_kept.append(new)
    out = []
    for p, (w, new) in enumerate(zip(weights, new_kept, strict=True)):
        if p in index:
            o = np.array(w, dtype=np.float32, copy=True)
            o.reshape(-1)[index[p]] = new
        else:
            o = new.reshape(np.shape(w))
        out.append(o)
    return out


def split_fresh(results: Sequence[TrainResult], round_index: int, mask_version: int,
                selected: Collection[str] | None = None) -> tuple[list[TrainResult], list[tuple[TrainResult, str]]]:
    """(results for this round and mask version, one per client, sorted by client id; the others, with why).
    ``selected``: the clients the round's tasks went to; a result from any other client is not fresh, whatever
    round and mask version it names (an edge may publish on its own result topic at any time)."""
    fresh: dict[str, TrainResult] = {}
    rejected: list[tuple[TrainResult, str]] = []
    for r in results:
        if r.round != round_index:
            rejected.append((r, f"round {r.round}, expected {round_index}"))
        elif selected is not None and r.client_id not in selected:
            rejected.append((r, NOT_SELECTED))
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
                      round_index: int, mask_version: int,
                      index: dict[int, np.ndarray] | None = None) -> list[np.ndarray]:
    """Aggregate results that must all belong to ``round_index`` / ``mask_version`` (else StaleUpdateError)."""
    for r in results:
        if r.round != round_index or r.mask_version != mask_version:
            raise StaleUpdateError(f"result of {r.client_id} is for round {r.round} / mask version {r.mask_version}, "
                                   f"aggregating round {round_index} / mask version {mask_version}")
    ordered = sorted(results, key=lambda r: r.client_id)
    return aggregate_sparse(weights, masks, [(r.values, r.n_samples) for r in ordered], index)


def sample_budget(local_steps: int, batch_size: int, announced: object) -> int:
    """The most samples a client can have processed in a round's task, from what the coordinator knows: it asked
    for ``local_steps`` batches of ``batch_size``, and a client with fewer local samples than a batch (its count as
    announced when it was selected) trains on smaller batches. An announced count that is not a positive integer
    is not believed (the task's batch size bounds it)."""
    n = announced if isinstance(announced, int) and not isinstance(announced, bool) and announced > 0 else batch_size
    return int(local_steps) * min(int(batch_size), n)


def weigh_results(results: Sequence[TrainResult], budgets: Mapping[str, int]) -> tuple[list[TrainResult], list[str]]:
    """Each result with its FedAvg weight set to ``min(its claim, the coordinator's budget for it)``; and the
    clients whose claim exceeded their budget (an honest edge claims exactly its budget)."""
    out, capped = [], []
    for r in results:
        cap = budgets[r.client_id]
        if r.n_samples > cap:
            capped.append(r.client_id)
            r = replace(r, n_samples=cap)
        out.append(r)
    return out, capped


def clip_to_median(results: Sequence[TrainResult], sent: Sequence[np.ndarray],
                   factor: float) -> tuple[list[TrainResult], list[str]]:
    """Robust aggregation (``--clip-updates FACTOR``): every update (returned minus sent kept values, over all
    parameters) whose L2 norm exceeds ``factor`` times the median of the round's update norms is scaled down to
    that norm. One client can then move the model at most ``factor`` times as far as a typical one; with two or
    fewer results the median is no majority's, and nothing is clipped. Returns the results and the clipped
    clients."""
    if len(results) < 3:
        return list(results), []
    diffs = [[np.asarray(v, np.float64) - np.asarray(s, np.float64) for v, s in zip(r.values, sent, strict=True)]
             for r in results]
    norms = [float(np.sqrt(sum(float(np.dot(d, d)) for d in ds))) for ds in diffs]
    bound = factor * float(np.median(norms))
    out, clipped = [], []
    for r, ds, norm in zip(results, diffs, norms, strict=True):
        if norm > bound:
            scale = bound / norm
            r = replace(r, values=[(np.asarray(s, np.float64) + d * scale).astype(np.float32)
                                   for s, d in zip(sent, ds, strict=True)])
            clipped.append(r.client_id)
        out.append(r)
    return out, clipped
