"""One byte-size rule: the simulator's byte counts are the lengths of the messages the encoder builds."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from prunefl_common.mask_delta import mask_delta
from prunefl_common.messages import (
    InitialPruneResult,
    MaskUpdate,
    Task,
    TaskKind,
    TrainConfig,
    TrainResult,
    kept_values,
)
from prunefl_common.protocol.codec import encode_result, encode_task, result_nbytes, task_nbytes
from prunefl_common.protocol.envelope import container_layout
from prunefl_common.protocol.positions import encode_positions, positions_nbytes

DENSITIES = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
N = 1_000_000


def _mask(rng, density, shape=(N,)):
    return rng.random(shape) < density


@pytest.mark.parametrize("density", DENSITIES)
def test_positions_size_is_what_is_encoded(density):
    rng = np.random.default_rng(int(density * 1e4))
    idx = np.flatnonzero(_mask(rng, density))
    _, arr = encode_positions(idx, N)
    assert positions_nbytes(idx, N) == arr.nbytes


@pytest.mark.parametrize("density", DENSITIES)
def test_task_and_result_sizes_equal_encoded_lengths(density):
    rng = np.random.default_rng(int(density * 1e4) + 1)
    shapes = [(1000, 1000), (1000,), (64, 1, 5, 5), (64,)]
    weights = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    old = {0: _mask(rng, density * 1.3, shapes[0]), 2: _mask(rng, min(1.0, density * 4), shapes[2])}
    new = {0: _mask(rng, density, shapes[0]), 2: _mask(rng, min(1.0, density * 3), shapes[2])}
    sizes = {p: int(np.prod(shapes[p])) for p in new}
    values = kept_values(weights, new)
    cfg = TrainConfig(lr=0.1, local_steps=5, batch_size=20, collect_importance=True, upload_importance=True)
    for mu in (MaskUpdate(1), MaskUpdate(1, full=new), MaskUpdate(1, delta=mask_delta(old, new, 0, 1))):
        task = Task(7, TaskKind.TRAIN, mu, values, cfg)
        kw = {"federation": "lab", "sender": "coordinator", "sizes": sizes}
        assert task_nbytes(task, **kw) == len(encode_task(task, **kw))
    z = [np.abs(rng.standard_normal(s)).astype(np.float32) for s in shapes]
    for importance in (None, z):
        res = TrainResult("edge-01", 7, 1, 123, values, importance, 0.5, 0.9, 1.25)
        assert result_nbytes(res, federation="lab", sender="edge-01") == len(
            encode_result(res, federation="lab", sender="edge-01"))
    ip = InitialPruneResult("edge-01", 0, new, values, 12, [[5, 6]], [0.5, 0.25], 0.8, 3.0, 1)
    assert result_nbytes(ip, federation="lab", sender="edge-01") == len(
        encode_result(ip, federation="lab", sender="edge-01"))


def test_container_layout_is_safetensors_own():
    """Our writer lays the container out as safetensors' writer does (the bytes of protocol version 1)."""
    rng = np.random.default_rng(3)
    for trial in range(100):
        t = {}
        for _ in range(int(rng.integers(0, 8))):
            dt = rng.choice([np.float32, np.float16, np.uint8, np.uint16, np.uint32, np.uint64])
            name = str(rng.choice(["v", "m", "a", "r", "z", "data"])) + str(int(rng.integers(0, 30)))
            shape = tuple(int(s) for s in rng.integers(0, 5, size=int(rng.integers(1, 3))))
            t[name] = (rng.random(shape) * 100).astype(dt)
        md = '{"x":"a\\\\b\\"c","n":' + str(trial) + '}'
        head, arrays = container_layout(t, md)
        assert head + b"".join(a.tobytes() for a in arrays) == st_save(t, metadata={"prunefl": md})


def test_safetensors_reads_our_messages_and_we_read_its_containers():
    """The body is a safetensors file both ways: the library loads what we encode, we decode what it writes."""
    from prunefl_common.protocol.envelope import PREFIX, Tensors

    rng = np.random.default_rng(5)
    values = [rng.standard_normal(n).astype(np.float32) for n in (7, 0, 3)]
    z = [np.abs(rng.standard_normal(s)).astype(np.float32) for s in ((2, 3), (0,), (3,))]
    res = TrainResult("e1", 3, 2, 9, values, z, 0.1, 0.5, 1.0)
    data = encode_result(res, federation="lab", sender="e1")
    loaded = st_load(data[PREFIX.size:])
    for i, v in enumerate(values):
        np.testing.assert_array_equal(loaded[f"v{i}"], v)
        np.testing.assert_array_equal(loaded[f"z{i}"], z[i])
    body = st_save({"v0": values[0], "m1": np.arange(5, dtype=np.uint8), "z0": z[0]}, metadata={"prunefl": "{}"})
    t = Tensors.load(memoryview(body))
    np.testing.assert_array_equal(t.take("v0", "t"), values[0])
    np.testing.assert_array_equal(t.take("m1", "t"), np.arange(5, dtype=np.uint8))
    np.testing.assert_array_equal(t.take("z0", "t"), z[0])
