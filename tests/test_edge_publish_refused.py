"""An edge behind a broker whose packet limit leaves no room for a message keeps serving: the refusal is logged and
counted, the agent does not die at every task (and its state is still saved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fake_engine import FakeNetwork

from prunefl_common.messages import MaskUpdate, Task, TaskKind, TrainConfig
from prunefl_common.model_spec import Flatten, Linear, ModelSpec, ReLU, spec_to_dict
from prunefl_common.protocol.mqtt_client import BrokerConfig, PacketTooLargeError
from prunefl_common.protocol.wire import encode_task
from prunefl_edge.edge_agent import STATE_FILE, EdgeAgent
from prunefl_edge.edge_config import DataConfig, EdgeConfig
from prunefl_edge.edge_profile import ProfileConfig

SPEC = ModelSpec((16, 1, 1), (Flatten(), Linear(8), ReLU(), Linear(4)))


def test_a_refused_publish_is_counted_and_the_agent_serves_on(tmp_path: Path) -> None:
    cfg = EdgeConfig(id="e1", federation="f", broker=BrokerConfig(), data=DataConfig(path="unused.npz"),
                     state_dir=str(tmp_path), profile=ProfileConfig(measure=False))
    rng = np.random.default_rng(0)
    agent = EdgeAgent(cfg, rng.normal(size=(40, 16, 1, 1)).astype(np.float32),
                      rng.integers(0, 4, 40).astype(np.int32), 4, net_factory=FakeNetwork)

    def refuse(topic: str, data: bytes, retain: bool = False) -> None:
        raise PacketTooLargeError(f"a {len(data)}-byte packet exceeds the broker's limit")

    agent.client.publish = refuse  # type: ignore[method-assign]
    shapes = [p.shape for p in SPEC.param_shapes()]
    masks = {i: np.ones(p.shape, bool) for i, p in enumerate(SPEC.param_shapes()) if p.prunable}
    for r in range(2):
        task = Task(r, TaskKind.TRAIN, MaskUpdate(0, full=masks) if r == 0 else MaskUpdate(0),
                    [np.full(s, 0.1, np.float32).ravel() for s in shapes], TrainConfig(lr=0.1))
        agent._handle(encode_task(task, federation="f", sender="coordinator", model=spec_to_dict(SPEC)))
    assert agent.counters["tasks_done"] == 2  # both tasks ran although no result could leave
    assert agent.counters["publish_refused"] >= 2 and agent.counters["bytes_sent"] == 0
    assert (tmp_path / STATE_FILE).exists()
