"""Bytes a message takes on the wire, counted from what would be sent (issue 5's encoder follows the same rules).

* values: float32, 4 bytes each;
* an index set (a mask's kept positions, or a delta's added/removed positions) out of ``n`` positions: one
  flag byte, then nothing if the set is empty or complete, else the cheaper of a bitmap (``ceil(n/8)`` bytes)
  and delta coding (LEB128 varints of the gaps between sorted indices, the first gap from -1).
Envelope headers are not counted (a few dozen bytes per message).
"""

from __future__ import annotations

import numpy as np

from coordinator.messages import InitialPruneResult, MaskUpdate, Task, TrainResult

FLOAT_BYTES = 4


def varint_bytes(values: np.ndarray) -> int:
    """Total LEB128 length of non-negative integers."""
    v = np.asarray(values, dtype=np.uint64)
    n = v.size
    for shift in (7, 14, 21, 28, 35, 42, 49, 56, 63):
        n += int(np.count_nonzero(v >= np.uint64(1) << np.uint64(shift)))
    return n


def delta_coded_bytes(indices: np.ndarray) -> int:
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        return 0
    gaps = np.diff(idx, prepend=-1) - 1
    if np.any(gaps < 0):
        raise ValueError("indices must be sorted and distinct")
    return varint_bytes(gaps)


def index_set_bytes(indices: np.ndarray, n: int) -> int:
    k = int(np.size(indices))
    if k == 0 or k == n:
        return 1
    return 1 + min((n + 7) // 8, delta_coded_bytes(indices))


def mask_bytes(mask: np.ndarray) -> int:
    m = np.asarray(mask, bool).ravel()
    return index_set_bytes(np.flatnonzero(m), m.size)


def mask_update_bytes(update: MaskUpdate, sizes: dict[int, int]) -> int:
    if update.full is not None:
        return sum(mask_bytes(m) for m in update.full.values())
    if update.delta is not None:
        d = update.delta
        return sum(index_set_bytes(d.added[p], sizes[p]) + index_set_bytes(d.removed[p], sizes[p]) for p in d.added)
    return 0


def values_bytes(values: list[np.ndarray] | None) -> int:
    return 0 if not values else FLOAT_BYTES * sum(int(np.size(v)) for v in values)


def task_bytes(task: Task, sizes: dict[int, int]) -> int:
    """Download: the values, the mask (full, delta or nothing)."""
    return values_bytes(task.values) + mask_update_bytes(task.mask, sizes)


def result_bytes(result: TrainResult | InitialPruneResult) -> int:
    """Upload: the kept values, the importance when present (dense float32), an initial-pruning mask."""
    n = values_bytes(result.values)
    if isinstance(result, TrainResult):
        n += values_bytes(result.importance)
    else:
        n += sum(mask_bytes(m) for m in result.masks.values())
    return n
