"""Mask changes between two mask versions: added and removed flat indices per weight parameter."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class MaskDeltaError(ValueError):
    """A delta that does not fit the masks it is applied to (wrong version, index out of range, no-op index)."""


@dataclass
class MaskDelta:
    base_version: int  # the version the delta applies to
    version: int  # the version it produces
    added: dict[int, np.ndarray]  # param index -> sorted int64 flat indices that become kept
    removed: dict[int, np.ndarray]  # param index -> sorted int64 flat indices that become pruned

    def num_changes(self) -> int:
        return sum(a.size for a in self.added.values()) + sum(r.size for r in self.removed.values())


def mask_delta(old: dict[int, np.ndarray], new: dict[int, np.ndarray], base_version: int, version: int) -> MaskDelta:
    if set(old) != set(new):
        raise MaskDeltaError(f"masks cover different parameters: {sorted(old)} vs {sorted(new)}")
    added, removed = {}, {}
    for p in sorted(old):
        o, n = np.asarray(old[p], bool).ravel(), np.asarray(new[p], bool).ravel()
        if o.size != n.size:
            raise MaskDeltaError(f"parameter {p}: mask sizes differ ({o.size} vs {n.size})")
        added[p] = np.flatnonzero(n & ~o).astype(np.int64)
        removed[p] = np.flatnonzero(o & ~n).astype(np.int64)
    return MaskDelta(base_version, version, added, removed)


def apply_mask_delta(masks: dict[int, np.ndarray], delta: MaskDelta, version: int) -> dict[int, np.ndarray]:
    """New masks (copies) = ``masks`` (at ``version``) changed by ``delta``; strict about every index."""
    if version != delta.base_version:
        raise MaskDeltaError(f"delta applies to mask version {delta.base_version}, this side holds {version}")
    out = {p: np.array(m, dtype=bool, copy=True) for p, m in masks.items()}
    for what, table, want in (("added", delta.added, False), ("removed", delta.removed, True)):
        for p, idx in table.items():
            if p not in out:
                raise MaskDeltaError(f"{what}: parameter {p} has no mask")
            flat = out[p].reshape(-1)
            idx = np.asarray(idx)
            if idx.size == 0:
                continue
            if idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= flat.size:
                raise MaskDeltaError(f"{what}: parameter {p}: indices outside 0..{flat.size - 1}")
            if np.any(flat[idx] != want):
                raise MaskDeltaError(f"{what}: parameter {p}: some indices are already {'pruned' if want else 'kept'}")
    for p, idx in delta.removed.items():
        out[p].reshape(-1)[np.asarray(idx)] = False
    for p, idx in delta.added.items():
        out[p].reshape(-1)[np.asarray(idx)] = True
    return out
