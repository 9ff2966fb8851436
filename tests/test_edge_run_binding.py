"""The edge's saved state is bound to the coordinator run that trained it: a task of another run starts the edge
clean (the old file kept aside, the reason logged), a task of the same run (a resumed coordinator) resumes, and a
task without a run id (an older coordinator) binds by model only. The agent is driven without a broker: tasks are
fed to its message handler and its publications captured."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from fake_engine import FakeNetwork

from prunefl_common.messages import MaskUpdate, Task, TaskKind, TrainConfig, TrainResult
from prunefl_common.model_spec import Linear, ModelSpec, ReLU, spec_to_dict
from prunefl_common.protocol.mqtt_client import BrokerConfig
from prunefl_common.protocol.wire import ProtocolError, RejectMsg, decode, encode_task
from prunefl_common.run_id import RUN_KEY, new_run_id, split_run, with_run
from prunefl_edge.edge_agent import STATE_FILE, EdgeAgent
from prunefl_edge.edge_config import DataConfig, EdgeConfig
from prunefl_edge.edge_profile import ProfileConfig

SPEC = ModelSpec((16, 1, 1), (Linear(12), ReLU(), Linear(4)), name="tiny")
SHAPES = SPEC.param_shapes()
FULL = {i: np.ones(p.shape, bool) for i, p in enumerate(SHAPES) if p.prunable}


def _agent(state_dir: Path) -> EdgeAgent:
    cfg = EdgeConfig(id="e1", federation="f", broker=BrokerConfig(), data=DataConfig(path="unused.npz"),
                     state_dir=str(state_dir), profile=ProfileConfig(measure=False))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16, 1, 1)).astype(np.float32)
    y = rng.integers(0, 4, 60).astype(np.int32)
    agent = EdgeAgent(cfg, x, y, 4, net_factory=FakeNetwork)
    agent.sent = []  # type: ignore[attr-defined]
    agent.client.publish = lambda topic, data, retain=False: agent.sent.append(data)  # type: ignore[method-assign]
    agent._read_saved_state()
    return agent


def _task(round_: int, version: int, run: str | None, mask_full: bool = True) -> bytes:
    values = [np.full(p.shape, 0.1, np.float32).ravel() for p in SHAPES]
    task = Task(round_, TaskKind.TRAIN, MaskUpdate(version, full=dict(FULL) if mask_full else None), values,
                TrainConfig(lr=0.1))
    model = spec_to_dict(SPEC) if run is None else with_run(spec_to_dict(SPEC), run)
    return encode_task(task, federation="f", sender="coordinator", model=model)


def _answers(agent: EdgeAgent) -> list[object]:
    return [decode(d).body for d in agent.sent if decode(d).header.kind.name in ("RESULT", "REJECT")]


def test_run_ids_are_new_each_time_and_travel_in_the_model_description() -> None:
    a, b = new_run_id(), new_run_id()
    assert a != b
    model, run = split_run(with_run(spec_to_dict(SPEC), a))
    assert run == a and model == spec_to_dict(SPEC) and RUN_KEY not in model
    assert split_run(spec_to_dict(SPEC)) == (spec_to_dict(SPEC), None)  # an older coordinator's task
    with pytest.raises(ValueError):
        with_run(spec_to_dict(SPEC), "../x")


def test_a_task_with_a_malformed_run_id_does_not_decode() -> None:
    values = [np.zeros(p.size, np.float32) for p in SHAPES]
    task = Task(0, TaskKind.TRAIN, MaskUpdate(1, full=dict(FULL)), values, TrainConfig(lr=0.1))
    data = encode_task(task, federation="f", sender="c", model={**spec_to_dict(SPEC), RUN_KEY: "a/b#"})
    with pytest.raises(ProtocolError, match="run id"):
        decode(data)


def test_state_of_another_run_is_kept_aside_and_the_edge_starts_clean(tmp_path: Path, caplog) -> None:
    first = _agent(tmp_path)
    first._handle(_task(0, 1, "runA"))
    assert isinstance(_answers(first)[0], TrainResult)
    assert (tmp_path / STATE_FILE).exists()
    assert first.info()["run"] == "runA"

    # a restarted edge, reached by a new run: a mask-change-only task is refused (it holds nothing of this run)
    second = _agent(tmp_path)
    assert second.info()["run"] == "runA" and second.info()["mask_version"] == 1  # what it holds, before a task
    caplog.set_level(logging.INFO, logger="prunefl_edge.edge_agent")
    second._handle(_task(0, 1, "runB", mask_full=False))
    (reject,) = _answers(second)
    assert isinstance(reject, RejectMsg) and reject.needs_full_mask
    assert "belongs to coordinator run runA, this task to run runB: starting clean" in caplog.text
    aside = tmp_path / f"{STATE_FILE}.run-runA"
    assert aside.exists()
    assert not any("resumed" in r.getMessage() for r in caplog.records)
    # with the full mask it trains, and its state now names the new run
    second._handle(_task(0, 1, "runB"))
    assert isinstance(_answers(second)[-1], TrainResult)
    third = _agent(tmp_path)
    assert third.info()["run"] == "runB"
    assert aside.exists()  # the old run's file is still there for inspection


def test_state_of_the_same_run_resumes(tmp_path: Path, caplog) -> None:
    first = _agent(tmp_path)
    first._handle(_task(0, 1, "runA"))
    second = _agent(tmp_path)
    caplog.set_level(logging.INFO, logger="prunefl_edge.edge_agent")
    second._handle(_task(1, 1, "runA", mask_full=False))  # a resumed coordinator: same run, mask unchanged
    assert isinstance(_answers(second)[0], TrainResult)
    assert "resumed: mask version 1" in caplog.text
    assert not list(tmp_path.glob(f"{STATE_FILE}.run-*"))


def test_a_new_run_reaching_a_running_edge_drops_its_trainer_state(tmp_path: Path, caplog) -> None:
    agent = _agent(tmp_path)
    agent._handle(_task(0, 1, "runA"))
    caplog.set_level(logging.INFO, logger="prunefl_edge.edge_agent")
    agent._handle(_task(0, 1, "runB", mask_full=False))
    assert isinstance(_answers(agent)[-1], RejectMsg) and _answers(agent)[-1].needs_full_mask
    assert "this edge's state belongs to run runA: starting clean" in caplog.text
    assert (tmp_path / f"{STATE_FILE}.run-runA").exists()


def test_tasks_without_a_run_id_bind_by_model_only(tmp_path: Path, caplog) -> None:
    first = _agent(tmp_path)
    first._handle(_task(0, 1, None))
    second = _agent(tmp_path)
    caplog.set_level(logging.INFO, logger="prunefl_edge.edge_agent")
    second._handle(_task(1, 1, None, mask_full=False))
    assert isinstance(_answers(second)[0], TrainResult)
    assert "resumed: mask version 1" in caplog.text


def test_status_json_is_written_at_start_before_any_task(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    seen = {}

    def start(wait_s=None):  # the broker connection: by then status.json is there
        seen["status"] = (tmp_path / "status.json").read_text() if (tmp_path / "status.json").exists() else None
        agent.stop_event.set()

    agent.client.start = start  # type: ignore[method-assign]
    agent.client.stop = lambda final=None: None  # type: ignore[method-assign]
    agent.run()
    assert seen["status"] is not None
    info = json.loads(seen["status"])
    assert info["tasks_done"] == 0 and info["n_samples"] == 60 and info["software"].startswith("prunefl-edge ")


def test_tasks_carrying_a_run_id_are_still_decoded_against_the_models_limits(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    first = _task(0, 1, "runA")
    agent._handle(first)
    assert agent._limits_for(first).shapes == tuple(p.shape for p in SHAPES)  # the run id is not the model
    assert agent._limits_for(_task(0, 1, "runB")).shapes == tuple(p.shape for p in SHAPES)  # a new run, same model
