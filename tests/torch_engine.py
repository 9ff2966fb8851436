"""A PyTorch stand-in for ``prunefl_edge.engine.Network`` (test/bench-only; torch is not a dependency).

Same method names and semantics as the engine API (masks, masked SGD, importance sums of dense gradients),
any ModelSpec. Used to cross-check coordinator behaviour at Conv-2 scale when the C core is not built.
"""

from __future__ import annotations

import numpy as np
import torch
from dense_kept import DenseKeptMixin
from torch import nn

from prunefl_common.model_spec import Conv2d, Flatten, Linear, MaxPool2d, ModelSpec, ReLU

# the engine's own result and config types (importing the engine module does not load the C library)
from prunefl_edge.engine import EvalResult, SGDConfig, StepResult  # noqa: F401 - re-exported


class TorchNetwork(DenseKeptMixin):
    def __init__(self, spec: ModelSpec, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        self.spec = spec
        self.param_shapes = spec.param_shapes()
        mods: list[nn.Module] = []
        shapes = spec.shapes()
        for i, layer in enumerate(spec.layers):
            c = shapes[i][0]
            if isinstance(layer, Linear):
                mods.append(nn.Linear(c, layer.out_features, bias=layer.bias))
            elif isinstance(layer, Conv2d):
                mods.append(nn.Conv2d(c, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                                      bias=layer.bias))
            elif isinstance(layer, MaxPool2d):
                mods.append(nn.MaxPool2d(layer.kernel_size, layer.effective_stride, layer.padding))
            elif isinstance(layer, ReLU):
                mods.append(nn.ReLU())
            elif isinstance(layer, Flatten):
                mods.append(nn.Flatten())
        self.model = nn.Sequential(*mods)
        self.params = list(self.model.parameters())
        for p in self.params:
            p.data.zero_()
        self.masks = {i: torch.ones_like(p, dtype=torch.bool) for i, p in enumerate(self.params)
                      if self.param_shapes[i].prunable}
        self._importance = False
        self._sums = [torch.zeros_like(p) for p in self.params]

    def init_weights(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        for i, p in enumerate(self.params):
            fan_in = int(np.prod(self.param_shapes[i if self.param_shapes[i].prunable else i - 1].shape[1:]))
            b = 1 / np.sqrt(fan_in)
            p.data = (torch.rand(p.shape, generator=g) * 2 - 1) * b
        self._apply()

    def _apply(self) -> None:
        for i, m in self.masks.items():
            self.params[i].data *= m

    def get_weights(self) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for p in self.params]

    def set_weights(self, ws: list[np.ndarray]) -> None:
        for p, w in zip(self.params, ws, strict=True):
            p.data = torch.from_numpy(np.array(w, np.float32)).reshape(p.shape)
        self._apply()

    def get_masks(self) -> dict[int, np.ndarray]:
        return {i: m.numpy().copy() for i, m in self.masks.items()}

    def set_masks(self, masks: dict[int, np.ndarray]) -> None:
        for i, m in masks.items():
            self.masks[i] = torch.from_numpy(np.array(m, bool))
        self._apply()

    def set_sparse_threshold(self, layer: int, density: float) -> None:
        pass

    def set_importance(self, on: bool) -> None:
        self._importance = bool(on)

    def grad_sums(self) -> list[np.ndarray]:
        return [s.numpy().copy() for s in self._sums]

    def reset_grad_sums(self) -> None:
        for s in self._sums:
            s.zero_()

    def reset_momentum(self) -> None:
        pass

    def forward_backward(self, x: np.ndarray, y: np.ndarray) -> StepResult:
        xt = torch.from_numpy(np.ascontiguousarray(x, np.float32)).reshape(len(x), *self.spec.input_shape)
        yt = torch.from_numpy(np.asarray(y, np.int64))
        for p in self.params:
            p.grad = None
        out = self.model(xt)
        loss = nn.functional.cross_entropy(out, yt)
        loss.backward()
        with torch.no_grad():
            for i, p in enumerate(self.params):
                if self._importance:
                    self._sums[i] += p.grad
                if i in self.masks:
                    p.grad *= self.masks[i]
        return StepResult(float(loss.detach()), int((out.argmax(1) == yt).sum()))

    def sgd_step(self, cfg: SGDConfig) -> None:
        with torch.no_grad():
            for p in self.params:
                p -= cfg.lr * p.grad
        self._apply()

    def train_step(self, x, y, cfg: SGDConfig) -> StepResult:
        r = self.forward_backward(x, y)
        self.sgd_step(cfg)
        return r

    def evaluate(self, x, y, batch_size: int = 256) -> EvalResult:
        tot, correct = 0.0, 0
        with torch.no_grad():
            for s in range(0, len(y), batch_size):
                xt = torch.from_numpy(np.ascontiguousarray(x[s:s + batch_size], np.float32)).reshape(
                    -1, *self.spec.input_shape)
                yt = torch.from_numpy(np.asarray(y[s:s + batch_size], np.int64))
                out = self.model(xt)
                tot += float(nn.functional.cross_entropy(out, yt, reduction="sum"))
                correct += int((out.argmax(1) == yt).sum())
        return EvalResult(tot / len(y), correct / len(y), len(y))

    def close(self) -> None:
        pass
