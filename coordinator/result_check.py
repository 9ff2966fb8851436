"""What a result must satisfy before it touches the global model: the right number of values for the mask it
answers, float32, finite; importance dense per parameter, or sparse at the mask's kept positions plus pruned ones,
finite and >= 0; a sane sample count; optionally an update
(its values minus the weights it was sent) whose L2 norm stays within a bound, so that one client cannot drag the
model arbitrarily far in one round (a poisoned or diverged client).

A result from the network is untrusted: one bad client must cost that client its round, not the federation
its weights. Each check returns the reason it failed (None when the result is fine).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from prunefl_common.messages import InitialPruneResult, SparseImportance, TrainResult

MAX_SAMPLES = 10**9


def _values_problem(values: Sequence[np.ndarray], masks: dict[int, np.ndarray],
                    shapes: Sequence[tuple[int, ...]]) -> str | None:
    if len(values) != len(shapes):
        return f"{len(values)} value arrays for {len(shapes)} parameters"
    for p, (v, shape) in enumerate(zip(values, shapes)):
        v = np.asarray(v)
        want = int(np.count_nonzero(masks[p])) if p in masks else int(np.prod(shape))
        if v.dtype != np.float32 or v.ndim != 1 or v.size != want:
            return f"parameter {p}: {v.size} {v.dtype} values, expected {want} float32"
        if not np.all(np.isfinite(v)):
            return f"parameter {p}: values that are not finite (NaN/Inf: the client's training diverged)"
    return None


def update_norm(values: Sequence[np.ndarray], sent: Sequence[np.ndarray]) -> float:
    """L2 norm, over every parameter, of ``values - sent`` (both kept values per parameter), in float64."""
    return float(np.sqrt(sum(float(np.sum(np.square(np.asarray(v, np.float64) - np.asarray(s, np.float64))))
                             for v, s in zip(values, sent, strict=True))))


def train_result_problem(r: TrainResult, masks: dict[int, np.ndarray],
                         shapes: Sequence[tuple[int, ...]], expect_values: bool = True,
                         sent: Sequence[np.ndarray] | None = None, max_update_norm: float | None = None) -> str | None:
    """``sent``: the kept values the client was sent; with ``max_update_norm`` the update's norm is bounded."""
    if not isinstance(r.n_samples, int) or not 0 < r.n_samples <= MAX_SAMPLES:
        return f"sample count {r.n_samples!r} is not in 1..{MAX_SAMPLES}"
    if expect_values or r.values:
        why = _values_problem(r.values, masks, shapes)
        if why is not None:
            return why
        if max_update_norm is not None and sent is not None:
            norm = update_norm(r.values, sent)
            if norm > max_update_norm:
                return f"update norm {norm:.4g} exceeds the bound {max_update_norm:.4g} (--max-update-norm)"
    if isinstance(r.importance, SparseImportance):
        return _sparse_importance_problem(r.importance, masks, shapes)
    if r.importance is not None:
        if len(r.importance) != len(shapes):
            return f"{len(r.importance)} importance arrays for {len(shapes)} parameters"
        for p, (z, shape) in enumerate(zip(r.importance, shapes)):
            z = np.asarray(z)
            if z.shape != tuple(shape) or not np.all(np.isfinite(z)):
                return f"importance of parameter {p}: shape {z.shape} (expected {tuple(shape)}) or not finite"
    return None


def _sparse_importance_problem(z: SparseImportance, masks: dict[int, np.ndarray],
                               shapes: Sequence[tuple[int, ...]]) -> str | None:
    if len(z.kept) != len(shapes):
        return f"{len(z.kept)} importance arrays for {len(shapes)} parameters"
    for p, (k, shape) in enumerate(zip(z.kept, shapes)):
        want = int(np.count_nonzero(masks[p])) if p in masks else int(np.prod(shape))
        if np.size(k) != want or not np.all(np.isfinite(k)) or np.any(np.asarray(k) < 0):
            return f"importance of parameter {p}: {np.size(k)} kept values (expected {want}), finite and >= 0"
    if not set(z.pruned_index) <= set(masks):
        return f"pruned importance for parameters {sorted(set(z.pruned_index) - set(masks))}, which have no mask"
    for p, idx in z.pruned_index.items():
        v, m = np.asarray(z.pruned_z.get(p, ())), np.asarray(masks[p]).ravel()
        if z.sizes.get(p) != m.size or idx.size != v.size or (idx.size and (idx[0] < 0 or idx[-1] >= m.size)):
            return f"pruned importance of parameter {p} does not fit its {m.size} positions"
        if idx.size and m[idx].any():
            return f"pruned importance of parameter {p} names kept positions"
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            return f"pruned importance of parameter {p}: values not finite and >= 0"
    return None


def initial_prune_problem(r: InitialPruneResult, weight_params: Sequence[int],
                          shapes: Sequence[tuple[int, ...]]) -> str | None:
    if sorted(r.masks) != sorted(weight_params):
        return f"masks for parameters {sorted(r.masks)}, the model's weights are {sorted(weight_params)}"
    for p in weight_params:
        m = np.asarray(r.masks[p])
        if m.dtype != bool or m.shape != tuple(shapes[p]):
            return f"mask of parameter {p}: {m.dtype} {m.shape}, expected bool {tuple(shapes[p])}"
        if not m.any():
            return f"mask of parameter {p} keeps no weight"
    return _values_problem(r.values, r.masks, shapes)
