"""PruneFL importance: per client round z_j += n_i * (sum_k g_kj)^2 (:func:`add_client_round`, on the edge); the
coordinator sums over clients (:func:`accumulate`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prunefl_common.messages import SparseImportance


def add_client_round(z: list[np.ndarray] | None, grad_sums: Sequence[np.ndarray], n_samples: int) -> list[np.ndarray]:
    """One client round into a client's running z: ``z += n * a**2`` with ``a`` the sum of the round's local-step
    gradients, float32 and in place (what an edge accumulates and uploads); ``z`` None starts at zeros."""
    if n_samples < 0:
        raise ValueError("n_samples must be >= 0")
    if z is None:
        z = [np.zeros(np.shape(a), np.float32) for a in grad_sums]
    if len(z) != len(grad_sums):
        raise ValueError(f"{len(grad_sums)} gradient sums for {len(z)} importance arrays")
    for acc, a in zip(z, grad_sums, strict=True):
        a = np.asarray(a, np.float32)
        sq = np.multiply(a, a)
        sq *= np.float32(n_samples)
        acc += sq
    return z


def top_positions(z: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """Sorted flat positions of the (at most) ``k`` largest positive ``z`` among ``candidates`` (a bool mask of z's
    shape; ties by position; a zero z can never be chosen, so it is never sent). Without sorting or indexing
    every candidate: a threshold from a strided sample narrows the set, then an exact selection inside it
    (memory: a few bool arrays of z's size, plus the narrowed set)."""
    zf = np.asarray(z).ravel()
    live = np.asarray(candidates, bool).ravel() & (zf > 0)
    n = int(np.count_nonzero(live))
    if k <= 0 or n == 0:
        return np.zeros(0, np.int64)
    if k >= n:
        return np.flatnonzero(live)
    idx = None
    if n > 8 * k:  # a threshold below the k-th largest, from every step-th position
        step = max(1, zf.size // 65536)
        sample = zf[::step][live[::step]]
        if sample.size:
            thr = float(np.quantile(sample, max(0.0, 1.0 - 3.0 * k / n)))
            above = np.flatnonzero(live & (zf > thr))
            if above.size >= k:
                idx = above
    if idx is None:
        idx = np.flatnonzero(live)
    vals = zf[idx]
    kth = vals[np.argpartition(-vals, k - 1)[k - 1]]  # the k-th largest value
    strictly = idx[vals > kth]
    tied = idx[vals == kth][: k - strictly.size]  # ties: the lowest positions
    return np.sort(np.concatenate([strictly, tied]))


def sparse_importance(z: Sequence[np.ndarray], masks: dict[int, np.ndarray], top: float) -> SparseImportance:
    """A client's dense z as what the mask choice can use (:class:`SparseImportance`): z at kept positions, and per
    prunable parameter the largest z at pruned positions, at most ``top`` x its kept count (at least 1 when any
    weight is pruned)."""
    if not top >= 0:
        raise ValueError(f"importance_top must be >= 0, got {top}")
    kept, index, values, sizes = [], {}, {}, {}
    for p, zp in enumerate(z):
        zp = np.asarray(zp, np.float32)
        if p not in masks:
            kept.append(zp.ravel().copy())
            continue
        m = np.asarray(masks[p], bool)
        kept.append(zp[m].ravel())
        n_kept = int(np.count_nonzero(m))
        k = max(1, int(np.ceil(top * n_kept))) if n_kept < m.size else 0
        index[p] = top_positions(zp, ~m, k)
        values[p] = zp.ravel()[index[p]]
        sizes[p] = int(m.size)
    return SparseImportance(kept, index, values, sizes)


def accumulate(total: list[np.ndarray] | None, z: Sequence[np.ndarray] | SparseImportance,
               kept_index: dict[int, np.ndarray] | None = None,
               shapes: Sequence[tuple[int, ...]] | None = None) -> list[np.ndarray]:
    """``total + z`` per parameter (float64); ``total`` None starts a new sum. Returns the new sum. A
    :class:`SparseImportance` needs the flat kept positions of the mask it was collected under and the shapes."""
    if isinstance(z, SparseImportance):
        if kept_index is None or shapes is None:
            raise ValueError("sparse importance needs the kept positions and the parameter shapes")
        return _accumulate_sparse(total, z, kept_index, shapes)
    if total is None:
        return [np.asarray(x, dtype=np.float64).copy() for x in z]
    if len(total) != len(z):
        raise ValueError(f"importance has {len(z)} parameters, the sum has {len(total)}")
    for i, (t, x) in enumerate(zip(total, z, strict=True)):
        x = np.asarray(x)
        if t.shape != x.shape:
            raise ValueError(f"importance of parameter {i}: shape {x.shape} != {t.shape}")
        if not np.all(np.isfinite(x)) or np.any(x < 0):
            raise ValueError(f"importance of parameter {i} must be finite and >= 0")
        t += x
    return total


def sum_importance(per_client: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray] | None:
    total: list[np.ndarray] | None = None
    for z in per_client:
        total = accumulate(total, z)
    return total


def split_importance(z: Sequence[np.ndarray], weight_params: Sequence[int]) -> tuple[list[np.ndarray], float]:
    """(z of each prunable weight, in ``weight_params`` order; sum of z over every other parameter)."""
    wp = set(weight_params)
    fixed = float(sum(np.asarray(x, dtype=np.float64).sum() for i, x in enumerate(z) if i not in wp))
    return [np.asarray(z[p]) for p in weight_params], fixed


def _accumulate_sparse(total: list[np.ndarray] | None, z: SparseImportance, kept_index: dict[int, np.ndarray],
                       shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    if len(z.kept) != len(shapes):
        raise ValueError(f"importance has {len(z.kept)} parameters, the model {len(shapes)}")
    if total is None:
        total = [np.zeros(s, np.float64) for s in shapes]
    for p, (t, k) in enumerate(zip(total, z.kept, strict=True)):
        k = np.asarray(k)
        flat = t.reshape(-1)
        where = kept_index.get(p)
        want = flat.size if where is None else where.size
        if k.size != want:
            raise ValueError(f"importance of parameter {p}: {k.size} kept values, the mask keeps {want}")
        if not np.all(np.isfinite(k)) or np.any(k < 0):
            raise ValueError(f"importance of parameter {p} must be finite and >= 0")
        if where is None:
            flat += k
        else:
            flat[where] += k
    for p, idx in z.pruned_index.items():
        v = np.asarray(z.pruned_z[p])
        if p not in kept_index or idx.size != v.size or (idx.size and (idx[0] < 0 or idx[-1] >= total[p].size)):
            raise ValueError(f"pruned importance of parameter {p} does not fit the model")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            raise ValueError(f"pruned importance of parameter {p} must be finite and >= 0")
        total[p].reshape(-1)[idx] += v
    return total
