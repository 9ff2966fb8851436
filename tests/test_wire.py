"""The wire format: every message type round-trips (hypothesis), masks go as the cheaper encoding, chunking
reassembles in any order, and hostile input (10k+ mutated and random payloads, re-checksummed so they reach the
parsers) only ever raises ProtocolError, quickly and without large allocations."""

from __future__ import annotations

import json
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordinator.mask_delta import mask_delta
from coordinator.messages import (
    InitialPruneConfig,
    InitialPruneResult,
    MaskUpdate,
    Task,
    TaskKind,
    TrainConfig,
    TrainResult,
)
from coordinator.sim_inputs import load_model
from prunefl_edge.model_spec import ModelSpecError, spec_from_dict, spec_to_dict
from prunefl_edge.protocol.chunks import Reassembler, split_message
from prunefl_edge.protocol.wire import (
    PREFIX,
    MsgKind,
    ProtocolError,
    RejectMsg,
    StatusMsg,
    decode,
    encode_reject,
    encode_result,
    encode_status,
    encode_task,
)

SIZES = [1, 7, 9, 1000]
densities = st.sampled_from([0.0, 0.001, 0.5, 1.0])
fast = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _masks(seed: int, dens: float) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {p: rng.random(n) < dens for p, n in zip((0, 2, 4, 6), SIZES)}


def _values(masks: dict[int, np.ndarray], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for p in range(7):
        n = int(masks[p].sum()) if p in masks else 3
        out.append(rng.standard_normal(n).astype(np.float32))
    return out


def _same(a, b):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    elif hasattr(a, "__dataclass_fields__"):
        for f in a.__dataclass_fields__:
            _same(getattr(a, f), getattr(b, f))
    else:
        assert a == b


@fast
@given(seed=st.integers(0, 2**31), dens=densities, mode=st.sampled_from(["none", "full", "delta"]),
       kind=st.sampled_from(list(TaskKind)), with_model=st.booleans(), rnd=st.integers(-1, 10**6))
def test_task_round_trip(seed, dens, mode, kind, with_model, rnd):
    masks = _masks(seed, dens)
    new = _masks(seed + 1, dens)
    mu = (MaskUpdate(3) if mode == "none" else MaskUpdate(3, full=masks) if mode == "full"
          else MaskUpdate(4, delta=mask_delta(masks, new, 3, 4)))
    cfg = (InitialPruneConfig(lr=0.1, costs=[1.0, 2.5], intercept=0.3, max_density=0.5)
           if kind == TaskKind.INITIAL_PRUNE else TrainConfig(lr=0.05, local_steps=3, momentum=0.9,
                                                               collect_importance=True))
    task = Task(rnd, kind, mu, _values(masks, seed), cfg)
    model = {"input_shape": [1, 8, 8], "layers": [{"type": "flatten"}]} if with_model else None
    sizes = {p: m.size for p, m in masks.items()}
    got = decode(encode_task(task, federation="lab", sender="coordinator", model=model, sizes=sizes))
    assert got.header.kind == MsgKind.TASK and got.header.round == rnd and got.header.mask_version == mu.version
    assert got.model == model
    _same(task.values, got.body.values)
    _same(task.config, got.body.config)
    assert got.body.kind == kind
    if mode == "full":
        _same(masks, got.body.mask.full)
    elif mode == "delta":
        _same(mu.delta.added, got.body.mask.delta.added)
        _same(mu.delta.removed, got.body.mask.delta.removed)
        assert got.body.mask.delta.base_version == 3
    else:
        assert got.body.mask.full is None and got.body.mask.delta is None


@fast
@given(seed=st.integers(0, 2**31), dens=densities, importance=st.booleans(), nan_loss=st.booleans())
def test_train_result_round_trip(seed, dens, importance, nan_loss):
    masks = _masks(seed, dens)
    rng = np.random.default_rng(seed)
    imp = [rng.random((2, 3), dtype=np.float32) for _ in range(7)] if importance else None
    r = TrainResult("edge-7", 12, 3, 250, _values(masks, seed), imp, float("nan") if nan_loss else 0.25, 0.5, 1.5)
    got = decode(encode_result(r, federation="lab", sender="edge-7"))
    _same(r, got.body)


@fast
@given(seed=st.integers(0, 2**31), dens=st.sampled_from([0.001, 0.5, 1.0]))
def test_initial_prune_result_round_trip(seed, dens):
    masks = _masks(seed, dens)
    r = InitialPruneResult("e1", 0, masks, _values(masks, seed), 17, [[1, 2], [3, 4]], [0.5, float("nan")], 0.8,
                           3.0, 1)
    _same(r, decode(encode_result(r, federation="lab", sender="e1")).body)


def test_status_and_reject_round_trip():
    s = StatusMsg("online", {"n_samples": 12, "profile": {"a": [1.5, 2]}})
    got = decode(encode_status(s, federation="lab", sender="e1"))
    assert got.body == s and got.header.sender == "e1"
    r = RejectMsg("mask version 3 unknown", True)
    got = decode(encode_reject(r, federation="lab", sender="e1", round=4, mask_version=3))
    assert got.body == r and got.header.round == 4


def test_masks_use_the_cheaper_encoding():
    rng = np.random.default_rng(0)
    sparse = {0: rng.random(100_000) < 0.01}
    half = {0: rng.random(100_000) < 0.5}
    t = lambda m: Task(0, TaskKind.TRAIN, MaskUpdate(1, full=m), [], TrainConfig(lr=0.1))  # noqa: E731
    small = len(encode_task(t(sparse), federation="f", sender="c"))
    big = len(encode_task(t(half), federation="f", sender="c"))
    assert small < 100_000 / 8 * 0.5  # delta-coded, far below the 12.5 kB bitmap
    assert 100_000 / 8 <= big < 100_000 / 8 + 2048  # the bitmap, not 50k indices


@pytest.mark.parametrize("n", [0, 1, 5000, 5001, 3_000_000])
def test_chunks_reassemble_in_any_order_with_duplicates(n):
    rng = np.random.default_rng(n)
    msg = encode_result(TrainResult("e1", 1, 1, 5, [rng.random(n, dtype=np.float32)]), federation="f", sender="e1")
    parts = split_message(msg, 65536, federation="f", sender="e1")
    assert all(len(p) <= 65536 for p in parts)
    order = list(rng.permutation(len(parts))) + [0]
    r = Reassembler()
    out = [r.feed(parts[i]) for i in order]
    whole = [o for o in out if o is not None]
    assert whole == [msg] or (len(parts) == 1 and whole == [msg, msg])  # a late duplicate chunk is ignored
    assert r.pending_bytes == 0


def test_chunks_time_out_and_are_bounded():
    msg = encode_result(TrainResult("e1", 1, 1, 5, [np.ones(100_000, np.float32)]), federation="f", sender="e1")
    parts = split_message(msg, 65536, federation="f", sender="e1")
    r = Reassembler(timeout_s=10)
    assert r.feed(parts[0], now=0.0) is None and r.pending_bytes > 0
    assert r.feed(parts[1], now=11.0) is None  # the first is gone, this starts a new partial message
    assert len(r.expire(now=30.0)) == 1 and r.pending_bytes == 0
    small = Reassembler(max_pending_messages=2)
    for _ in range(5):
        m = split_message(msg, 65536, federation="f", sender="e1")
        small.feed(m[0])
    assert len(small._pending) <= 2
    other = split_message(msg, 65536, federation="f", sender="e2")  # another sender's chunks never mix in
    assert all(r.feed(p) is None for p in other[:-1])


def test_model_spec_json_round_trip_and_rejections():
    for name, shape in (("conv2", (1, 28, 28)), ("mlp", (1, 8, 8)), ("vgg11", (3, 32, 32))):
        spec, _ = load_model(name, 10, shape, 0)
        assert spec_from_dict(json.loads(json.dumps(spec_to_dict(spec)))) == spec
    good = spec_to_dict(load_model("mlp", 10, (1, 8, 8), 0)[0])
    for bad in (None, [], {"input_shape": [1, 8]}, {**good, "layers": [{"type": "lstm"}]},
                {**good, "layers": [{"type": "linear", "out_features": -1}]},
                {**good, "layers": [{"type": "linear", "out_features": 4, "evil": 1}]},
                {**good, "layers": [{"type": "flatten"}] * 65}, {**good, "x": 1}):
        with pytest.raises(ModelSpecError):
            spec_from_dict(bad)


# ---- hostile input ---------------------------------------------------------------------------------------
def _rebuild(kind: int, body: bytes) -> bytes:
    return PREFIX.pack(b"PFLE", 1, kind, 0, len(body), zlib.crc32(body)) + body


def _hostile_headers(rng: np.random.Generator, msg: bytes) -> bytes:
    """Mutate the JSON inside a valid message, then fix lengths and checksum so the parsers see it."""
    kind = msg[5]
    body = msg[PREFIX.size:]
    (n,) = struct.unpack_from("<Q", body)
    meta = json.loads(body[8:8 + n])
    data = body[8 + n:]
    h = json.loads(meta["__metadata__"]["prunefl"])
    choice = rng.integers(0, 12)
    keys = list(h)
    k = keys[rng.integers(0, len(keys))]
    evils = [None, -1, 2**70, "x" * 5000, [], {}, 1e308, float("nan"), True, [[[[[[1]]]]]], "a" * 40]
    evil = evils[rng.integers(0, len(evils))]
    if choice < 4:
        h[k] = evil
    elif choice == 4:
        h.pop(k)
    elif choice == 5 and "mask" in h and h["mask"].get("entries"):
        h["mask"]["entries"][0]["shape"] = [2**31, 2**31]
    elif choice == 6 and "config" in h:
        h["config"][rng.choice(list(h["config"]))] = evil
    elif choice == 7:
        t = [x for x in meta if x != "__metadata__"]
        if t:
            meta[t[0]]["shape"] = [2**40]
    elif choice == 8:
        t = [x for x in meta if x != "__metadata__"]
        if t:
            meta[t[0]]["data_offsets"] = [0, 2**40]
    elif choice == 9:
        t = [x for x in meta if x != "__metadata__"]
        if t:
            meta[t[0]]["dtype"] = ["F64", "I8", "X", 3][rng.integers(0, 4)]
    elif choice == 10:
        h = "[" * 100000
    else:
        h["kind"] = ["task", "result", "status", "chunk", "zz"][rng.integers(0, 5)]
    meta["__metadata__"]["prunefl"] = h if isinstance(h, str) else json.dumps(h)
    head = json.dumps(meta).encode()
    return _rebuild(kind, struct.pack("<Q", len(head)) + head + data)


def test_fuzz_decoders_only_raise_protocol_error():
    rng = np.random.default_rng(1234)
    masks = _masks(1, 0.3)
    seeds = [
        encode_task(Task(3, TaskKind.TRAIN, MaskUpdate(2, full=masks), _values(masks, 1), TrainConfig(lr=0.1)),
                    federation="f", sender="c", model={"a": 1}),
        encode_task(Task(3, TaskKind.TRAIN, MaskUpdate(3, delta=mask_delta(masks, _masks(2, 0.3), 2, 3)),
                         _values(masks, 1), TrainConfig(lr=0.1)), federation="f", sender="c",
                    sizes={p: m.size for p, m in masks.items()}),
        encode_result(TrainResult("e1", 3, 2, 10, _values(masks, 2), [np.ones((2, 2), np.float32)] * 7),
                      federation="f", sender="e1"),
        encode_result(InitialPruneResult("e1", 0, masks, _values(masks, 3), 2, [[1]], [0.5]), federation="f",
                      sender="e1"),
        encode_status(StatusMsg("online", {"n": 1}), federation="f", sender="e1"),
        encode_reject(RejectMsg("no", False), federation="f", sender="e1", round=1, mask_version=1),
    ]
    seeds += split_message(encode_result(TrainResult("e1", 3, 2, 10, [np.ones(40_000, np.float32)]),
                                         federation="f", sender="e1"), 65536, federation="f", sender="e1")
    reasm = Reassembler()
    passed_crc = accepted = 0
    tracemalloc.start()
    for i in range(10_500):
        base = seeds[i % len(seeds)]
        how = i % 7
        if how == 0:
            b = bytearray(base)
            for _ in range(rng.integers(1, 8)):
                j = rng.integers(0, len(b))
                b[j] ^= 1 << rng.integers(0, 8)
            data = bytes(b)
        elif how == 1:
            data = base[: rng.integers(0, len(base))]
        elif how == 2:
            data = base + rng.bytes(rng.integers(1, 64))
        elif how == 3:
            data = rng.bytes(rng.integers(0, 300))
        elif how == 4:
            data = b"PFLE" + rng.bytes(rng.integers(0, 300))
        else:
            data = _hostile_headers(rng, base)
            passed_crc += 1
        t0 = time.perf_counter()
        tracemalloc.reset_peak()
        for f in (decode, reasm.feed):
            try:
                f(data)
                accepted += 1
            except ProtocolError:
                pass
        assert time.perf_counter() - t0 < 1.0
        assert tracemalloc.get_traced_memory()[1] < 16 * len(data) + 2**21, i
    tracemalloc.stop()
    assert passed_crc > 2500  # a good share reached the parsers past the checksum
    assert accepted < 10_500  # (some hostile headers stay valid messages: that is fine)
