"""Assemble a one-process federation: N in-process trainers, the coordinator, a held-out evaluator.

Used by ``prunefl-sim`` (:mod:`coordinator.cli_sim`), ``bench/reproduce.py`` and the tests. The network
factory is a parameter so that tests can run the coordinator logic on a stand-in network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from coordinator.server import Coordinator, ServerConfig
from coordinator.state import GlobalState
from coordinator.strategy import Method
from coordinator.transport_inproc import InProcTransport
from prunefl_common.model_spec import ModelSpec
from prunefl_common.time_model import TimeModel
from prunefl_edge.trainer import Trainer

NetFactory = Callable[[ModelSpec], Any]


class NetEvaluator:
    """Loss and accuracy of the global model on held-out data, with its own network."""

    def __init__(self, net: Any, x: np.ndarray, y: np.ndarray) -> None:
        self.net, self.x, self.y = net, np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y, np.int32)
        self._version: int | None = None

    def __call__(self, state: GlobalState) -> tuple[float, float]:
        if self._version != state.mask_version:
            self.net.set_masks(state.masks)
            self._version = state.mask_version
        self.net.set_weights(state.weights)
        r = self.net.evaluate(self.x, self.y)
        return float(r.loss), float(r.accuracy)


def initial_weights(spec: ModelSpec, seed: int, net_factory: NetFactory) -> list[np.ndarray]:
    net = net_factory(spec)
    try:
        net.init_weights(seed=seed)
        return [np.array(w, np.float32) for w in net.get_weights()]
    finally:
        close = getattr(net, "close", None)
        if close is not None:
            close()


def build_simulation(spec: ModelSpec, clients: Sequence[tuple[np.ndarray, np.ndarray]],
                     test: tuple[np.ndarray, np.ndarray] | None, method: Method, config: ServerConfig,
                     time_model: TimeModel, seed: int, net_factory: NetFactory,
                     weights: list[np.ndarray] | None = None, sgd_config: Callable[..., Any] | None = None,
                     on_round: Callable[[dict[str, Any]], None] | None = None,
                     sparse_thresholds: dict[int, float] | None = None) -> Coordinator:
    """A ready-to-run coordinator over in-process clients ``c0 .. c{N-1}``; ``weights`` default to the seeded
    initialisation of the model; ``sparse_thresholds`` (layer index -> density, from a measured profile) are set
    in every client's network."""
    if weights is None:
        weights = initial_weights(spec, seed, net_factory)
    width = len(str(max(0, len(clients) - 1)))
    trainers = []
    for i, (x, y) in enumerate(clients):
        if len(y) == 0:
            continue
        net = net_factory(spec)
        for layer, density in (sparse_thresholds or {}).items():
            net.set_sparse_threshold(layer, density)
        trainers.append(Trainer(f"c{i:0{width}d}", net, x, y, seed=seed * 1_000_003 + i, sgd_config=sgd_config))
    pshapes = spec.param_shapes()
    transport = InProcTransport(trainers, sizes={i: p.size for i, p in enumerate(pshapes) if p.prunable})
    masks = {i: np.ones(p.shape, bool) for i, p in enumerate(pshapes) if p.prunable}
    state = GlobalState.create(weights, masks, seed)
    evaluator = NetEvaluator(net_factory(spec), *test) if test is not None else None
    return Coordinator(transport, method, state, spec, config, time_model, evaluator, on_round)
