"""A numpy stand-in for ``prunefl_edge.engine.Network`` (Linear / ReLU / Flatten only), for fast tests of the
coordinator logic that do not need the C core. Same method names and semantics as the engine's API."""

from __future__ import annotations

import numpy as np
from dense_kept import DenseKeptMixin

from prunefl_common.model_spec import Flatten, Linear, ModelSpec, ReLU

# the engine's own result and config types (importing the engine module does not load the C library)
from prunefl_edge.engine import EvalResult, SGDConfig, StepResult  # noqa: F401 - re-exported


class FakeNetwork(DenseKeptMixin):
    def __init__(self, spec: ModelSpec, threads: int = 1) -> None:
        self.spec = spec
        self.param_shapes = spec.param_shapes()
        for layer in spec.layers:
            if not isinstance(layer, (Linear, ReLU, Flatten)):
                raise TypeError("the fake engine supports Linear, ReLU and Flatten only")
        self.params = [np.zeros(p.shape, np.float32) for p in self.param_shapes]
        self.masks = {i: np.ones(p.shape, bool) for i, p in enumerate(self.param_shapes) if p.prunable}
        self._grads = [np.zeros_like(p) for p in self.params]
        self._sums = [np.zeros_like(p) for p in self.params]
        self._importance = False

    def init_weights(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        for i, p in enumerate(self.param_shapes):
            fan_in = self.param_shapes[i if p.prunable else i - 1].shape[1]
            b = 1 / np.sqrt(fan_in)
            self.params[i] = rng.uniform(-b, b, p.shape).astype(np.float32)
        self._apply_masks()

    def _apply_masks(self) -> None:
        for i, m in self.masks.items():
            self.params[i] *= m

    def get_weights(self) -> list[np.ndarray]:
        return [p.copy() for p in self.params]

    def set_weights(self, ws: list[np.ndarray]) -> None:
        for i, w in enumerate(ws):
            if w.shape != self.params[i].shape:
                raise ValueError("shape")
            self.params[i] = np.array(w, np.float32)
        self._apply_masks()

    def get_masks(self) -> dict[int, np.ndarray]:
        return {i: m.copy() for i, m in self.masks.items()}

    def set_masks(self, masks: dict[int, np.ndarray]) -> None:
        for i, m in masks.items():
            self.masks[i] = np.array(m, bool)
        self._apply_masks()

    def set_importance(self, on: bool) -> None:
        self._importance = bool(on)

    def grad_sums(self) -> list[np.ndarray]:
        return [s.copy() for s in self._sums]

    def reset_grad_sums(self) -> None:
        for s in self._sums:
            s[...] = 0

    def reset_momentum(self) -> None:
        pass

    def set_sparse_threshold(self, layer: int, density: float) -> None:
        pass

    def grads(self) -> list[np.ndarray]:
        return [g.copy() for g in self._grads]

    def _layers(self):
        pi = 0
        for layer in self.spec.layers:
            if isinstance(layer, Linear):
                yield "linear", pi, (pi + 1 if layer.bias else None)
                pi += 2 if layer.bias else 1
            elif isinstance(layer, ReLU):
                yield "relu", None, None

    def _forward(self, x: np.ndarray):
        h = x.reshape(len(x), -1).astype(np.float32)
        cache = []
        for kind, wi, bi in self._layers():
            cache.append((kind, wi, bi, h))
            if kind == "linear":
                h = h @ self.params[wi].T + (self.params[bi] if bi is not None else 0)
            else:
                h = np.maximum(h, 0)
        return h, cache

    def logits(self, x: np.ndarray) -> np.ndarray:
        return self._forward(x)[0]

    @staticmethod
    def _loss(logits: np.ndarray, y: np.ndarray):
        z = logits - logits.max(1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(1, keepdims=True)
        loss = float(-np.log(p[np.arange(len(y)), y] + 1e-12).mean())
        return loss, p, int((logits.argmax(1) == y).sum())

    def forward_backward(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        out, cache = self._forward(x)
        loss, p, correct = self._loss(out, y)
        d = p
        d[np.arange(len(y)), y] -= 1
        d /= len(y)
        for kind, wi, bi, h in reversed(cache):
            if kind == "linear":
                gw = d.T @ h
                if self._importance:
                    self._sums[wi] += gw
                self._grads[wi] = gw * self.masks[wi]
                if bi is not None:
                    self._grads[bi] = d.sum(0)
                    if self._importance:
                        self._sums[bi] += self._grads[bi]
                d = d @ self.params[wi]
            else:
                d = d * (h > 0)
        return StepResult(loss, correct)

    def sgd_step(self, cfg: SGDConfig) -> None:
        for i, g in enumerate(self._grads):
            self.params[i] -= cfg.lr * g
        self._apply_masks()

    def train_step(self, x, y, cfg: SGDConfig) -> StepResult:
        r = self.forward_backward(x, y)
        self.sgd_step(cfg)
        return r

    def evaluate(self, x, y, batch_size: int = 256) -> EvalResult:
        loss, _, correct = self._loss(self.logits(x), np.asarray(y))
        return EvalResult(loss, correct / len(y), len(y))

    def close(self) -> None:
        pass
