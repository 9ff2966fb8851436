"""The wire format: every message type and variant round-trips exactly (hypothesis), masks go as the cheaper
encoding, each malformed field is rejected with a ProtocolError that says what is wrong, chunking reassembles in
any order with duplicates, timeouts and bounded memory, and the model description round-trips.
(Random and mutated payloads in bulk: test_wire_fuzz.py.)"""

from __future__ import annotations

import json
import logging
import re
import struct
import tracemalloc
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from prunefl_common.mask_delta import MaskDelta, mask_delta
from prunefl_common.messages import (
    InitialPruneConfig,
    InitialPruneResult,
    MaskUpdate,
    Task,
    TaskKind,
    TrainConfig,
    TrainResult,
)
from prunefl_common.model_spec import (
    Conv2d,
    Flatten,
    MaxPool2d,
    ModelSpec,
    ModelSpecError,
    spec_from_dict,
    spec_to_dict,
)
from prunefl_common.protocol.chunks import MIN_PAYLOAD, Reassembler, chunk_overhead, split_message
from prunefl_common.protocol.wire import (
    PREFIX,
    Limits,
    MsgKind,
    ProtocolError,
    RejectMsg,
    StatusMsg,
    decode,
    decode_chunk,
    encode_chunk,
    encode_reject,
    encode_result,
    encode_status,
    encode_task,
    envelope_kind,
    peek_header,
)
from prunefl_edge.models import conv2_spec, mlp_spec, vgg11_spec

ex = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SHAPES = {0: (1,), 2: (7,), 4: (3, 3), 6: (10, 10, 10)}  # 1, 7, 9 and 1000 elements
DENSITIES = [0.0, "one", 0.01, 0.5, 1.0]  # "one": exactly one kept entry


# ---- helpers (test_wire_fuzz.py uses them too) -----------------------------------------------------------------
def masks_at(rng: np.random.Generator, dens: float | str) -> dict[int, np.ndarray]:
    out = {}
    for p, shape in SHAPES.items():
        n = int(np.prod(shape))
        if dens == "one":
            m = np.zeros(n, bool)
            m[rng.integers(n)] = True
        else:
            m = rng.random(n) < float(dens)
        out[p] = m.reshape(shape)
    return out


def values_for(rng: np.random.Generator, masks: dict[int, np.ndarray], n_params: int = 8) -> list[np.ndarray]:
    """Kept values per parameter: the mask's kept count for weights, 5 for the others (biases)."""
    return [rng.standard_normal(int(masks[p].sum()) if p in masks else 5).astype(np.float32) for p in range(n_params)]


def same(a: Any, b: Any, where: str = "") -> None:
    """Deep equality: arrays by dtype, shape and content; NaN equals NaN; dataclasses field by field."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), where
        assert (a.dtype, a.shape) == (b.dtype, b.shape), where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b), where
        for f in a.__dataclass_fields__:
            same(getattr(a, f), getattr(b, f), f"{where}.{f}")
    elif isinstance(a, float) and np.isnan(a):
        assert isinstance(b, float) and np.isnan(b), where
    else:
        assert type(a) is type(b) and a == b, f"{where}: {a!r} != {b!r}"


def unpack(msg: bytes) -> tuple[int, dict[str, Any], dict[str, np.ndarray]]:
    """(kind byte, JSON header, tensors) of a valid envelope, read without the module under test."""
    body = msg[PREFIX.size:]
    (n,) = struct.unpack_from("<Q", body)
    meta = json.loads(body[8:8 + n])
    return msg[5], json.loads(meta["__metadata__"]["prunefl"]), st_load(bytes(body))


def envelope(kind: int, body: bytes, *, magic: bytes = b"PFLE", version: int = 1, flags: int = 0) -> bytes:
    """A prefix with a correct length and CRC around any body."""
    return struct.pack("<4sBBHII", magic, version, kind, flags, len(body), zlib.crc32(body)) + body


def repack(kind: int, header: dict[str, Any] | str, tensors: dict[str, np.ndarray]) -> bytes:
    """A well-formed safetensors body with ``header`` (a dict, or JSON text as is) and a correct prefix."""
    text = header if isinstance(header, str) else json.dumps(header)
    return envelope(kind, st_save(tensors, metadata={"prunefl": text}))


def container(kind: int, meta: dict[str, Any] | bytes, data: bytes) -> bytes:
    """A body from a hand-made safetensors header (dict or raw bytes) and data, with a correct prefix."""
    head = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return envelope(kind, struct.pack("<Q", len(head)) + head + data)


def configs(kind: TaskKind) -> st.SearchStrategy[TrainConfig | InitialPruneConfig]:
    unit = st.floats(0.0, 1.0)
    if kind == TaskKind.INITIAL_PRUNE:
        return st.builds(InitialPruneConfig, lr=st.floats(0.0, 10.0), costs=st.lists(st.floats(0.0, 1e-3), max_size=8),
                         intercept=st.floats(0.0, 100.0), n_batches=st.integers(1, 50), batch_size=st.integers(1, 64),
                         reconfig_interval=st.integers(1, 100), max_passes=st.integers(0, 5000), acc_threshold=unit,
                         delta=unit, stop_change=unit, stop_count=st.integers(1, 10),
                         max_density=st.none() | unit, seed=st.integers(0, 2**63 - 1))
    return st.builds(TrainConfig, lr=st.floats(0.0, 10.0), local_steps=st.integers(1, 10**6),
                     batch_size=st.integers(1, 65536), momentum=unit, weight_decay=st.floats(0.0, 1.0),
                     collect_importance=st.booleans(), upload_importance=st.booleans())


# ---- round trips -----------------------------------------------------------------------------------------------
def check_task_round_trip(seed: int, dens: float | str, new_dens: float | str, mode: str, kind: TaskKind,
                          config: TrainConfig | InitialPruneConfig, with_model: bool = True, with_sizes: bool = True,
                          rnd: int = 5, version: int = 3) -> None:
    rng = np.random.default_rng(seed)
    old, new = masks_at(rng, dens), masks_at(rng, new_dens)
    if mode == "none":
        mu = MaskUpdate(version)
    elif mode == "full":
        mu = MaskUpdate(version, full=old)
    else:
        d = mask_delta(old, new, version - 1, version)
        if mode == "partial delta":  # a parameter may appear in one table only
            d = MaskDelta(d.base_version, version, {0: d.added[0], 4: d.added[4]}, {4: d.removed[4], 6: d.removed[6]})
        mu = MaskUpdate(version, delta=d)
    task = Task(rnd, kind, mu, values_for(rng, old), config)
    model = spec_to_dict(mlp_spec((1, 8, 8), (16,))) if with_model else None
    sizes = {p: int(np.prod(s)) for p, s in SHAPES.items()} if with_sizes else None
    msg = encode_task(task, federation="lab-1", sender="coordinator", model=model, sizes=sizes)
    got = decode(msg)
    assert got.nbytes == len(msg)
    h = got.header
    assert (h.kind, h.federation, h.sender, h.round, h.mask_version) == (MsgKind.TASK, "lab-1", "coordinator", rnd,
                                                                         version)
    assert len(h.msg_id) == 32 and int(h.msg_id, 16) >= 0 and h.msg_id == h.msg_id.lower()
    assert peek_header(msg) == h
    same(task, got.body)
    same(model, got.model)
    assert decode(encode_task(task, federation="lab-1", sender="coordinator")).header.msg_id != h.msg_id


@settings(ex, max_examples=100)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1), dens=st.sampled_from(DENSITIES),
       new_dens=st.sampled_from(DENSITIES), mode=st.sampled_from(["none", "full", "delta", "partial delta"]),
       kind=st.sampled_from(list(TaskKind)), with_model=st.booleans(), with_sizes=st.booleans(),
       rnd=st.integers(-1, 2**62), version=st.integers(1, 2**62))
def test_task_round_trip(data, seed, dens, new_dens, mode, kind, with_model, with_sizes, rnd, version):
    check_task_round_trip(seed, dens, new_dens, mode, kind, data.draw(configs(kind)), with_model, with_sizes, rnd,
                          version)


@pytest.mark.parametrize("kind", list(TaskKind))
@pytest.mark.parametrize("mode", ["none", "full", "delta", "partial delta"])
def test_every_task_variant_round_trips(mode, kind):
    """Each mode x kind, every mask density, with and without model and sizes (hypothesis samples; this is all)."""
    config = (InitialPruneConfig(lr=0.1, costs=[1e-6, 2.5e-7], intercept=1.25, max_density=None)
              if kind == TaskKind.INITIAL_PRUNE else TrainConfig(lr=0.25, collect_importance=True))
    for i, dens in enumerate(DENSITIES):
        for with_model in (False, True):
            check_task_round_trip(i, dens, DENSITIES[-1 - i], mode, kind, config, with_model, with_model)


@ex
@given(seed=st.integers(0, 2**32 - 1), dens=st.sampled_from(DENSITIES), with_importance=st.booleans(),
       loss=st.sampled_from([float("nan"), 0.0, 2.5, -1.0]), accuracy=st.sampled_from([float("nan"), 0.0, 1.0]),
       compute=st.sampled_from([float("nan"), 0.0, 12.5]), n_samples=st.integers(0, 10**12))
def test_train_result_round_trip(seed, dens, with_importance, loss, accuracy, compute, n_samples):
    rng = np.random.default_rng(seed)
    masks = masks_at(rng, dens)
    imp = None
    if with_importance:  # dense per parameter, in its own shape (non-finite values are the coordinator's business)
        imp = [rng.random(s, dtype=np.float32) for s in [(3, 4), (4,), (2, 1, 3, 3), (1,)]]
        imp[0][0, 0] = np.inf
    r = TrainResult("edge-7", 12, 3, n_samples, values_for(rng, masks), imp, loss, accuracy, compute)
    r.values[1][:1] = np.nan
    msg = encode_result(r, federation="lab", sender="edge-7")
    got = decode(msg)
    assert (got.header.kind, got.header.round, got.header.mask_version, got.model) == (MsgKind.RESULT, 12, 3, None)
    same(r, got.body)


@ex
@given(seed=st.integers(0, 2**32 - 1), dens=st.sampled_from(DENSITIES),
       hist=st.lists(st.lists(st.integers(0, 10**6), max_size=4), max_size=20),
       dens_hist=st.lists(st.floats(0.0, 1.0) | st.just(float("nan")), max_size=20))
def test_initial_prune_result_round_trip(seed, dens, hist, dens_hist):
    rng = np.random.default_rng(seed)
    masks = masks_at(rng, dens)
    r = InitialPruneResult("e1", 0, masks, values_for(rng, masks), 17, hist, dens_hist, 0.8, 3.0, 1)
    got = decode(encode_result(r, federation="lab", sender="e1"))
    same(r, got.body)
    assert got.header.mask_version == 1


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False,
                                                                                                  allow_infinity=False)
                           | st.text(max_size=20), lambda c: st.lists(c, max_size=4) | st.dictionaries(
                               st.text(max_size=8), c, max_size=4), max_leaves=30)


@ex
@given(state=st.sampled_from(["online", "offline", "busy"]), info=st.dictionaries(st.text(max_size=10), json_values,
                                                                                   max_size=6),
       rnd=st.integers(-1, 10**6), reason=st.text(max_size=5000), needs_full=st.booleans())
def test_status_and_reject_round_trip(state, info, rnd, reason, needs_full):
    s = StatusMsg(state, info)
    got = decode(encode_status(s, federation="lab", sender="e1", round=rnd, mask_version=4))
    same(s, got.body)
    assert (got.header.kind, got.header.round, got.header.mask_version) == (MsgKind.STATUS, rnd, 4)
    got = decode(encode_reject(RejectMsg(reason, needs_full), federation="lab", sender="e1", round=rnd,
                               mask_version=3))
    same(RejectMsg(reason[:4096], needs_full), got.body)  # longer reasons are cut
    assert (got.header.kind, got.header.round) == (MsgKind.REJECT, rnd)


def test_decode_accepts_bytearray_and_memoryview():
    msg = encode_status(StatusMsg("busy", {}), federation="f", sender="e")
    for data in (bytearray(msg), memoryview(msg)):
        assert decode(data).body == StatusMsg("busy", {})


def test_encoders_refuse_what_the_decoder_would_reject():
    train = Task(0, TaskKind.TRAIN, MaskUpdate(0), [], TrainConfig(lr=0.1))
    for bad in (dict(federation="a/b", sender="c"), dict(federation="f", sender=""),
                dict(federation="f", sender="x" * 65)):
        with pytest.raises(ValueError, match="must be 1-64"):
            encode_task(train, **bad)
    for task in (Task(0, TaskKind.TRAIN, MaskUpdate(0), [], TrainConfig(lr=float("nan"))),
                 Task(0, TaskKind.TRAIN, MaskUpdate(0), [], TrainConfig(lr=0.1, local_steps=0)),
                 Task(0, TaskKind.GRADIENT, MaskUpdate(0), [], InitialPruneConfig(lr=0.1, costs=[], intercept=0)),
                 Task(0, TaskKind.TRAIN, MaskUpdate(2, delta=MaskDelta(1, 3, {}, {})), [], TrainConfig(lr=0.1)),
                 Task(0, TaskKind.TRAIN, MaskUpdate(2, delta=MaskDelta(1, 2, {0: np.array([3, 1])}, {})), [],
                      TrainConfig(lr=0.1)),
                 Task(-2, TaskKind.TRAIN, MaskUpdate(0), [], TrainConfig(lr=0.1))):
        with pytest.raises(ValueError):
            encode_task(task, federation="f", sender="c")
    with pytest.raises(ValueError):
        encode_task(Task(0, TaskKind.TRAIN, MaskUpdate(2, delta=MaskDelta(1, 2, {0: np.array([9])}, {})), [],
                         TrainConfig(lr=0.1)), federation="f", sender="c", sizes={0: 9})
    with pytest.raises(ValueError):
        encode_status(StatusMsg("sleeping", {}), federation="f", sender="e")
    with pytest.raises(ValueError):
        encode_status(StatusMsg("online", {"x": "y" * 70_000}), federation="f", sender="e")
    with pytest.raises(ValueError):
        encode_result(TrainResult("bad id", 0, 0, 1, []), federation="f", sender="e")


# ---- encodings -------------------------------------------------------------------------------------------------
def _mask_encs(msg: bytes) -> dict[str, str]:
    _, h, t = unpack(msg)
    entries = h["mask"]["entries"] if h["kind"] == "task" else h["masks"]
    return {f"m{e['param']}": (e["enc"], t[f"m{e['param']}"].dtype.name) for e in entries}


def _full_task(masks: dict[int, np.ndarray], values: list[np.ndarray] | None = None) -> Task:
    return Task(0, TaskKind.TRAIN, MaskUpdate(1, full=masks), values or [], TrainConfig(lr=0.1))


def test_masks_go_as_the_cheaper_encoding():
    rng = np.random.default_rng(0)
    sparse, half = rng.random(100_000) < 0.01, rng.random(100_000) < 0.5
    vals = [rng.standard_normal(1000).astype(np.float32)]  # a realistic message carries values too
    small = encode_task(_full_task({0: sparse}, vals), federation="f", sender="c")
    assert _mask_encs(small)["m0"][0] == "delta"
    assert unpack(small)[2]["m0"].nbytes <= 2 * sparse.sum() < 100_000 // 8 // 4  # 1-2 bytes per kept entry
    assert len(small) - 4000 < 100_000 // 8 // 2
    big = encode_task(_full_task({0: half}, vals), federation="f", sender="c")
    assert _mask_encs(big) == {"m0": ("bitmap", "uint8")}
    assert 100_000 // 8 <= len(big) - 4000 < 100_000 // 8 + 1024  # the bitmap, not 50k indices
    for m in (sparse, half):
        same(m, decode(encode_task(_full_task({0: m}, vals), federation="f", sender="c")).body.mask.full[0])


@pytest.mark.parametrize("gap,dtype", [(200, "uint8"), (300, "uint16"), (70_000, "uint32"), (2**32, "uint64")])
def test_delta_coding_uses_the_narrowest_type(gap, dtype):
    idx = np.arange(3, dtype=np.int64) * gap + 5
    d = MaskDelta(0, 1, {0: idx}, {0: np.zeros(0, np.int64)})
    msg = encode_task(Task(0, TaskKind.TRAIN, MaskUpdate(1, delta=d), [], TrainConfig(lr=0.1)), federation="f",
                      sender="c", sizes={0: 2**34})
    _, h, t = unpack(msg)
    assert h["mask"]["entries"] == [{"param": 0, "size": 2**34, "added": "delta", "removed": "delta"}]
    assert t["a0"].dtype.name == dtype
    same(d, decode(msg).body.mask.delta)


def test_delta_positions_use_a_bitmap_when_cheaper():
    rng = np.random.default_rng(1)
    old, new = {0: rng.random(1000) < 0.5}, {0: rng.random(1000) < 0.5}
    d = mask_delta(old, new, 0, 1)
    msg = encode_task(Task(0, TaskKind.TRAIN, MaskUpdate(1, delta=d), [], TrainConfig(lr=0.1)), federation="f",
                      sender="c", sizes={0: 1000})
    _, h, t = unpack(msg)
    assert h["mask"]["entries"][0] == {"param": 0, "size": 1000, "added": "bitmap", "removed": "bitmap"}
    assert t["a0"].shape == (125,)
    same(d, decode(msg).body.mask.delta)


def test_full_masks_stay_within_the_element_budget():
    """An all-pruned 1M-entry mask would delta-code to 0 bytes; the decoder refuses masks of more than 64 entries
    per body byte (so a tiny message cannot make it allocate gigabytes), and the encoder sends a bitmap instead."""
    m = np.zeros((1000, 1000), bool)
    msg = encode_task(_full_task({0: m}), federation="f", sender="c")
    assert _mask_encs(msg) == {"m0": ("bitmap", "uint8")}
    same(m, decode(msg).body.mask.full[0])
    m.reshape(-1)[::100] = True  # with its values, delta coding fits the budget: 10k entries
    vals = [np.ones(int(m.sum()), np.float32)]
    assert _mask_encs(encode_task(_full_task({0: m}, vals), federation="f", sender="c")) == {"m0": ("delta", "uint8")}

    _, h, t = unpack(encode_task(_full_task({0: np.zeros(10, bool)}), federation="f", sender="c"))
    h["mask"]["entries"][0].update(shape=[2**17, 2**17], enc="delta")
    hostile = repack(MsgKind.TASK, h, {"m0": np.zeros(0, np.uint8)})
    with pytest.raises(ProtocolError, match="mask entries from a"):
        decode(hostile)
    assert _peak(lambda: pytest.raises(ProtocolError, decode, hostile)) < 2**20


def _peak(fn, *args) -> int:
    tracemalloc.start()
    try:
        fn(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_decode_memory_is_bounded_by_the_message_size():
    """The documented worst cases (masks) stay below 80 x the message + 1 MiB; values cost about 2 x."""
    n = 1_000_000
    cfg = TrainConfig(lr=0.1)
    everything = MaskDelta(0, 1, {0: np.arange(n)}, {})  # a bitmap-coded change: 1M int64 indices from 125 kB
    at_budget = np.zeros(n, bool)
    at_budget[::64] = True  # delta-coded: 1 byte per 64 mask entries, right at the budget
    for msg in (encode_task(Task(0, TaskKind.TRAIN, MaskUpdate(1, delta=everything), [], cfg), federation="f",
                            sender="c", sizes={0: n}),
                encode_task(_full_task({0: at_budget}), federation="f", sender="c")):
        assert 40 * len(msg) < _peak(decode, msg) < 80 * len(msg) + 2**20
    msg = encode_result(TrainResult("e", 0, 0, 1, [np.ones(n, np.float32)]), federation="f", sender="e")
    assert _peak(decode, msg) < 3 * len(msg)


def test_a_reject_names_the_task_it_answers():
    tid = "ab" * 16
    msg = encode_reject(RejectMsg("no", False, tid), federation="f", sender="e", round=3, mask_version=1)
    assert decode(msg).body == RejectMsg("no", False, tid)
    old = encode_reject(RejectMsg("no", True), federation="f", sender="e", round=3, mask_version=1)
    assert decode(old).body.task_id is None  # an edge of before the field: decoded, answers no task
    _, h, t = unpack(msg)
    for bad in ("AB" * 16, "ab", 7, None):
        h["task_id"] = bad
        with pytest.raises(ProtocolError, match="task_id"):
            decode(repack(MsgKind.REJECT, h, t))
    with pytest.raises(ValueError, match="task_id"):
        encode_reject(RejectMsg("no", False, "x"), federation="f", sender="e", round=3, mask_version=1)


def _model_limits(receiver: str, **kw) -> tuple[Limits, list[tuple[int, ...]], list[int]]:
    spec = mlp_spec((1, 8, 8), (64,), 10)
    shapes = [p.shape for p in spec.param_shapes()]
    prunable = [i for i, p in enumerate(spec.param_shapes()) if p.prunable]
    return Limits.for_model(shapes, prunable, receiver, **kw), shapes, prunable


def test_messages_are_checked_against_the_model_before_masks_are_built():
    """The coordinator's limits name the model: a result whose masks (or values, or importance) do not fit it is
    refused on its declared shapes, before any mask is allocated, however large the masks it declares. Decoding
    then costs at most about 3 x the message (its copies), never the 64 x the element budget would allow."""
    limits, shapes, prunable = _model_limits("coordinator")
    rng = np.random.default_rng(5)
    good = {p: rng.random(shapes[p]) < 0.5 for p in prunable}
    res = InitialPruneResult("e", 0, good, [np.ones(int(good[p].sum()) if p in good else int(np.prod(s)), np.float32)
                                            for p, s in enumerate(shapes)], 3)
    msg = encode_result(res, federation="f", sender="e")
    same(good, decode(msg, limits).body.masks)
    # the attack: masks of another, much larger shape (all kept, delta-coded at the element budget)
    huge = {p: np.zeros((2048, 2048), bool) for p in prunable}
    for m in huge.values():
        m.reshape(-1)[::64] = True
    hostile = encode_result(InitialPruneResult("e", 0, huge, [], 3), federation="f", sender="e")
    assert _peak(decode, hostile) > 40 * len(hostile)  # without the model: masks at the budget, built
    with pytest.raises(ProtocolError, match="the model's parameter 0 has shape"):
        decode(hostile, limits)
    assert _peak(lambda: pytest.raises(ProtocolError, decode, hostile, limits)) < 3 * len(hostile)
    # values longer than their parameter, importance of other shapes, a value array short: all refused so
    t = TrainResult("e", 0, 0, 1, [np.ones(int(np.prod(s)) + 1, np.float32) for s in shapes])
    with pytest.raises(ProtocolError, match="v0 has"):
        decode(encode_result(t, federation="f", sender="e"), limits)
    t = TrainResult("e", 0, 0, 1, [np.ones(1, np.float32)] * len(shapes), [np.ones(3, np.float32)] * len(shapes))
    with pytest.raises(ProtocolError, match="importance: shapes"):
        decode(encode_result(t, federation="f", sender="e"), limits)
    t = TrainResult("e", 0, 0, 1, [np.ones(1, np.float32)] * (len(shapes) - 1))
    with pytest.raises(ProtocolError, match="value arrays, the model has"):
        decode(encode_result(t, federation="f", sender="e"), limits)


def test_limits_from_the_model_hold_its_largest_honest_messages_and_little_more():
    limits, shapes, prunable = _model_limits("coordinator")
    dense = [np.ones(int(np.prod(s)), np.float32) for s in shapes]
    biggest = TrainResult("e", 0, 0, 1, dense, [np.ones(s, np.float32) for s in shapes])
    assert len(decode(encode_result(biggest, federation="f", sender="e"), limits).body.values) == len(shapes)
    n = sum(int(np.prod(s)) for s in shapes)
    assert limits.max_message_bytes < 8 * n * 1.3 + 2**20 + 4096
    assert limits.reassembly_budget(4) == 8 * limits.max_message_bytes
    edge, _, _ = _model_limits("edge")
    assert edge.max_message_bytes < limits.max_message_bytes  # an edge needs about its task size
    task = Task(0, TaskKind.TRAIN, MaskUpdate(1, full={p: np.ones(shapes[p], bool) for p in prunable}), dense,
                TrainConfig(lr=0.1))
    assert decode(encode_task(task, federation="f", sender="c"), edge).body.round == 0
    assert _model_limits("edge", max_message_bytes=70_000)[0].max_message_bytes == 70_000  # configurable
    too_big = TrainResult("e", 0, 0, 1, [np.ones(limits.max_message_bytes // 4, np.float32)])
    with pytest.raises(ProtocolError, match="exceeds the limit"):
        decode(encode_result(too_big, federation="f", sender="e"), limits)


# ---- rejections, one field at a time ---------------------------------------------------------------------------
def _sample(kind: str) -> bytes:
    rng = np.random.default_rng(3)
    masks = masks_at(rng, 0.5)
    if kind == "task":
        return encode_task(_full_task(masks, values_for(rng, masks)), federation="f", sender="c",
                           model={"layers": []})
    if kind == "delta":
        d = mask_delta(masks, masks_at(rng, 0.02), 1, 2)
        return encode_task(Task(4, TaskKind.TRAIN, MaskUpdate(2, delta=d), [], TrainConfig(lr=0.1)), federation="f",
                           sender="c")
    if kind == "train":
        return encode_result(TrainResult("e1", 1, 1, 5, [np.ones(3, np.float32)], [np.ones((2, 2), np.float32)]),
                             federation="f", sender="e1")
    if kind == "prune":
        return encode_result(InitialPruneResult("e1", 0, masks, values_for(rng, masks), 3, [[1, 2]], [0.5]),
                             federation="f", sender="e1")
    return encode_status(StatusMsg("online", {"n": 1}), federation="f", sender="e1")


def _edit(kind: str, fn) -> bytes:
    """``kind``'s sample with its header and tensors changed by ``fn(h, t)`` (in place, or returning new JSON text),
    re-enveloped with a correct checksum so the change reaches the parsers."""
    k, h, t = unpack(_sample(kind))
    text = fn(h, t)
    return repack(k, text if isinstance(text, str) else h, t)


def _set(path: str, value: Any):
    def fn(h, t):
        *keys, last = path.split(".")
        d = h
        for key in keys:
            d = d[int(key)] if isinstance(d, list) else d[key]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value
    return fn


ENVELOPES = {  # name -> (bytes, expected message fragment)
    "empty": (b"", "shorter than"),
    "bad magic": (b"XXXX" + _sample("status")[4:], "magic"),
    "version 2": (envelope(3, _sample("status")[16:], version=2), "protocol version 2"),
    "kind 9": (envelope(9, _sample("status")[16:]), "unknown message kind 9"),
    "flags": (envelope(3, _sample("status")[16:], flags=1), "flags"),
    "short body": (_sample("status")[:-1], "announces a body"),
    "long body": (_sample("status") + b"\0", "announces a body"),
    "crc": (_sample("status")[:-1] + bytes([_sample("status")[-1] ^ 1]), "checksum"),
    "kind mismatch": (envelope(1, _sample("status")[16:]), "does not match the envelope"),
    "no container": (envelope(3, b"abc"), "too short for a tensor container"),
    "header beyond body": (envelope(3, struct.pack("<Q", 100) + b"{}"), "does not fit"),
    "container not json": (container(3, b"{nope", b""), "not valid JSON"),
    "container not object": (container(3, b"[1]", b""), "must be a JSON object"),
    "not utf-8": (container(3, b'{"\xff": 1}', b""), "not valid JSON"),
    "no metadata": (container(3, {}, b""), "no PruneFL header"),
    "extra metadata": (container(3, {"__metadata__": {"prunefl": "{}", "x": "y"}}, b""), "no PruneFL header"),
    "chunk to decode": (split_message(_sample("task"), 1024, federation="f", sender="c")[0], "Reassembler"),
}
_MD = {"__metadata__": {"prunefl": "{}"}}
CONTAINERS = {
    "dtype F64": ({**_MD, "a": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}}, 8, "dtype"),
    "bool dtype": ({**_MD, "a": {"dtype": "BOOL", "shape": [1], "data_offsets": [0, 1]}}, 1, "dtype"),
    "negative shape": ({**_MD, "a": {"dtype": "U8", "shape": [-1], "data_offsets": [0, 0]}}, 0, "shape"),
    "huge shape": ({**_MD, "a": {"dtype": "U8", "shape": [2**40], "data_offsets": [0, 8]}}, 8, "shape"),
    "shape vs bytes": ({**_MD, "a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, 8, "bytes for shape"),
    "offsets beyond": ({**_MD, "a": {"dtype": "U8", "shape": [2**32], "data_offsets": [0, 2**32]}}, 8, "outside"),
    "offsets reversed": ({**_MD, "a": {"dtype": "U8", "shape": [0], "data_offsets": [4, 2]}}, 8, "outside"),
    "overlap": ({**_MD, "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                 "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, 8, "overlaps"),
    "gap": ({**_MD, "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, 8, "cover 4 of the 8"),
    "extra key": ({**_MD, "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4], "x": 1}}, 4, "unknown fields"),
    "entry not object": ({**_MD, "a": [1]}, 0, "must be a JSON object"),
}
FIELDS = {  # name -> (sample kind, edit, expected message fragment)
    "NaN literal": ("task", lambda h, t: json.dumps(h).replace('"lr": 0.1', '"lr": NaN'), "constant NaN"),
    "duplicate key": ("status", lambda h, t: json.dumps(h)[:-1] + ', "state": "busy"}', "repeats a key"),
    "deep nesting": ("status", lambda h, t: json.dumps(h)[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
                     "not valid JSON"),
    "huge int": ("status", lambda h, t: json.dumps(h).replace('"round": -1', '"round": ' + "9" * 5000),
                 "not valid JSON"),
    "header not object": ("status", lambda h, t: "[]", "must be a JSON object"),
    "unknown field": ("status", _set("extra", 1), "unknown fields"),
    "missing field": ("status", lambda h, t: h.pop("info") and None, "missing fields ['info']"),
    "missing common": ("status", lambda h, t: h.pop("msg_id") and None, "missing field 'msg_id'"),
    "kind string": ("status", _set("kind", "task"), "does not match"),
    "msg_id upper": ("status", _set("msg_id", "A" * 32), "msg_id"),
    "msg_id short": ("status", _set("msg_id", "a" * 31), "msg_id"),
    "federation slash": ("status", _set("federation", "a/b"), "federation"),
    "sender long": ("status", _set("sender", "s" * 65), "sender"),
    "round -2": ("status", _set("round", -2), "round must be"),
    "round bool": ("status", _set("round", True), "round must be"),
    "round float": ("status", _set("round", 1.0), "round must be"),
    "state": ("status", _set("state", "asleep"), "state must be"),
    "info list": ("status", _set("info", [1]), "info must be"),
    "info huge": ("status", _set("info", {"x": "y" * 70_000}), "info must be"),
    "task kind": ("task", _set("task_kind", "eval"), "unknown task kind"),
    "config kind": ("task", _set("config_kind", "initial_prune"), "config_kind must be 'train'"),
    "config unknown": ("task", _set("config.evil", 1), "unknown fields"),
    "config missing": ("task", lambda h, t: h["config"].pop("momentum") and None, "missing fields"),
    "lr negative": ("task", _set("config.lr", -0.1), "lr must be"),
    "lr string": ("task", _set("config.lr", "0.1"), "lr must be"),
    "lr huge": ("task", lambda h, t: json.dumps(h).replace('"lr": 0.1', '"lr": 1e999'), "lr must be"),
    "local_steps 0": ("task", _set("config.local_steps", 0), "local_steps must be"),
    "batch_size huge": ("task", _set("config.batch_size", 65537), "batch_size must be"),
    "collect int": ("task", _set("config.collect_importance", 1), "true or false"),
    "n_values": ("task", _set("n_values", 9), "tensor v8 is missing"),
    "n_values negative": ("task", _set("n_values", -1), "n_values must be"),
    "fewer values": ("task", _set("n_values", 7), "unexpected tensors 'v7'"),
    "values dtype": ("task", lambda h, t: t.update(v0=t["v0"].view(np.uint8)), "float32 vector"),
    "values 2-D": ("task", lambda h, t: t.update(v1=t["v1"].reshape(1, -1)), "float32 vector"),
    "mask mode": ("task", _set("mask.mode", "half"), "mode must be"),
    "mask version key": ("task", _set("mask.version", 3), "unknown fields"),
    "mask param twice": ("task", lambda h, t: h["mask"]["entries"].append(h["mask"]["entries"][0]) and None,
                         "tensor m0 is used twice"),
    "mask param range": ("task", _set("mask.entries.0.param", 4096), "param must be"),
    "mask huge shape": ("task", _set("mask.entries.3.shape", [2**31, 2**31]), "bad shape"),
    "mask big shape": ("task", _set("mask.entries.3.shape", [2**16, 2**16]), "bitmap of 4294967296"),
    "mask zero dim": ("task", _set("mask.entries.3.shape", [0, 10]), "bad shape"),
    "mask shape str": ("task", _set("mask.entries.3.shape", "10"), "bad shape"),
    "mask enc": ("task", _set("mask.entries.0.enc", "rle"), "unknown position encoding"),
    "mask padding": ("task", lambda h, t: t.update(m2=t["m2"] | np.uint8(1)) if h["mask"]["entries"][1]["enc"] ==
                     "bitmap" else None, "padding bits"),
    "delta zero gap": ("delta", lambda h, t: t.update(r6=np.array([1, 0], np.uint8)) or _set(
        "mask.entries.3.removed", "delta")(h, t), "not strictly increasing"),
    "delta beyond": ("delta", lambda h, t: t.update(r6=np.array([999, 1], np.uint16)) or _set(
        "mask.entries.3.removed", "delta")(h, t), "beyond position 999"),
    "delta overflow": ("delta", lambda h, t: t.update(r6=np.array([2**63, 2**63], np.uint64)) or _set(
        "mask.entries.3.removed", "delta")(h, t), "beyond position"),
    "delta too many": ("delta", lambda h, t: t.update(r0=np.ones(2, np.uint8)) or _set(
        "mask.entries.0.removed", "delta")(h, t), "at most 1 entries"),
    "delta signed": ("delta", lambda h, t: t.update(r6=np.ones(2, np.uint8).view(np.int8)) or _set(
        "mask.entries.3.removed", "delta")(h, t), "dtype"),
    "delta size": ("delta", _set("mask.entries.0.size", 0), "size must be"),
    "delta base": ("delta", _set("mask.base_version", -5), "base_version must be"),
    "delta null table": ("delta", _set("mask.entries.0.added", None), "unexpected tensors 'a0'"),
    "importance shape": ("train", _set("importance.0", [4]), "the header says"),
    "importance count": ("train", _set("importance", [[2, 2], [2, 2]]), "tensor z1 is missing"),
    "loss string": ("train", _set("loss", "low"), "loss must be"),
    "accuracy range": ("train", _set("accuracy", 1.5), "accuracy must be"),
    "client_id": ("train", _set("client_id", "a b"), "client_id"),
    "result kind": ("train", _set("result_kind", "eval"), "result_kind"),
    "result fields": ("train", _set("passes", 3), "unknown fields"),
    "kept_history": ("prune", _set("kept_history", [[-1]]), "kept_history"),
    "densities": ("prune", _set("densities", ["x"]), "densities"),
    "model list": ("task", _set("model", [1]), "model must be"),
    "extra tensor": ("status", lambda h, t: t.update(x=np.zeros(1, np.float32)), "unexpected tensors 'x'"),
}


@pytest.mark.parametrize("name", list(ENVELOPES))
def test_bad_envelopes_are_rejected(name):
    data, fragment = ENVELOPES[name]
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        decode(data)


@pytest.mark.parametrize("name", list(CONTAINERS))
def test_bad_containers_are_rejected_before_loading(name):
    meta, n, fragment = CONTAINERS[name]
    with pytest.raises(ProtocolError, match=re.escape(fragment)):
        decode(container(3, meta, bytes(n)))


@pytest.mark.parametrize("name", [k for k, v in FIELDS.items() if v[2]])
def test_bad_fields_are_rejected(name):
    kind, fn, fragment = FIELDS[name]
    data = _edit(kind, fn)
    with pytest.raises(ProtocolError, match=re.escape(fragment)) as err:
        decode(data)
    assert "unexpected decoder error" not in str(err.value)


def test_limits_are_applied():
    msg = _sample("task")
    decode(msg)
    for limits, fragment in ((Limits(max_message_bytes=len(msg) - 17), "exceeds the limit"),
                             (Limits(max_header_bytes=100), "exceeds the limit"),
                             (Limits(max_tensors=3), "tensors exceed the limit")):
        with pytest.raises(ProtocolError, match=re.escape(fragment)):
            decode(msg, limits)


def test_reject_reason_too_long_is_rejected():
    k, h, t = unpack(encode_reject(RejectMsg("x", False), federation="f", sender="e", round=0, mask_version=0))
    h["reason"] = "r" * 4097
    with pytest.raises(ProtocolError, match="reason must be"):
        decode(repack(k, h, t))


def test_peek_header_reads_only_the_headers():
    msg = bytearray(_sample("task"))
    msg[-1] ^= 0xFF  # a tensor byte: the checksum fails, the headers are intact
    assert peek_header(msg).kind == MsgKind.TASK and envelope_kind(msg) == MsgKind.TASK
    with pytest.raises(ProtocolError, match="checksum"):
        decode(msg)
    with pytest.raises(ProtocolError, match="magic"):
        peek_header(b"x" * 40)


# ---- chunks ----------------------------------------------------------------------------------------------------
def _chunks_of(n: int, max_payload: int, sender: str = "e1", seed: int = 0) -> tuple[bytes, list[bytes]]:
    rng = np.random.default_rng(seed)
    msg = encode_result(TrainResult(sender, 1, 1, 5, [rng.random(n // 4, dtype=np.float32)]), federation="f",
                        sender=sender)
    return msg, split_message(msg, max_payload, federation="f", sender=sender)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(0, 40_000), max_payload=st.integers(MIN_PAYLOAD, 9000), seed=st.integers(0, 2**32 - 1))
def test_chunks_reassemble_in_any_order_with_duplicates(n, max_payload, seed):
    rng = np.random.default_rng(seed)
    msg, parts = _chunks_of(n, max_payload, seed=seed)
    assert all(len(p) <= max_payload for p in parts)
    if len(msg) <= max_payload:
        assert parts == [msg]
    else:
        assert len(parts) >= 2 and all(envelope_kind(p) == MsgKind.CHUNK for p in parts)
    order = list(rng.permutation(len(parts))) + list(rng.integers(0, len(parts), 3))  # repeats, some after the end
    r = Reassembler()
    out = [r.feed(parts[i]) for i in order]
    done = [o for o in out if o is not None]
    if len(parts) == 1:
        assert all(o is msg for o in out)
    else:
        assert done == [msg]  # once, however often its chunks come
        same(decode(msg).body, decode(done[0]).body)
    assert r.pending_bytes == 0 and r.pending_messages == 0


@pytest.mark.parametrize("max_payload", [1024, 1025, 4096, 65536])
def test_split_at_payload_boundaries(max_payload):
    for n in (max_payload, max_payload + 1, 3 * max_payload):
        msg = bytes(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8))
        parts = split_message(msg, max_payload, federation="f", sender="e" * 64)
        assert all(len(p) <= max_payload for p in parts)
        assert (len(parts) == 1) == (n <= max_payload)
        if len(parts) > 1:
            r = Reassembler()
            assert [r.feed(p) for p in parts][-1] == msg
            assert max(len(p) for p in parts) > max_payload - 40  # the overhead bound is close to the real one
            assert chunk_overhead(n, federation="f", sender="e" * 64) < 600
    with pytest.raises(ValueError, match="too small"):
        split_message(bytes(5000), MIN_PAYLOAD - 1, federation="f", sender="e")


def test_non_chunk_envelopes_pass_through_after_a_prefix_check():
    msg = _sample("status")
    r = Reassembler()
    assert r.feed(msg) is msg
    for bad in (b"", b"PFLE", b"XXXX" + msg[4:], msg + b"x"):
        with pytest.raises(ProtocolError):
            r.feed(bad)


def test_partial_messages_time_out():
    msg, parts = _chunks_of(20_000, 4096)
    r = Reassembler(timeout_s=10)
    assert r.feed(parts[0], now=0.0) is None and r.pending_bytes > 0
    assert r.feed(parts[1], now=5.0) is None
    assert r.expire(now=10.0) == []
    mid = decode_chunk(parts[0]).header.msg_id
    assert r.expire(now=10.5) == [mid] and r.pending_bytes == 0
    assert all(r.feed(p, now=11.0) is None for p in parts[2:])  # the rest cannot complete it any more
    assert r.feed(parts[0], now=30.0) is None  # feeding expires: the partial message of t=11 is gone
    assert r.pending_messages == 1


def test_pending_limits_evict_the_oldest(caplog):
    msgs = [_chunks_of(20_000, 4096, seed=s) for s in range(4)]
    r = Reassembler(max_pending_messages=2)
    with caplog.at_level(logging.WARNING, logger="prunefl_common.protocol.chunks"):
        for _, parts in msgs[:3]:
            assert r.feed(parts[0]) is None
    assert r.pending_messages == 2 and "evicted the oldest" in caplog.text
    for m, parts in msgs[1:3]:  # the two newer ones still complete
        assert [r.feed(p) for p in parts[1:]][-1] == m
    one = len(msgs[0][1][0])
    r = Reassembler(max_pending_bytes=8 * one)
    for _, parts in msgs:
        for p in parts[:3]:
            r.feed(p)
            assert r.pending_bytes <= 8 * one
    assert r.pending_messages < 4
    with pytest.raises(ProtocolError, match="reassembly budget"):
        Reassembler(max_pending_bytes=10_000).feed(msgs[0][1][0])


def test_chunks_of_another_sender_do_not_mix_in():
    msg, parts = _chunks_of(20_000, 4096)
    c = decode_chunk(parts[-1])
    forged = encode_chunk(federation="f", sender="e2", msg_id=c.header.msg_id, index=c.index, count=c.count,
                          total=c.total, crc=c.crc, data=c.data)
    r = Reassembler()
    assert all(r.feed(p) is None for p in parts[:-1])
    assert r.feed(forged) is None and r.pending_messages == 2
    assert r.feed(parts[-1]) == msg


def test_inconsistent_chunks_are_rejected():
    msg, parts = _chunks_of(20_000, 4096)
    c = decode_chunk(parts[0])

    def chunk(**kw):
        d = dict(federation="f", sender="e1", msg_id=c.header.msg_id, index=c.index, count=c.count, total=c.total,
                 crc=c.crc, data=c.data)
        return encode_chunk(**{**d, **kw})

    r = Reassembler(limits=Limits(max_message_bytes=10**6))
    r.feed(parts[0])
    for kw, fragment in (({"count": c.count + 1, "index": 1}, "earlier ones said"),
                         ({"total": c.total + 1, "index": 1}, "earlier ones said"),
                         ({"crc": c.crc ^ 1, "index": 1}, "earlier ones said"),
                         ({"index": c.count}, "index must be"), ({"index": -1}, "index must be"),
                         ({"count": 1}, "count must be"), ({"total": 10**6 + 1}, "total must be"),
                         ({"data": b""}, "data must be")):
        with pytest.raises(ProtocolError, match=re.escape(fragment)):
            r.feed(chunk(**kw))
    assert r.pending_messages == 1
    with pytest.raises(ProtocolError, match="exceed the declared"):  # slices longer than the total
        r.feed(chunk(index=1, data=c.data * 5))
    assert r.pending_messages == 0
    r = Reassembler()
    bad = [chunk(index=i, crc=c.crc ^ 1, data=decode_chunk(p).data) for i, p in enumerate(parts)]
    with pytest.raises(ProtocolError, match="checksum"):
        for p in bad:
            r.feed(p)
    assert r.pending_messages == 0


# ---- the model description -------------------------------------------------------------------------------------
def test_model_spec_json_round_trip():
    from prunefl_edge.inputs import load_model

    specs = [conv2_spec(), mlp_spec(), vgg11_spec(), load_model("mlp", 10, (1, 8, 8), 0)[0],
             ModelSpec((3, 9, 9), (MaxPool2d((3, 3), None, (1, 1)), Conv2d(4, (2, 3), (2, 1), (0, 1), False),
                                   Flatten()), name="odd")]
    for spec in specs:
        d = spec_to_dict(spec)
        assert d["layers"][0]["type"] in ("linear", "conv2d", "maxpool2d", "relu", "flatten")
        assert spec_from_dict(json.loads(json.dumps(d))) == spec


def test_model_spec_from_dict_rejects_bad_descriptions():
    good = spec_to_dict(mlp_spec((1, 8, 8), (16,)))
    lin = {"type": "linear", "out_features": 4}
    bads = [None, [], "mlp", 3, {**good, "x": 1}, {k: v for k, v in good.items() if k != "layers"},
            {**good, "input_shape": [1, 8]}, {**good, "input_shape": [1, 8, 0]}, {**good, "input_shape": [1, 8, True]},
            {**good, "input_shape": "1,8,8"}, {**good, "name": 5}, {**good, "layers": []},
            {**good, "layers": [{"type": "flatten"}] * 65}, {**good, "layers": [{"type": "lstm"}]},
            {**good, "layers": [{"type": ["linear"]}]}, {**good, "layers": [{"out_features": 4}]},
            {**good, "layers": [{"type": "flatten"}, {**lin, "out_features": -1}]},
            {**good, "layers": [{"type": "flatten"}, {**lin, "out_features": 4.0}]},
            {**good, "layers": [{"type": "flatten"}, {**lin, "out_features": 2**40}]},
            {**good, "layers": [{"type": "flatten"}, {**lin, "evil": 1}]},
            {**good, "layers": [{"type": "flatten"}, {**lin, "bias": 1}]},
            {**good, "layers": [{"type": "flatten"}, {"type": "linear"}]},
            {**good, "layers": [lin]},  # not flat
            {**good, "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": [9, 9]}]},
            {**good, "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": [3]}]},
            {**good, "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": [3, 3], "padding": [-1, 0]}]},
            {**good, "layers": [{"type": "maxpool2d", "kernel_size": [2, 2], "stride": None, "padding": [2, 2]}]},
            {**good, "layer_names": ["a"]}, {**good, "layer_names": [1, 2, 3]}]
    for bad in bads:
        with pytest.raises(ModelSpecError):
            spec_from_dict(bad)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(d=st.dictionaries(st.sampled_from(["input_shape", "name", "layers", "layer_names", "x"]), json_values))
def test_model_spec_from_dict_raises_only_model_spec_error(d):
    try:
        spec_from_dict(d)
    except ModelSpecError:
        pass


def test_initial_prune_config_without_masked_importance_decodes_as_its_sender_meant():
    """A coordinator from before ``masked_importance`` existed asked for the dense-gradient IP importance."""
    task = Task(0, TaskKind.INITIAL_PRUNE, MaskUpdate(0, full={0: np.ones((3, 4), bool)}), [],
                InitialPruneConfig(lr=0.1, costs=[1e-6], intercept=1.25))
    msg = encode_task(task, federation="f", sender="c")
    assert decode(msg).body.config.masked_importance is True  # today's default travels explicitly
    k, h, t = unpack(msg)
    del h["config"]["masked_importance"]
    assert decode(repack(k, h, t)).body.config.masked_importance is False
    h["config"]["masked_importance"] = 1  # present but not a bool: rejected, not guessed
    with pytest.raises(ProtocolError, match="masked_importance"):
        decode(repack(k, h, t))
