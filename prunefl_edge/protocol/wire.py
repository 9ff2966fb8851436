"""The wire format between coordinator and edges (version 1): one module both sides import.

Envelope = a 16-byte prefix + a body::

    "PFLE" | u8 protocol version | u8 kind | u16 flags (0) | u32 body length | u32 CRC-32 of the body   (little-endian)

The body is a safetensors file (a specified, widely used container of little-endian tensors behind a JSON
header with strict offset rules): the tensors of the message, and in its metadata, under "prunefl", the
message's JSON header (federation, sender, round, mask version, message id, and the kind's scalar fields).

* Kept values travel as float32 vectors (``v<i>``), dense importance as float32 arrays (``z<i>``).
* A mask, or the added/removed indices of a mask change, travels as the cheaper of a bitmap (``np.packbits``)
  and delta-coded sorted indices (first index, then gaps, in the narrowest unsigned type that holds them).
* Decoding checks every size before allocating and raises :class:`ProtocolError` (never anything else) on
  bytes that are not a well-formed message; no pickle, no eval, no unbounded allocation.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
import zlib
from dataclasses import asdict, dataclass, fields
from enum import IntEnum
from typing import Any

import numpy as np

from coordinator.mask_delta import MaskDelta
from coordinator.messages import (
    InitialPruneConfig,
    InitialPruneResult,
    MaskUpdate,
    Task,
    TaskKind,
    TrainConfig,
    TrainResult,
)
from prunefl_edge.protocol.topics import valid_id

PROTOCOL_VERSION = 1
MAGIC = b"PFLE"
PREFIX = struct.Struct("<4sBBHII")


class ProtocolError(ValueError):
    """Bytes that are not a well-formed message of this protocol; the message says what is wrong."""


class MsgKind(IntEnum):
    TASK = 1
    RESULT = 2
    STATUS = 3
    REJECT = 4
    CHUNK = 5


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 256 * 2**20
    max_header_bytes: int = 1 * 2**20
    max_tensors: int = 4096


@dataclass(frozen=True)
class Header:
    kind: MsgKind
    federation: str
    sender: str
    round: int
    mask_version: int
    msg_id: str


@dataclass
class StatusMsg:
    state: str  # online | offline | busy
    info: dict[str, Any]


@dataclass
class RejectMsg:
    reason: str
    needs_full_mask: bool


@dataclass
class Decoded:
    header: Header
    body: Any  # Task | TrainResult | InitialPruneResult | StatusMsg | RejectMsg | bytes (a CHUNK's slice)
    model: dict[str, Any] | None
    nbytes: int
    fields: dict[str, Any] | None = None  # the raw JSON header (CHUNK routing)


STATES = ("online", "offline", "busy")
_DTYPES = {"F32": np.float32, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
           "I64": np.int64, "BOOL": np.bool_}
_UINTS = (np.uint8, np.uint16, np.uint32, np.uint64)
MAX_ELEMENTS = 2**34


# ---- masks and index lists -------------------------------------------------------------------------------
def _delta_code(idx: np.ndarray) -> np.ndarray:
    gaps = np.diff(idx.astype(np.int64), prepend=0) if idx.size else np.zeros(0, np.int64)
    top = int(gaps.max()) if gaps.size else 0
    for t in _UINTS:
        if top <= np.iinfo(t).max:
            return gaps.astype(t)
    raise AssertionError("unreachable")


def _encode_positions(flat: np.ndarray | None, idx: np.ndarray | None, size: int) -> tuple[str, np.ndarray]:
    """The cheaper of a bitmap and delta-coded indices for a set of positions in 0..size-1."""
    if idx is None:
        assert flat is not None
        idx = np.flatnonzero(flat)
    coded = _delta_code(np.asarray(idx, np.int64))
    bitmap_bytes = (size + 7) // 8
    if coded.nbytes < bitmap_bytes:
        return "delta", coded
    if flat is None:
        flat = np.zeros(size, bool)
        flat[np.asarray(idx, np.int64)] = True
    return "bitmap", np.packbits(flat.astype(bool, copy=False))


def _decode_positions(enc: Any, arr: np.ndarray, size: int, what: str) -> np.ndarray:
    """Sorted int64 positions (validated: strictly increasing, in range)."""
    if enc == "bitmap":
        if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size != (size + 7) // 8:
            raise ProtocolError(f"{what}: bitmap of {arr.size} bytes for {size} positions")
        bits = np.unpackbits(arr)
        if bits[size:].any():
            raise ProtocolError(f"{what}: bitmap padding bits are set")
        return np.flatnonzero(bits[:size]).astype(np.int64)
    if enc == "delta":
        if arr.dtype not in [np.dtype(t) for t in _UINTS] or arr.ndim != 1 or arr.size > size:
            raise ProtocolError(f"{what}: {arr.size} delta-coded indices ({arr.dtype}) for {size} positions")
        if arr.size == 0:
            return np.zeros(0, np.int64)
        if arr.dtype == np.uint64 and int(arr.max()) > size:
            raise ProtocolError(f"{what}: index gap beyond {size}")
        idx = np.cumsum(arr.astype(np.int64))
        if (arr.size > 1 and not np.all(arr[1:] > 0)) or idx[-1] >= size:
            raise ProtocolError(f"{what}: indices not strictly increasing within 0..{size - 1}")
        return idx
    raise ProtocolError(f"{what}: unknown position encoding {enc!r}")


# ---- JSON field checks -----------------------------------------------------------------------------------
def _get(d: Any, key: str, what: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise ProtocolError(f"{what}: missing field {key!r}")
    return d[key]


def _int(d: Any, key: str, what: str, lo: int, hi: int) -> int:
    v = _get(d, key, what)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be an integer in {lo}..{hi}, got {v!r}")
    return v


def _float(d: Any, key: str, what: str, lo: float = -math.inf, hi: float = math.inf, nan_ok: bool = False) -> float:
    v = _get(d, key, what)
    if v is None and nan_ok:
        return float("nan")
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be a finite number in [{lo}, {hi}], got {v!r}")
    return float(v)


def _bool(d: Any, key: str, what: str) -> bool:
    v = _get(d, key, what)
    if not isinstance(v, bool):
        raise ProtocolError(f"{what}: {key} must be true or false, got {v!r}")
    return v


def _str(d: Any, key: str, what: str, max_len: int = 4096) -> str:
    v = _get(d, key, what)
    if not isinstance(v, str) or len(v) > max_len:
        raise ProtocolError(f"{what}: {key} must be a string of at most {max_len} characters")
    return v


def _nan_to_none(x: float) -> float | None:
    return None if not math.isfinite(x) else float(x)


_CONFIG_RULES: dict[str, tuple[str, float, float]] = {  # field -> (kind, lo, hi)
    "lr": ("float", 0.0, 1e6), "local_steps": ("int", 0, 10**6), "batch_size": ("int", 1, 65536),
    "momentum": ("float", 0.0, 1.0), "weight_decay": ("float", 0.0, 1e3),
    "collect_importance": ("bool", 0, 0), "upload_importance": ("bool", 0, 0),
    "intercept": ("float", 0.0, 1e9), "n_batches": ("int", 1, 10**6), "reconfig_interval": ("int", 1, 10**6),
    "max_passes": ("int", 0, 10**7), "acc_threshold": ("float", 0.0, 1.0), "delta": ("float", 0.0, 1e6),
    "stop_change": ("float", 0.0, 1e6), "stop_count": ("int", 1, 10**6), "seed": ("int", 0, 2**63 - 1),
}


def _config_from(d: Any, kind: str) -> TrainConfig | InitialPruneConfig:
    cls = TrainConfig if kind == "train" else InitialPruneConfig if kind == "initial_prune" else None
    if cls is None:
        raise ProtocolError(f"task config: unknown kind {kind!r}")
    if not isinstance(d, dict):
        raise ProtocolError("task config must be an object")
    names = {f.name for f in fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise ProtocolError(f"task config: unknown fields {sorted(unknown)[:5]}")
    out: dict[str, Any] = {}
    for name in names:
        if name not in d:
            raise ProtocolError(f"task config: missing field {name!r}")
        if name == "costs":
            v = d[name]
            if not isinstance(v, list) or len(v) > 1024 or not all(
                    isinstance(c, int | float) and not isinstance(c, bool) and math.isfinite(c) and c >= 0 for c in v):
                raise ProtocolError("task config: costs must be a list of at most 1024 finite numbers >= 0")
            out[name] = [float(c) for c in v]
        elif name == "max_density":
            out[name] = None if d[name] is None else _float(d, name, "task config", 0.0, 1.0)
        else:
            k, lo, hi = _CONFIG_RULES[name]
            out[name] = (_float(d, name, "task config", lo, hi) if k == "float" else
                         _int(d, name, "task config", int(lo), int(hi)) if k == "int" else
                         _bool(d, name, "task config"))
    return cls(**out)


# ---- envelope --------------------------------------------------------------------------------------------
def _envelope(kind: MsgKind, header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    body = save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                metadata={"prunefl": json.dumps(header, separators=(",", ":"), allow_nan=False)})
    return PREFIX.pack(MAGIC, PROTOCOL_VERSION, int(kind), 0, len(body), zlib.crc32(body)) + body


def _common(kind: MsgKind, federation: str, sender: str, round_: int, mask_version: int) -> dict[str, Any]:
    for name, what in ((federation, "federation"), (sender, "sender")):
        if not valid_id(name):
            raise ValueError(f"{what} {name!r} is not a valid id")
    return {"federation": federation, "sender": sender, "round": int(round_), "mask_version": int(mask_version),
            "msg_id": uuid.uuid4().hex, "kind": kind.name.lower()}


def _mask_entries(masks: dict[int, np.ndarray], tensors: dict[str, np.ndarray], prefix: str) -> list[dict[str, Any]]:
    out = []
    for p in sorted(masks):
        m = np.asarray(masks[p], bool)
        enc, arr = _encode_positions(m.ravel(), None, m.size)
        tensors[f"{prefix}{p}"] = arr
        out.append({"param": int(p), "shape": [int(s) for s in m.shape], "enc": enc})
    return out


def encode_task(task: Task, *, federation: str, sender: str, model: dict[str, Any] | None = None,
                sizes: dict[int, int] | None = None) -> bytes:
    """``sizes`` (parameter -> number of weights) lets a mask change go as a bitmap when that is cheaper."""
    h = _common(MsgKind.TASK, federation, sender, task.round, task.mask.version)
    tensors: dict[str, np.ndarray] = {}
    mu = task.mask
    mask: dict[str, Any] = {"version": int(mu.version), "mode": "none"}
    if mu.full is not None:
        mask.update(mode="full", entries=_mask_entries(mu.full, tensors, "m"))
    elif mu.delta is not None:
        entries, sizes_out = [], {}
        for p in sorted(set(mu.delta.added) | set(mu.delta.removed)):
            add = np.asarray(mu.delta.added.get(p, np.zeros(0, np.int64)), np.int64)
            rem = np.asarray(mu.delta.removed.get(p, np.zeros(0, np.int64)), np.int64)
            top = max([int(x.max()) + 1 for x in (add, rem) if x.size] + [1])
            size = int(sizes[p]) if sizes is not None and p in sizes else top
            rec: dict[str, Any] = {"param": int(p)}
            for key, idx in (("added", add), ("removed", rem)):
                enc, arr = _encode_positions(None, idx, size)
                tensors[f"{key[0]}{p}"] = arr
                rec[key] = enc
            entries.append(rec)
            sizes_out[str(p)] = size
        mask.update(mode="delta", base_version=int(mu.delta.base_version), entries=entries, sizes=sizes_out)
    for i, v in enumerate(task.values):
        tensors[f"v{i}"] = np.asarray(v, np.float32).ravel()
    cfg = task.config
    h.update(task_kind=task.kind.value, mask=mask, n_values=len(task.values),
             config_kind="train" if isinstance(cfg, TrainConfig) else "initial_prune",
             config=json.loads(json.dumps(asdict(cfg), allow_nan=False)), model=model)
    return _envelope(MsgKind.TASK, h, tensors)


def encode_result(result: TrainResult | InitialPruneResult, *, federation: str, sender: str) -> bytes:
    h = _common(MsgKind.RESULT, federation, sender, result.round, result.mask_version)
    tensors: dict[str, np.ndarray] = {f"v{i}": np.asarray(v, np.float32).ravel() for i, v in enumerate(result.values)}
    h.update(client_id=result.client_id, n_values=len(result.values), compute_s=_nan_to_none(result.compute_s))
    if isinstance(result, TrainResult):
        h.update(result_kind="train", n_samples=int(result.n_samples), loss=_nan_to_none(result.loss),
                 accuracy=_nan_to_none(result.accuracy),
                 importance=None if result.importance is None else [list(np.shape(z)) for z in result.importance])
        for i, z in enumerate(result.importance or []):
            tensors[f"z{i}"] = np.asarray(z, np.float32)
    else:
        h.update(result_kind="initial_prune", passes=int(result.passes),
                 masks=_mask_entries(result.masks, tensors, "m"),
                 kept_history=[[int(k) for k in row] for row in result.kept_history],
                 densities=[_nan_to_none(float(d)) for d in result.densities],
                 train_accuracy=_nan_to_none(result.train_accuracy))
    return _envelope(MsgKind.RESULT, h, tensors)


def encode_status(status: StatusMsg, *, federation: str, sender: str, round: int = -1,  # noqa: A002
                  mask_version: int = -1) -> bytes:
    if status.state not in STATES:
        raise ValueError(f"status state must be one of {STATES}")
    h = _common(MsgKind.STATUS, federation, sender, round, mask_version)
    h.update(state=status.state, info=status.info)
    return _envelope(MsgKind.STATUS, h, {})


def encode_reject(reject: RejectMsg, *, federation: str, sender: str, round: int,  # noqa: A002
                  mask_version: int) -> bytes:
    h = _common(MsgKind.REJECT, federation, sender, round, mask_version)
    h.update(reason=reject.reason[:4096], needs_full_mask=bool(reject.needs_full_mask))
    return _envelope(MsgKind.REJECT, h, {})


def encode_chunk(*, federation: str, sender: str, msg_id: str, index: int, count: int, total: int, crc: int,
                 data: bytes) -> bytes:
    h = _common(MsgKind.CHUNK, federation, sender, -1, -1)
    h.update(msg_id=msg_id, index=index, count=count, total=total, crc=crc)
    return _envelope(MsgKind.CHUNK, h, {"data": np.frombuffer(data, np.uint8)})


# ---- decoding --------------------------------------------------------------------------------------------
def _split(data: bytes | bytearray | memoryview, limits: Limits) -> tuple[MsgKind, memoryview]:
    mv = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    if len(mv) < PREFIX.size:
        raise ProtocolError(f"{len(mv)} bytes: shorter than the {PREFIX.size}-byte envelope prefix")
    magic, version, kind, flags, length, crc = PREFIX.unpack_from(mv)
    if magic != MAGIC:
        raise ProtocolError("not a PruneFL-Edge message (bad magic)")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version}; this side speaks {PROTOCOL_VERSION} (upgrade the older side)")
    try:
        k = MsgKind(kind)
    except ValueError as e:
        raise ProtocolError(f"unknown message kind {kind}") from e
    if flags != 0:
        raise ProtocolError(f"unknown flags {flags:#x}")
    if length != len(mv) - PREFIX.size:
        raise ProtocolError(f"body length {length} but {len(mv) - PREFIX.size} bytes follow the prefix")
    if length > limits.max_message_bytes:
        raise ProtocolError(f"message of {length} bytes exceeds the limit of {limits.max_message_bytes}")
    body = mv[PREFIX.size:]
    if zlib.crc32(body) != crc:
        raise ProtocolError("checksum mismatch (corrupted in transit)")
    return k, body


def _parse_body(body: memoryview, limits: Limits) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if len(body) < 8:
        raise ProtocolError("body too short for a tensor container")
    (n,) = struct.unpack_from("<Q", body)
    if n > limits.max_header_bytes or 8 + n > len(body):
        raise ProtocolError(f"container header of {n} bytes does not fit the body or the limit")
    try:
        meta = json.loads(bytes(body[8:8 + n]).decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"container header is not JSON: {e}") from None
    if not isinstance(meta, dict) or len(meta) > limits.max_tensors + 1:
        raise ProtocolError("container header must be an object of at most max_tensors entries")
    data_len = len(body) - 8 - n
    tensors: dict[str, np.ndarray] = {}
    raw = bytes(body[8 + n:])
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ProtocolError(f"tensor {name!r}: malformed entry")
        dt, shape, off = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in _DTYPES or not isinstance(shape, list) or len(shape) > 8 or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_ELEMENTS for s in shape):
            raise ProtocolError(f"tensor {name!r}: bad dtype or shape")
        if not (isinstance(off, list) and len(off) == 2 and all(isinstance(o, int) and not isinstance(o, bool)
                                                                 for o in off) and 0 <= off[0] <= off[1] <= data_len):
            raise ProtocolError(f"tensor {name!r}: data offsets outside the body")
        count = math.prod(shape)
        itemsize = np.dtype(_DTYPES[dt]).itemsize
        if count * itemsize != off[1] - off[0]:
            raise ProtocolError(f"tensor {name!r}: {off[1] - off[0]} bytes for shape {shape} of {dt}")
        tensors[name] = np.frombuffer(raw, _DTYPES[dt], count, off[0]).reshape(shape)
    md = meta.get("__metadata__")
    if not isinstance(md, dict) or not isinstance(md.get("prunefl"), str):
        raise ProtocolError("the container carries no PruneFL header")
    try:
        header = json.loads(md["prunefl"])
    except (ValueError, RecursionError) as e:
        raise ProtocolError(f"message header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ProtocolError("message header must be an object")
    return header, tensors


def _tensor(t: dict[str, np.ndarray], name: str, what: str) -> np.ndarray:
    if name not in t:
        raise ProtocolError(f"{what}: tensor {name} is missing")
    return t[name]


def _header(kind: MsgKind, h: dict[str, Any]) -> Header:
    fed, sender = _str(h, "federation", "header", 64), _str(h, "sender", "header", 64)
    if not valid_id(fed) or not valid_id(sender):
        raise ProtocolError("header: federation and sender must be 1-64 of A-Z a-z 0-9 _ . -")
    mid = _str(h, "msg_id", "header", 32)
    if len(mid) != 32 or any(c not in "0123456789abcdef" for c in mid):
        raise ProtocolError("header: msg_id must be 32 lowercase hex digits")
    if h.get("kind") != kind.name.lower():
        raise ProtocolError(f"header kind {h.get('kind')!r} does not match the envelope's {kind.name.lower()}")
    return Header(kind, fed, sender, _int(h, "round", "header", -1, 2**62),
                  _int(h, "mask_version", "header", -1, 2**62), mid)


def _shape(e: dict[str, Any], what: str) -> tuple[int, ...]:
    shape = _get(e, "shape", what)
    if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(
            isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_ELEMENTS for s in shape):
        raise ProtocolError(f"{what}: bad shape {shape!r}")
    if math.prod(shape) > MAX_ELEMENTS:
        raise ProtocolError(f"{what}: shape {shape} too large")
    return tuple(shape)


def _masks_from(entries: Any, t: dict[str, np.ndarray], prefix: str, what: str) -> dict[int, np.ndarray]:
    if not isinstance(entries, list) or len(entries) > 1024:
        raise ProtocolError(f"{what}: mask entries must be a list")
    out: dict[int, np.ndarray] = {}
    for e in entries:
        p = _int(e, "param", what, 0, 4095)
        shape = _shape(e, what)
        idx = _decode_positions(_get(e, "enc", what), _tensor(t, f"{prefix}{p}", what), math.prod(shape),
                                f"{what} of parameter {p}")
        m = np.zeros(math.prod(shape), bool)
        m[idx] = True
        if p in out:
            raise ProtocolError(f"{what}: parameter {p} twice")
        out[p] = m.reshape(shape)
    return out


def _values(h: dict[str, Any], t: dict[str, np.ndarray], prefix: str, n: int, what: str) -> list[np.ndarray]:
    out = []
    for i in range(n):
        v = _tensor(t, f"{prefix}{i}", what)
        if v.dtype != np.float32 or v.ndim != 1:
            raise ProtocolError(f"{what}: {prefix}{i} must be a float32 vector")
        out.append(np.array(v))
    return out


def _decode_task(h: dict[str, Any], t: dict[str, np.ndarray]) -> tuple[Task, dict[str, Any] | None]:
    kind_s = _str(h, "task_kind", "task", 32)
    try:
        kind = TaskKind(kind_s)
    except ValueError as e:
        raise ProtocolError(f"task: unknown kind {kind_s!r}") from e
    m = _get(h, "mask", "task")
    version = _int(m, "version", "task mask", -1, 2**62)
    mode = _get(m, "mode", "task mask")
    if mode == "none":
        mu = MaskUpdate(version)
    elif mode == "full":
        mu = MaskUpdate(version, full=_masks_from(_get(m, "entries", "task mask"), t, "m", "task mask"))
    elif mode == "delta":
        base = _int(m, "base_version", "task mask", -1, 2**62)
        entries = _get(m, "entries", "task mask")
        sizes = _get(m, "sizes", "task mask")
        if not isinstance(entries, list) or len(entries) > 1024 or not isinstance(sizes, dict):
            raise ProtocolError("task mask: delta entries must be a list")
        added, removed = {}, {}
        for e in entries:
            p = _int(e, "param", "mask delta", 0, 4095)
            size = _int(sizes, str(p), "mask delta sizes", 1, MAX_ELEMENTS)
            added[p] = _decode_positions(_get(e, "added", "mask delta"), _tensor(t, f"a{p}", "mask delta"), size,
                                         f"added positions of parameter {p}")
            removed[p] = _decode_positions(_get(e, "removed", "mask delta"), _tensor(t, f"r{p}", "mask delta"), size,
                                           f"removed positions of parameter {p}")
        mu = MaskUpdate(version, delta=MaskDelta(base, version, added, removed))
    else:
        raise ProtocolError(f"task mask: unknown mode {mode!r}")
    values = _values(h, t, "v", _int(h, "n_values", "task", 0, 4096), "task")
    config = _config_from(_get(h, "config", "task"), _str(h, "config_kind", "task", 32))
    model = h.get("model")
    if model is not None and not isinstance(model, dict):
        raise ProtocolError("task: model must be an object or null")
    return Task(_int(h, "round", "task", -1, 2**62), kind, mu, values, config), model


def _decode_result(h: dict[str, Any], t: dict[str, np.ndarray]) -> TrainResult | InitialPruneResult:
    cid = _str(h, "client_id", "result", 64)
    if not valid_id(cid):
        raise ProtocolError("result: client_id must be 1-64 of A-Z a-z 0-9 _ . -")
    rnd = _int(h, "round", "result", -1, 2**62)
    mv = _int(h, "mask_version", "result", -1, 2**62)
    values = _values(h, t, "v", _int(h, "n_values", "result", 0, 4096), "result")
    compute = _float(h, "compute_s", "result", 0.0, 1e9, nan_ok=True)
    rk = _get(h, "result_kind", "result")
    if rk == "train":
        imp_shapes = _get(h, "importance", "result")
        importance = None
        if imp_shapes is not None:
            if not isinstance(imp_shapes, list) or len(imp_shapes) > 4096:
                raise ProtocolError("result: importance must be a list of shapes")
            importance = []
            for i, _ in enumerate(imp_shapes):
                z = _tensor(t, f"z{i}", "result importance")
                if z.dtype != np.float32:
                    raise ProtocolError(f"result: z{i} must be float32")
                importance.append(np.array(z))
        return TrainResult(cid, rnd, mv, _int(h, "n_samples", "result", 0, 10**12), values, importance,
                           _float(h, "loss", "result", nan_ok=True), _float(h, "accuracy", "result", 0.0, 1.0, True),
                           compute)
    if rk == "initial_prune":
        hist = _get(h, "kept_history", "result")
        dens = _get(h, "densities", "result")
        if not isinstance(hist, list) or len(hist) > 10**6 or not all(
                isinstance(row, list) and len(row) <= 4096 and all(isinstance(k, int) and not isinstance(k, bool)
                                                                   and k >= 0 for k in row) for row in hist):
            raise ProtocolError("result: kept_history must be lists of non-negative integers")
        if not isinstance(dens, list) or len(dens) > 10**6 or not all(
                d is None or (isinstance(d, int | float) and not isinstance(d, bool)) for d in dens):
            raise ProtocolError("result: densities must be numbers")
        return InitialPruneResult(cid, rnd, _masks_from(_get(h, "masks", "result"), t, "m", "result masks"), values,
                                  _int(h, "passes", "result", 0, 10**9), hist,
                                  [float("nan") if d is None else float(d) for d in dens],
                                  _float(h, "train_accuracy", "result", 0.0, 1.0, True), compute, mv)
    raise ProtocolError(f"result: unknown kind {rk!r}")


def peek_header(data: bytes | bytearray | memoryview, limits: Limits = Limits()) -> Header:
    kind, body = _split(data, limits)
    h, _ = _parse_body(body, limits)
    return _header(kind, h)


def decode(data: bytes | bytearray | memoryview, limits: Limits = Limits()) -> Decoded:
    """The message in ``data``; :class:`ProtocolError` for anything that is not a well-formed one."""
    try:
        kind, body = _split(data, limits)
        h, t = _parse_body(body, limits)
        header = _header(kind, h)
        model = None
        if kind == MsgKind.TASK:
            out, model = _decode_task(h, t)
        elif kind == MsgKind.RESULT:
            out = _decode_result(h, t)
        elif kind == MsgKind.STATUS:
            state = _get(h, "state", "status")
            info = _get(h, "info", "status")
            if state not in STATES or not isinstance(info, dict) or len(json.dumps(info)) > 65536:
                raise ProtocolError("status: state must be online/offline/busy and info an object <= 64 KiB")
            out = StatusMsg(state, info)
        elif kind == MsgKind.REJECT:
            out = RejectMsg(_str(h, "reason", "reject"), _bool(h, "needs_full_mask", "reject"))
        else:
            d = _tensor(t, "data", "chunk")
            if d.dtype != np.uint8 or d.ndim != 1:
                raise ProtocolError("chunk: data must be a uint8 vector")
            out = d.tobytes()
        return Decoded(header, out, model, len(data), h)
    except ProtocolError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, MemoryError, RecursionError) as e:
        raise ProtocolError(f"malformed message: {type(e).__name__}: {e}") from None
