"""The coordinator's global state: weights, masks, mask version, round, counters and the seeded generator.

Saved as one ``.npz`` of plain arrays plus a JSON header (no pickle): ``allow_pickle=False`` on load. The
generator's bit-generator state is JSON (PCG64 state is a few integers), so a resumed run draws the same
client selections as an uninterrupted one.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prunefl_common.mask_delta import MaskDelta, mask_delta
from prunefl_common.npz_file import load_npz_with_meta, save_npz_atomic

STATE_FORMAT = "prunefl-coordinator-state/1"


class StateError(ValueError):
    """A state file that cannot be read (corrupt, wrong format, shapes that do not fit the model)."""


def new_rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


@dataclass
class GlobalState:
    weights: list[np.ndarray]  # float32, C-core parameter order; pruned positions keep their last value
    masks: dict[int, np.ndarray]  # weight param index -> bool mask
    rng: np.random.Generator
    mask_version: int = 0
    round: int = 0
    sim_time_s: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    importance: list[np.ndarray] | None = None  # z summed over clients since the last reconfiguration
    extra: dict[str, Any] = field(default_factory=dict)  # method state, JSON-serialisable

    @classmethod
    def create(cls, weights: list[np.ndarray], masks: dict[int, np.ndarray], seed: int) -> GlobalState:
        return cls([np.array(w, np.float32, copy=True) for w in weights],
                   {p: np.array(m, bool, copy=True) for p, m in masks.items()}, new_rng(seed))

    def set_masks(self, masks: dict[int, np.ndarray]) -> MaskDelta:
        """Install new masks, bump the mask version, return the change (for clients holding the old one)."""
        delta = mask_delta(self.masks, masks, self.mask_version, self.mask_version + 1)
        self.masks = {p: np.array(m, bool, copy=True) for p, m in masks.items()}
        self.mask_version += 1
        return delta

    def kept(self, weight_params: list[int]) -> list[int]:
        return [int(np.count_nonzero(self.masks[p])) for p in weight_params]

    def density(self) -> float:
        total = sum(m.size for m in self.masks.values())
        return sum(int(np.count_nonzero(m)) for m in self.masks.values()) / max(1, total)

    def masked_weights(self) -> list[np.ndarray]:
        """Weights with pruned positions at zero (the model clients train and the one exported)."""
        return [w * self.masks[i] if i in self.masks else w.copy() for i, w in enumerate(self.weights)]

    # ---- persistence ----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomic write (temporary file then rename)."""
        meta = {"format": STATE_FORMAT, "mask_version": self.mask_version, "round": self.round,
                "sim_time_s": self.sim_time_s, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                "n_params": len(self.weights), "mask_params": sorted(self.masks),
                "has_importance": self.importance is not None,
                "rng": self.rng.bit_generator.state, "extra": self.extra}
        arrays: dict[str, np.ndarray] = {}
        for i, w in enumerate(self.weights):
            arrays[f"w{i}"] = w
        for p, m in self.masks.items():
            arrays[f"m{p}"] = m
        if self.importance is not None:
            for i, z in enumerate(self.importance):
                arrays[f"z{i}"] = z
        save_npz_atomic(path, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> GlobalState:
        try:
            meta, data = load_npz_with_meta(path)
            if meta.get("format") != STATE_FORMAT:
                raise StateError(f"{path}: format {meta.get('format')!r}, expected {STATE_FORMAT!r}")
            weights = [np.array(data[f"w{i}"], np.float32) for i in range(int(meta["n_params"]))]
            masks = {int(p): np.array(data[f"m{p}"], bool) for p in meta["mask_params"]}
            imp = ([np.array(data[f"z{i}"]) for i in range(len(weights))] if meta["has_importance"] else None)
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as e:
            if isinstance(e, StateError):
                raise
            raise StateError(f"{path}: not a readable coordinator state ({e}): remove it (or restore a copy) to "
                             "start afresh") from e
        rng = np.random.Generator(np.random.PCG64())
        try:
            rng.bit_generator.state = meta["rng"]
        except (KeyError, TypeError, ValueError) as e:
            raise StateError(f"{path}: not a readable coordinator state (rng: {e})") from e
        return cls(weights, masks, rng, mask_version=int(meta["mask_version"]), round=int(meta["round"]),
                   sim_time_s=float(meta["sim_time_s"]), bytes_up=int(meta["bytes_up"]),
                   bytes_down=int(meta["bytes_down"]), importance=imp, extra=dict(meta["extra"]))
