"""The engine's kept-value and importance methods for the stand-in networks (numpy, PyTorch), written once over
their dense API (get/set_weights, get_masks, grads, grad_sums): the C core does the same without dense copies."""

from __future__ import annotations

import numpy as np


class DenseKeptMixin:
    def get_kept_values(self) -> list[np.ndarray]:
        ws, ms = self.get_weights(), self.get_masks()
        return [w[ms[i]] if i in ms else w.ravel() for i, w in enumerate(ws)]

    def set_kept_values(self, values: list[np.ndarray]) -> None:
        ws, ms = self.get_weights(), self.get_masks()
        for i, v in enumerate(values):
            if i in ms:
                ws[i] = np.zeros_like(ws[i])
                ws[i][ms[i]] = v
            else:
                ws[i] = np.asarray(v, np.float32).reshape(ws[i].shape)
        self.set_weights(ws)

    def add_importance(self, z: list[np.ndarray], scale: float, kept_only: bool = False) -> None:
        ms = self.get_masks()
        for i, (zi, s) in enumerate(zip(z, self.grad_sums(), strict=True)):
            sq = np.float32(scale) * np.square(np.asarray(s, np.float32))
            zi += np.where(ms[i], sq, np.float32(0)) if kept_only and i in ms else sq

    def add_step_importance(self, z: list[np.ndarray], scale: float = 1.0) -> None:
        for zi, g in zip(z, self.grads(), strict=True):
            zi += np.float32(scale) * np.square(np.asarray(g, np.float32))
