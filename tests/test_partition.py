"""Partitions: deterministic from the seed, every sample in exactly one client, label skew where asked."""

from __future__ import annotations

import numpy as np
import pytest

from prunefl_edge.partition import (
    PartitionError,
    dirichlet_partition,
    iid_partition,
    natural_partition,
    partition,
    shards_partition,
)

Y = np.repeat(np.arange(10), 100)


def covers_once(parts: list[np.ndarray], n: int) -> bool:
    allidx = np.concatenate(parts)
    return len(allidx) == n and np.array_equal(np.sort(allidx), np.arange(n))


@pytest.mark.parametrize("how", ["iid", "dirichlet", "shards"])
def test_cover_and_determinism(how: str) -> None:
    a = partition(how, Y, 10, seed=5)
    b = partition(how, Y, 10, seed=5)
    c = partition(how, Y, 10, seed=6)
    assert covers_once(a, len(Y))
    assert all(np.array_equal(x, z) for x, z in zip(a, b))
    assert any(not np.array_equal(x, z) for x, z in zip(a, c))


def test_label_skew() -> None:
    def classes(parts: list[np.ndarray]) -> float:
        return float(np.mean([len(np.unique(Y[p])) for p in parts]))

    assert classes(iid_partition(Y, 10)) == 10
    assert classes(shards_partition(Y, 10, 2)) <= 2
    assert classes(dirichlet_partition(Y, 10, alpha=0.1)) < classes(dirichlet_partition(Y, 10, alpha=100.0))


def test_natural_and_errors() -> None:
    groups = [np.array([0, 2]), np.array([1]), np.array([3, 4, 5])]
    assert covers_once(natural_partition(groups), 6)
    assert len(natural_partition(groups, 2, seed=1)) == 2
    with pytest.raises(PartitionError, match="no natural users"):
        natural_partition(None)
    with pytest.raises(PartitionError, match="alpha must be > 0"):
        dirichlet_partition(Y, 10, alpha=0)
    with pytest.raises(PartitionError, match="cannot give each of 20 clients"):
        iid_partition(np.zeros(5), 20)
    with pytest.raises(PartitionError, match="unknown partition"):
        partition("weird", Y, 3)
