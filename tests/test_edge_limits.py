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


def test_the_inbox_is_bounded_in_bytes_and_drops_the_oldest():
    import queue

    import pytest

    from prunefl_edge.edge_agent import Inbox

    box = Inbox(100)
    for i in range(5):
        box.put(bytes([i]) * 30)  # 150 bytes offered: the two oldest go
    assert box.held_bytes == 90 and box.dropped == 2 and box.dropped_bytes == 60
    box.put(b"x" * 101)  # larger than the whole budget: dropped, nothing evicted for it
    assert box.dropped == 3 and box.held_bytes == 90
    assert [box.get(0.1)[0] for _ in range(3)] == [2, 3, 4]
    with pytest.raises(queue.Empty):
        box.get(0.01)


def test_a_flood_on_the_task_topic_while_the_edge_trains_is_bounded_and_counted(tmp_path):
    """The agent's loop is busy (training): what arrives meanwhile waits in the inbox, at most two tasks' worth of
    bytes ([edge] max_message_bytes x 2); the rest is dropped oldest first and shows in the edge's status."""
    cfg = EdgeConfig("e0", "t", BrokerConfig(), DataConfig(str(tmp_path / "x.npz")), state_dir=str(tmp_path / "s"),
                     max_message_bytes=2**20)
    rng = np.random.default_rng(0)
    agent = EdgeAgent(cfg, rng.random((30, 1, 4, 4), dtype=np.float32), rng.integers(0, 3, 30).astype(np.int32), 3,
                      net_factory=FakeNetwork)
    junk = b"x" * 2**18
    for _ in range(200):  # 50 MiB offered
        agent._on_message("prunefl/t/edge/e0/task", junk)
    assert agent._inbox.held_bytes <= 2 * 2**20
    info = agent.info()
    assert info["inbox_dropped"] == 200 - 8 and info["bytes_inbox_dropped"] == (200 - 8) * 2**18
