"""The edge decodes tasks against the model it runs: once a task named the model, every later task's declared masks,
mask changes and values must fit it before anything is allocated; a task naming another model is decoded with the
configured limits (a coordinator restarted with another model is still served)."""

from __future__ import annotations

import numpy as np
from fake_engine import FakeNetwork

from prunefl_common.messages import MaskUpdate, Task, TaskKind, TrainConfig
from prunefl_common.model_spec import Flatten, Linear, ModelSpec, ReLU, spec_to_dict
from prunefl_common.protocol.mqtt_client import BrokerConfig
from prunefl_common.protocol.wire import decode, encode_task
from prunefl_edge.edge_agent import EdgeAgent
from prunefl_edge.edge_config import DataConfig, EdgeConfig

SPEC = ModelSpec((1, 4, 4), (Flatten(), Linear(8), ReLU(), Linear(3)), name="tiny")
OTHER = ModelSpec((1, 4, 4), (Flatten(), Linear(9), ReLU(), Linear(3)), name="other")


def _task(spec: ModelSpec, masks: dict[int, np.ndarray] | None = None, round_: int = 0) -> bytes:
    shapes = [p.shape for p in spec.param_shapes()]
    masks = masks if masks is not None else {i: np.ones(p.shape, bool) for i, p in enumerate(spec.param_shapes())
                                             if p.prunable}
    values = [np.zeros(int(masks[i].sum()) if i in masks else int(np.prod(s)), np.float32)
              for i, s in enumerate(shapes)]
    return encode_task(Task(round_, TaskKind.TRAIN, MaskUpdate(1, full=masks), values, TrainConfig(lr=0.1)),
                       federation="t", sender="coordinator", model=spec_to_dict(spec))


def test_tasks_are_decoded_against_the_model_the_edge_runs(tmp_path):
    cfg = EdgeConfig("e0", "t", BrokerConfig(), DataConfig(str(tmp_path / "x.npz")), state_dir=str(tmp_path / "s"))
    rng = np.random.default_rng(0)
    agent = EdgeAgent(cfg, rng.random((30, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 30).astype(np.int32), 3,
                      net_factory=FakeNetwork)
    first = _task(SPEC)
    assert agent._limits_for(first).shapes is None  # no model yet: the configured limits
    agent._ensure_trainer(decode(first, agent._limits_for(first)))
    assert agent._limits_for(first).shapes == tuple(p.shape for p in SPEC.param_shapes())
    assert agent._limits_for(first).max_message_bytes < cfg.max_message_bytes  # about the model's task size
    assert agent._limits_for(_task(OTHER)).shapes is None  # another model: served with the configured limits
    # a task for this model whose mask declares another shape is dropped (and counted), never allocated
    hostile = _task(SPEC, {0: np.ones((512, 512), bool), 2: np.ones((3, 8), bool)}, round_=1)
    before = agent.counters["messages_dropped"]
    agent._handle(hostile)
    assert agent.counters["messages_dropped"] == before + 1 and agent.counters["tasks_rejected"] == 0
