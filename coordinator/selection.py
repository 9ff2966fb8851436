"""Client selection: K of the available clients per round, from the coordinator's seeded generator."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def select_clients(rng: np.random.Generator, available: Iterable[str], k: int) -> list[str]:
    """K distinct clients chosen uniformly (all of them if fewer are available), returned sorted.

    The candidates are sorted first so that the choice depends only on the seed and the set of ids,
    not on the order a transport lists them in.
    """
    ids = sorted(set(available))
    if k <= 0:
        raise ValueError(f"clients per round must be positive, got {k}")
    if len(ids) <= k:
        return ids
    pick = rng.choice(len(ids), size=k, replace=False)
    return sorted(ids[i] for i in pick)
