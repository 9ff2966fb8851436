"""How a data set is split over the clients of a federation. Every function returns one sorted index array
per client; every sample lands in exactly one client; the result depends only on the inputs and the seed."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PartitionError(ValueError):
    """A split that cannot be made (more clients than samples, alpha <= 0, ...)."""


def _check(n: int, n_clients: int) -> None:
    if n_clients <= 0:
        raise PartitionError(f"the number of clients must be positive, got {n_clients}")
    if n < n_clients:
        raise PartitionError(f"{n} samples cannot give each of {n_clients} clients at least one")


def iid_partition(y: np.ndarray, n_clients: int, seed: int = 0) -> list[np.ndarray]:
    """Uniformly at random, sizes differing by at most one."""
    _check(len(y), n_clients)
    perm = np.random.default_rng([seed, 1]).permutation(len(y))
    return [np.sort(p) for p in np.array_split(perm, n_clients)]


def dirichlet_partition(y: np.ndarray, n_clients: int, alpha: float = 0.5, seed: int = 0,
                        min_size: int = 1) -> list[np.ndarray]:
    """Label skew: each class is divided over the clients in Dirichlet(alpha) proportions (small alpha: each
    client sees few classes). Redrawn (deterministically) until every client holds at least ``min_size``."""
    _check(len(y), n_clients)
    if not alpha > 0:
        raise PartitionError(f"dirichlet alpha must be > 0, got {alpha}")
    y = np.asarray(y)
    rng = np.random.default_rng([seed, 2])
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for c in np.unique(y):
            idx = rng.permutation(np.flatnonzero(y == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(n_clients, alpha)))[:-1] * len(idx)).astype(np.int64)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
        out = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in out) >= min_size:
            return out
    raise PartitionError(f"no Dirichlet({alpha}) split gives all {n_clients} clients {min_size} samples; "
                         "raise alpha or lower the number of clients")


def shards_partition(y: np.ndarray, n_clients: int, shards_per_client: int = 2, seed: int = 0) -> list[np.ndarray]:
    """McMahan et al.: sort by label, cut into n_clients * shards_per_client shards, deal them at random."""
    n_shards = n_clients * shards_per_client
    _check(len(y), n_shards)
    if shards_per_client <= 0:
        raise PartitionError("shards_per_client must be positive")
    order = np.argsort(np.asarray(y), kind="stable")
    shards = np.array_split(order, n_shards)
    deal = np.random.default_rng([seed, 3]).permutation(n_shards)
    return [np.sort(np.concatenate([shards[s] for s in deal[c * shards_per_client:(c + 1) * shards_per_client]]))
            for c in range(n_clients)]


def natural_partition(groups: Sequence[np.ndarray] | None, n_clients: int | None = None,
                      seed: int = 0) -> list[np.ndarray]:
    """By natural user (LEAF): one client per user, or ``n_clients`` users drawn at random."""
    if groups is None:
        raise PartitionError("this data set has no natural users (LEAF data has); use iid, dirichlet or shards")
    groups = [np.sort(np.asarray(g, np.int64)) for g in groups]
    if n_clients is None or n_clients == len(groups):
        return groups
    if not 0 < n_clients <= len(groups):
        raise PartitionError(f"{n_clients} clients from {len(groups)} users")
    pick = np.sort(np.random.default_rng([seed, 4]).choice(len(groups), n_clients, replace=False))
    return [groups[i] for i in pick]


def partition(how: str, y: np.ndarray, n_clients: int, seed: int = 0, alpha: float = 0.5,
              shards_per_client: int = 2, groups: Sequence[np.ndarray] | None = None) -> list[np.ndarray]:
    if how == "iid":
        return iid_partition(y, n_clients, seed)
    if how == "dirichlet":
        return dirichlet_partition(y, n_clients, alpha, seed)
    if how == "shards":
        return shards_partition(y, n_clients, shards_per_client, seed)
    if how == "natural":
        return natural_partition(groups, n_clients, seed)
    raise PartitionError(f"unknown partition {how!r}: use iid, dirichlet, shards or natural")
