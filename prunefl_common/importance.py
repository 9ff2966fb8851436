"""PruneFL importance: per client round z_j += n_i * (sum_k g_kj)^2 (:func:`add_client_round`, on the edge); the
coordinator sums over clients (:func:`accumulate`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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


def accumulate(total: list[np.ndarray] | None, z: Sequence[np.ndarray]) -> list[np.ndarray]:
    """``total + z`` per parameter (float64); ``total`` None starts a new sum. Returns the new sum."""
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
