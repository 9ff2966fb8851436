"""The wire format between coordinator and edges (version 1): one module both sides import.

Envelope = a 16-byte prefix + a body::

    "PFLE" | u8 protocol version | u8 kind | u16 flags (0) | u32 body length | u32 CRC-32 of the body   (little-endian)

The body is a safetensors file (a specified, widely used container of little-endian tensors behind a JSON
header with strict offset rules): the tensors of the message, and in its metadata, under ``"prunefl"``, the
message's JSON header: ``kind``, ``federation``, ``sender``, ``round``, ``mask_version``, ``msg_id`` (a fresh
uuid4 hex per message) and the kind's own fields.

* Kept values travel as float32 vectors ``v<i>``; dense importance as float32 arrays ``z<i>`` of their shape.
* A mask (``m<param>``), or the added/removed positions of a mask change (``a<param>``/``r<param>``), travels as
  the cheaper of a bitmap (``np.packbits`` of the flat mask) and delta-coded sorted flat indices (the first index,
  then the gaps, in the narrowest unsigned type that holds the largest); the header says which, with the mask's
  shape or the parameter's size.
* Full masks of one message hold at most :data:`MASK_ELEMENTS_PER_BYTE` elements per body byte (the encoder
  falls back to bitmaps, 8 per byte, where delta coding would exceed it), so decoding never materialises masks
  out of proportion to the message.

Decoding (:func:`decode`) checks the prefix, the checksum, then the container's JSON header against
:class:`Limits` and every declared dtype, shape and offset *before* safetensors copies any data, then every
field of the message; anything malformed raises :class:`ProtocolError` (and nothing else) saying what is wrong.
Memory: about 2-3 x ``len(data)`` for values; at most about 80 x in the worst cases, which need masks: a full
mask at the budget (64 bytes of bool per body byte, plus 8 bytes of int64 index per delta-coded byte) or a
bitmap-coded mask change (8 bytes of bits + 64 bytes of int64 indices per bitmap byte). No pickle, no eval.
"""

from __future__ import annotations

import json
import logging
import math
import struct
import uuid
import zlib
from dataclasses import asdict, dataclass, fields
from enum import IntEnum
from typing import Any

import numpy as np
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

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

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAGIC = b"PFLE"
PREFIX = struct.Struct("<4sBBHII")  # magic, version, kind, flags, body length, CRC-32 of the body

MASK_ELEMENTS_PER_BYTE = 64  # full masks of a message: at most this many elements per body byte
MAX_ELEMENTS = 2**34  # elements of one tensor, mask or parameter
MAX_PARAMS = 4096  # parameter indices 0..4095; at most this many value / importance arrays
MAX_ID = 2**62  # round, mask version
MAX_INFO_BYTES = 65536  # a status's info object, as JSON
MAX_REASON_CHARS = 4096
STATES = ("online", "offline", "busy")


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
    max_message_bytes: int = 256 * 2**20  # a whole (reassembled) message
    max_header_bytes: int = 1 * 2**20  # the JSON header(s)
    max_tensors: int = 4096


DEFAULT_LIMITS = Limits()


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
    state: str  # "online" | "offline" | "busy"
    info: dict[str, Any]  # a JSON object of at most 64 KiB (n_samples, threads, profile, software version ...)


@dataclass
class RejectMsg:
    reason: str  # at most 4096 characters (longer ones are cut when encoded)
    needs_full_mask: bool


@dataclass
class Decoded:
    header: Header
    body: Task | TrainResult | InitialPruneResult | StatusMsg | RejectMsg
    model: dict[str, Any] | None  # TASK only: the model description (spec_to_dict form) if the sender included it
    nbytes: int  # len(data)


@dataclass(frozen=True)
class Chunk:
    """One CHUNK envelope: ``data`` is bytes ``[index * step, ...)`` of the message ``header.msg_id``."""

    header: Header
    index: int
    count: int
    total: int  # length of the whole message
    crc: int  # CRC-32 of the whole message
    data: bytes


_DTYPES: dict[str, type[np.generic]] = {"F32": np.float32, "U8": np.uint8, "U16": np.uint16, "U32": np.uint32,
                                        "U64": np.uint64}
_UINTS: tuple[type[np.unsignedinteger], ...] = (np.uint8, np.uint16, np.uint32, np.uint64)
_UINT_DTYPES = frozenset(np.dtype(t) for t in _UINTS)


# ---- positions: masks and index lists --------------------------------------------------------------------
def _delta_code(idx: np.ndarray) -> np.ndarray:
    """First index, then the gaps, in the narrowest unsigned type holding the largest of them."""
    if idx.size == 0:
        return np.zeros(0, np.uint8)
    gaps = np.diff(idx, prepend=np.int64(0))
    top = int(gaps.max())
    return gaps.astype(next(t for t in _UINTS if top <= np.iinfo(t).max))


def _sorted_positions(idx: Any, size: int, what: str) -> np.ndarray:
    """``idx`` as int64, checked strictly increasing within 0..size-1 (the encoder's input contract)."""
    a = np.asarray(idx)
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{what}: indices must be integers, got {a.dtype}")
    a = a.astype(np.int64).ravel()
    if a.size and (a[0] < 0 or a[-1] >= size or np.any(np.diff(a) <= 0)):
        raise ValueError(f"{what}: indices must be strictly increasing within 0..{size - 1}")
    return a


def _encode_positions(idx: np.ndarray, size: int, flat: np.ndarray | None = None) -> tuple[str, np.ndarray]:
    """The cheaper (in bytes) of delta-coded ``idx`` and a bitmap of ``size`` positions; ties go to the bitmap."""
    coded = _delta_code(idx)
    if coded.nbytes < (size + 7) // 8:
        return "delta", coded
    return "bitmap", _bitmap(idx, size, flat)


def _bitmap(idx: np.ndarray, size: int, flat: np.ndarray | None = None) -> np.ndarray:
    if flat is None:
        flat = np.zeros(size, bool)
        flat[idx] = True
    return np.packbits(flat)


def _check_positions(enc: Any, arr: np.ndarray, size: int, what: str) -> None:
    """Sizes only, before anything is allocated: a bitmap is exactly ceil(size/8) bytes, indices at most size."""
    if enc == "bitmap":
        if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size != (size + 7) // 8:
            raise ProtocolError(f"{what}: a bitmap of {size} positions is {(size + 7) // 8} uint8 bytes, got "
                                f"{arr.dtype} {arr.shape}")
    elif enc == "delta":
        if arr.dtype not in _UINT_DTYPES or arr.ndim != 1 or arr.size > size:
            raise ProtocolError(f"{what}: delta-coded indices must be an unsigned vector of at most {size} "
                                f"entries, got {arr.dtype} {arr.shape}")
    else:
        raise ProtocolError(f"{what}: unknown position encoding {enc!r} (bitmap or delta)")


def _bitmap_bits(arr: np.ndarray, size: int, what: str) -> np.ndarray:
    """The bool vector of a checked bitmap; its padding bits must be zero."""
    if size % 8 and int(arr[-1]) & ((1 << (8 - size % 8)) - 1):
        raise ProtocolError(f"{what}: bitmap padding bits (beyond position {size - 1}) are set")
    return np.unpackbits(arr, count=size).view(bool)


def _delta_indices(arr: np.ndarray, size: int, what: str) -> np.ndarray:
    """int64 positions of checked delta-coded indices: strictly increasing, within 0..size-1."""
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.size > 1 and not np.all(arr[1:]):
        raise ProtocolError(f"{what}: indices are not strictly increasing (a zero gap)")
    # the sum of the gaps is the last index; exact in float64 below 2**53, so this also rules out int64 overflow
    if float(arr.sum(dtype=np.float64)) >= size:
        raise ProtocolError(f"{what}: indices run beyond position {size - 1}")
    idx = np.cumsum(arr.astype(np.int64))
    if idx[-1] >= size:
        raise ProtocolError(f"{what}: indices run beyond position {size - 1}")
    return idx


def _decode_indices(enc: str, arr: np.ndarray, size: int, what: str) -> np.ndarray:
    if enc == "bitmap":
        return np.flatnonzero(_bitmap_bits(arr, size, what)).astype(np.int64, copy=False)
    return _delta_indices(arr, size, what)


def _decode_mask(enc: str, arr: np.ndarray, size: int, what: str) -> np.ndarray:
    if enc == "bitmap":
        return _bitmap_bits(arr, size, what)
    m = np.zeros(size, bool)
    m[_delta_indices(arr, size, what)] = True
    return m


# ---- JSON ------------------------------------------------------------------------------------------------
def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ProtocolError(f"a JSON object repeats a key ({sorted(k for k, _ in pairs)[:8]})")
    return d


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"JSON constant {name} is not allowed (non-finite numbers travel as null)")


def _json(text: bytes | str, what: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except ProtocolError as e:
        raise ProtocolError(f"{what}: {e}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, too many digits, nesting
        raise ProtocolError(f"{what} is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _exact_keys(d: Any, keys: set[str] | frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    if set(d) != keys:
        missing, unknown = sorted(keys - set(d)), [_show(k) for k in sorted(set(d) - keys)[:8]]
        parts = [f"missing fields {missing}"] if missing else []
        parts += [f"unknown fields {unknown}"] if unknown else []
        raise ProtocolError(f"{what}: " + "; ".join(parts))
    return d


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _int(d: dict[str, Any], key: str, what: str, lo: int, hi: int) -> int:
    v = d[key]
    if not _is_int(v) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be an integer in {lo}..{hi}, got {_show(v)}")
    return int(v)


def _float(d: dict[str, Any], key: str, what: str, lo: float = -math.inf, hi: float = math.inf,
           null_is_nan: bool = False) -> float:
    v = d[key]
    if v is None and null_is_nan:
        return float("nan")
    if not _is_num(v) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be a finite number in [{lo}, {hi}]"
                            f"{' or null' if null_is_nan else ''}, got {_show(v)}")
    return float(v)


def _bool(d: dict[str, Any], key: str, what: str) -> bool:
    v = d[key]
    if not isinstance(v, bool):
        raise ProtocolError(f"{what}: {key} must be true or false, got {_show(v)}")
    return v


def _str(d: dict[str, Any], key: str, what: str, max_len: int) -> str:
    v = d[key]
    if not isinstance(v, str) or len(v) > max_len:
        raise ProtocolError(f"{what}: {key} must be a string of at most {max_len} characters, got {_show(v)}")
    return v


def _id(d: dict[str, Any], key: str, what: str) -> str:
    v = d[key]
    if not valid_id(v):
        raise ProtocolError(f"{what}: {key} must be 1-64 characters of A-Z a-z 0-9 _ . -, got {_show(v)}")
    return str(v)


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _null_nan(x: float) -> float | None:
    """Non-finite floats travel as null (and come back as NaN)."""
    return float(x) if math.isfinite(x) else None


# ---- configs ---------------------------------------------------------------------------------------------
# field -> (type, lo, hi); every field of TrainConfig and InitialPruneConfig has a rule
_CONFIG_RULES: dict[str, tuple[str, float, float]] = {
    "lr": ("float", 0.0, 1e6), "local_steps": ("int", 1, 10**6), "batch_size": ("int", 1, 65536),
    "momentum": ("float", 0.0, 1.0), "weight_decay": ("float", 0.0, 1e3),
    "collect_importance": ("bool", 0, 0), "upload_importance": ("bool", 0, 0),
    "costs": ("costs", 0.0, 1e9), "intercept": ("float", 0.0, 1e9), "n_batches": ("int", 1, 10**6),
    "reconfig_interval": ("int", 1, 10**6), "max_passes": ("int", 0, 10**7), "acc_threshold": ("float", 0.0, 1.0),
    "delta": ("float", 0.0, 1.0), "stop_change": ("float", 0.0, 1e6), "stop_count": ("int", 1, 10**6),
    "max_density": ("float_or_null", 0.0, 1.0), "seed": ("int", 0, 2**63 - 1),
}
_CONFIGS: dict[str, type[TrainConfig] | type[InitialPruneConfig]] = {"train": TrainConfig,
                                                                      "initial_prune": InitialPruneConfig}
MAX_COSTS = 1024


def _config_from(d: Any, config_kind: str) -> TrainConfig | InitialPruneConfig:
    what = f"task config ({config_kind})"
    cls = _CONFIGS[config_kind]
    names = [f.name for f in fields(cls)]
    _exact_keys(d, frozenset(names), what)
    out: dict[str, Any] = {}
    for name in names:
        if name not in _CONFIG_RULES:
            raise ProtocolError(f"{what}: field {name!r} has no wire rule (the two sides run different versions?)")
        typ, lo, hi = _CONFIG_RULES[name]
        if typ == "float":
            out[name] = _float(d, name, what, lo, hi)
        elif typ == "int":
            out[name] = _int(d, name, what, int(lo), int(hi))
        elif typ == "bool":
            out[name] = _bool(d, name, what)
        elif typ == "float_or_null":
            out[name] = None if d[name] is None else _float(d, name, what, lo, hi)
        else:
            v = d[name]
            if not isinstance(v, list) or len(v) > MAX_COSTS or not all(
                    _is_num(c) and math.isfinite(c) and lo <= c <= hi for c in v):
                raise ProtocolError(f"{what}: {name} must be a list of at most {MAX_COSTS} finite numbers in "
                                    f"[{lo}, {hi}]")
            out[name] = [float(c) for c in v]
    return cls(**out)


def _config_kind(task: Task) -> str:
    cfg = task.config
    want = InitialPruneConfig if task.kind == TaskKind.INITIAL_PRUNE else TrainConfig
    if type(cfg) is not want:
        raise ValueError(f"a {task.kind.value} task carries a {want.__name__}, not {type(cfg).__name__}")
    return "initial_prune" if want is InitialPruneConfig else "train"


# ---- envelope --------------------------------------------------------------------------------------------
def _envelope(kind: MsgKind, header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    body = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata={"prunefl": _dumps(header)})
    (n,) = struct.unpack_from("<Q", body)
    if n > DEFAULT_LIMITS.max_header_bytes:
        raise ValueError(f"a container header of {n} bytes exceeds the default limit of "
                         f"{DEFAULT_LIMITS.max_header_bytes} (too large a model description or history?)")
    return PREFIX.pack(MAGIC, PROTOCOL_VERSION, int(kind), 0, len(body), zlib.crc32(body)) + body


def _common(kind: MsgKind, federation: str, sender: str, round_: int, mask_version: int,
            msg_id: str | None = None) -> dict[str, Any]:
    for name, what in ((federation, "federation"), (sender, "sender")):
        if not valid_id(name):
            raise ValueError(f"{what} {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    for v, what in ((round_, "round"), (mask_version, "mask_version")):
        if not -1 <= int(v) <= MAX_ID:
            raise ValueError(f"{what} {v} is outside -1..{MAX_ID}")
    return {"kind": kind.name.lower(), "federation": federation, "sender": sender, "round": int(round_),
            "mask_version": int(mask_version), "msg_id": msg_id or uuid.uuid4().hex}


def _param(p: Any) -> int:
    if not 0 <= int(p) < MAX_PARAMS:
        raise ValueError(f"parameter index {p} is outside 0..{MAX_PARAMS - 1}")
    return int(p)


class _MaskEncoder:
    """Full masks of one message: each the cheaper encoding, then bitmaps where the element budget needs them."""

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.flats: list[tuple[dict[str, Any], np.ndarray]] = []

    def entries(self, masks: dict[int, np.ndarray]) -> list[dict[str, Any]]:
        out = []
        for p in sorted(masks, key=int):
            m = np.asarray(masks[p], bool)
            if m.ndim < 1 or m.size < 1 or m.ndim > 8 or m.size > MAX_ELEMENTS:
                raise ValueError(f"mask of parameter {p}: shape {m.shape} (1-8 dimensions, 1..{MAX_ELEMENTS} entries)")
            flat = m.ravel()
            enc, arr = _encode_positions(np.flatnonzero(flat), flat.size, flat)
            e = {"param": _param(p), "shape": [int(s) for s in m.shape], "enc": enc}
            self.tensors[f"m{e['param']}"] = arr
            self.flats.append((e, flat))
            out.append(e)
        return out

    def fit_budget(self) -> None:
        elements = sum(f.size for _, f in self.flats)
        floor = sum(t.nbytes for t in self.tensors.values())  # the body is larger: this is conservative
        for e, flat in sorted(self.flats, key=lambda ef: -ef[1].size):
            if elements <= MASK_ELEMENTS_PER_BYTE * floor:
                return
            if e["enc"] == "delta":
                name = f"m{e['param']}"
                floor -= self.tensors[name].nbytes
                self.tensors[name] = np.packbits(flat)
                floor += self.tensors[name].nbytes
                e["enc"] = "bitmap"


def _values(values: list[np.ndarray], prefix: str, tensors: dict[str, np.ndarray]) -> int:
    if len(values) > MAX_PARAMS:
        raise ValueError(f"{len(values)} value arrays (at most {MAX_PARAMS})")
    for i, v in enumerate(values):
        tensors[f"{prefix}{i}"] = np.asarray(v, np.float32).ravel()
    return len(values)


def encode_task(task: Task, *, federation: str, sender: str, model: dict[str, Any] | None = None,
                sizes: dict[int, int] | None = None) -> bytes:
    """A TASK envelope. ``sizes`` (parameter -> number of weights) lets a mask change's positions go as a bitmap
    of the whole parameter when that is cheaper; without it a change is coded against its largest index + 1."""
    config_kind = _config_kind(task)
    config = _dumps(asdict(task.config))
    try:
        _config_from(json.loads(config), config_kind)
    except ProtocolError as e:
        raise ValueError(str(e)) from None
    h = _common(MsgKind.TASK, federation, sender, task.round, task.mask.version)
    tensors: dict[str, np.ndarray] = {}
    masks = _MaskEncoder(tensors)
    mu = task.mask
    mask: dict[str, Any] = {"mode": "none"}
    if mu.full is not None and mu.delta is not None:
        raise ValueError("a MaskUpdate carries a full mask or a delta, not both")
    if mu.full is not None:
        mask = {"mode": "full", "entries": masks.entries(mu.full)}
    elif mu.delta is not None:
        d = mu.delta
        if d.version != mu.version:
            raise ValueError(f"the delta produces mask version {d.version}, the update says {mu.version}")
        entries = []
        for p in sorted(set(d.added) | set(d.removed), key=int):
            rec: dict[str, Any] = {"param": _param(p)}
            given = {key: np.asarray(table[p]).ravel() for key, table in (("added", d.added), ("removed", d.removed))
                     if p in table}
            top = max([int(x.max()) + 1 for x in given.values() if x.size] + [1])
            size = int(sizes[p]) if sizes is not None and p in sizes else top
            if not top <= size <= MAX_ELEMENTS:
                raise ValueError(f"mask delta of parameter {p}: index {top - 1} for a parameter of {size} weights")
            rec["size"] = size
            for key in ("added", "removed"):
                rec[key] = None
                if key in given:
                    enc, arr = _encode_positions(_sorted_positions(given[key], size, f"{key} of {p}"), size)
                    tensors[f"{key[0]}{rec['param']}"] = arr
                    rec[key] = enc
            entries.append(rec)
        mask = {"mode": "delta", "base_version": int(d.base_version), "entries": entries}
        if not -1 <= mask["base_version"] <= MAX_ID:
            raise ValueError(f"base_version {d.base_version} is outside -1..{MAX_ID}")
    n = _values(task.values, "v", tensors)
    masks.fit_budget()
    h.update(task_kind=task.kind.value, config_kind=config_kind, config=json.loads(config), n_values=n, mask=mask,
             model=model)
    return _envelope(MsgKind.TASK, h, tensors)


def encode_result(result: TrainResult | InitialPruneResult, *, federation: str, sender: str) -> bytes:
    """A RESULT envelope; non-finite loss/accuracy/compute_s/densities travel as null (and decode as NaN)."""
    if not valid_id(result.client_id):
        raise ValueError(f"client_id {result.client_id!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    h = _common(MsgKind.RESULT, federation, sender, result.round, result.mask_version)
    tensors: dict[str, np.ndarray] = {}
    h.update(client_id=result.client_id, n_values=_values(result.values, "v", tensors),
             compute_s=_null_nan(result.compute_s))
    if isinstance(result, TrainResult):
        shapes = None
        if result.importance is not None:
            shapes = []
            for i, z in enumerate(result.importance):
                tensors[f"z{i}"] = np.ascontiguousarray(z, np.float32)
                shapes.append([int(s) for s in tensors[f"z{i}"].shape])
            if len(shapes) > MAX_PARAMS:
                raise ValueError(f"{len(shapes)} importance arrays (at most {MAX_PARAMS})")
        h.update(result_kind="train", n_samples=int(result.n_samples), loss=_null_nan(result.loss),
                 accuracy=_null_nan(result.accuracy), importance=shapes)
    else:
        masks = _MaskEncoder(tensors)
        h.update(result_kind="initial_prune", passes=int(result.passes), masks=masks.entries(result.masks),
                 kept_history=[[int(k) for k in row] for row in result.kept_history],
                 densities=[_null_nan(float(d)) for d in result.densities],
                 train_accuracy=_null_nan(result.train_accuracy))
        masks.fit_budget()
    return _envelope(MsgKind.RESULT, h, tensors)


def encode_status(status: StatusMsg, *, federation: str, sender: str, round: int = -1,  # noqa: A002
                  mask_version: int = -1) -> bytes:
    if status.state not in STATES:
        raise ValueError(f"status state must be one of {STATES}, got {status.state!r}")
    if not isinstance(status.info, dict) or len(_dumps(status.info)) > MAX_INFO_BYTES:
        raise ValueError(f"status info must be a JSON object of at most {MAX_INFO_BYTES} bytes")
    h = _common(MsgKind.STATUS, federation, sender, round, mask_version)
    h.update(state=status.state, info=status.info)
    return _envelope(MsgKind.STATUS, h, {})


def encode_reject(reject: RejectMsg, *, federation: str, sender: str, round: int,  # noqa: A002
                  mask_version: int) -> bytes:
    """A REJECT envelope; a reason longer than 4096 characters is cut."""
    h = _common(MsgKind.REJECT, federation, sender, round, mask_version)
    h.update(reason=str(reject.reason)[:MAX_REASON_CHARS], needs_full_mask=bool(reject.needs_full_mask))
    return _envelope(MsgKind.REJECT, h, {})


def encode_chunk(*, federation: str, sender: str, msg_id: str, index: int, count: int, total: int, crc: int,
                 data: bytes) -> bytes:
    """One CHUNK envelope (see :mod:`prunefl_edge.protocol.chunks`, which builds and reassembles them)."""
    h = _common(MsgKind.CHUNK, federation, sender, -1, -1, msg_id)
    h.update(index=int(index), count=int(count), total=int(total), crc=int(crc))
    return _envelope(MsgKind.CHUNK, h, {"data": np.frombuffer(data, np.uint8)})


# ---- decoding: envelope and container --------------------------------------------------------------------
def _read_prefix(data: bytes | bytearray | memoryview, limits: Limits) -> tuple[MsgKind, memoryview, int]:
    """(kind, body, declared CRC) after checking magic, version, kind, flags and length (not the CRC)."""
    try:
        mv = memoryview(data).cast("B")
    except TypeError as e:
        raise ProtocolError(f"not a contiguous bytes-like object: {e}") from None
    if len(mv) < PREFIX.size:
        raise ProtocolError(f"{len(mv)} bytes: shorter than the {PREFIX.size}-byte envelope prefix")
    magic, version, kind, flags, length, crc = PREFIX.unpack_from(mv)
    if magic != MAGIC:
        raise ProtocolError(f"not a PruneFL-Edge message (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"protocol version {version}; this side speaks {PROTOCOL_VERSION} (upgrade the older side)")
    try:
        k = MsgKind(kind)
    except ValueError:
        raise ProtocolError(f"unknown message kind {kind}") from None
    if flags != 0:
        raise ProtocolError(f"unknown flags {flags:#06x} (version 1 defines none)")
    if length != len(mv) - PREFIX.size:
        raise ProtocolError(f"the prefix announces a body of {length} bytes but {len(mv) - PREFIX.size} follow it")
    if length > limits.max_message_bytes:
        raise ProtocolError(f"message of {length} bytes exceeds the limit of {limits.max_message_bytes}")
    return k, mv[PREFIX.size:], crc


def envelope_kind(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> MsgKind:
    """The kind of an envelope after a cheap prefix check (magic, version, kind, flags, length; not the CRC)."""
    return _read_prefix(data, limits)[0]


def _container(body: memoryview, limits: Limits) -> dict[str, Any]:
    """The PruneFL header, after checking the safetensors header against ``limits``: every dtype, shape and offset
    is consistent and the tensors tile the data exactly, before any data is read."""
    if len(body) < 8:
        raise ProtocolError(f"a body of {len(body)} bytes is too short for a tensor container")
    (n,) = struct.unpack_from("<Q", body)
    if n > limits.max_header_bytes:
        raise ProtocolError(f"container header of {n} bytes exceeds the limit of {limits.max_header_bytes}")
    if n > len(body) - 8:
        raise ProtocolError(f"container header of {n} bytes does not fit the {len(body)}-byte body")
    meta = _json(bytes(body[8:8 + n]), "the container header")
    if not isinstance(meta, dict):
        raise ProtocolError("the container header must be a JSON object")
    md = meta.pop("__metadata__", None)
    if not isinstance(md, dict) or set(md) != {"prunefl"} or not isinstance(md["prunefl"], str):
        raise ProtocolError("the container carries no PruneFL header (metadata key 'prunefl')")
    if len(meta) > limits.max_tensors:
        raise ProtocolError(f"{len(meta)} tensors exceed the limit of {limits.max_tensors}")
    data_len = len(body) - 8 - n
    spans = []
    for name, info in meta.items():
        _exact_keys(info, frozenset({"dtype", "shape", "data_offsets"}), f"tensor {_show(name)}")
        dt, shape, off = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in _DTYPES:
            raise ProtocolError(f"tensor {_show(name)}: dtype {_show(dt)} is not one of {sorted(_DTYPES)}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(s) and 0 <= s <= MAX_ELEMENTS
                                                                    for s in shape):
            raise ProtocolError(f"tensor {_show(name)}: shape {_show(shape)} (at most 8 sizes in 0..{MAX_ELEMENTS})")
        if not (isinstance(off, list) and len(off) == 2 and all(_is_int(o) for o in off)
                and 0 <= off[0] <= off[1] <= data_len):
            raise ProtocolError(f"tensor {_show(name)}: data offsets {_show(off)} outside the {data_len} data bytes")
        nbytes = math.prod(shape) * np.dtype(_DTYPES[dt]).itemsize
        if nbytes != off[1] - off[0]:
            raise ProtocolError(f"tensor {_show(name)}: {off[1] - off[0]} bytes for shape {shape} of {dt}")
        spans.append((off[0], off[1]))
    pos = 0
    for start, end in sorted(spans):
        if start != pos:
            raise ProtocolError("tensor data overlaps or leaves gaps")
        pos = end
    if pos != data_len:
        raise ProtocolError(f"tensors cover {pos} of the {data_len} data bytes")
    h = _json(md["prunefl"], "the message header")
    if not isinstance(h, dict):
        raise ProtocolError("the message header must be a JSON object")
    return h


class _Tensors:
    """The message's tensors (each must be used exactly once) and its full-mask element budget."""

    def __init__(self, t: dict[str, np.ndarray], budget: int) -> None:
        self._t = t
        self._used: set[str] = set()
        self.budget = budget

    @classmethod
    def load(cls, body: memoryview) -> _Tensors:
        """safetensors' own strict reading (after :func:`_container` has bounded every size)."""
        try:
            t = st_load(bytes(body))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types; any of them is bad input
            raise ProtocolError(f"the tensor container is malformed: {type(e).__name__}: {str(e)[:200]}") from None
        return cls(t, MASK_ELEMENTS_PER_BYTE * len(body))

    def take(self, name: str, what: str) -> np.ndarray:
        if name in self._used:
            raise ProtocolError(f"{what}: tensor {name} is used twice (a repeated parameter?)")
        if name not in self._t:
            raise ProtocolError(f"{what}: tensor {name} is missing")
        self._used.add(name)
        return self._t[name]

    def vector(self, name: str, what: str) -> np.ndarray:
        v = self.take(name, what)
        if v.dtype != np.float32 or v.ndim != 1:
            raise ProtocolError(f"{what}: {name} must be a float32 vector, got {v.dtype} {v.shape}")
        return v

    def all_used(self) -> None:
        extra = sorted(set(self._t) - self._used)
        if extra:
            raise ProtocolError(f"unexpected tensors {', '.join(_show(x) for x in extra[:8])}")


# ---- decoding: fields ------------------------------------------------------------------------------------
_COMMON_ORDER = ("kind", "federation", "sender", "round", "mask_version", "msg_id")
_COMMON = frozenset(_COMMON_ORDER)
_KIND_FIELDS: dict[MsgKind | str, frozenset[str]] = {
    MsgKind.TASK: _COMMON | {"task_kind", "config_kind", "config", "n_values", "mask", "model"},
    "result:train": _COMMON | {"result_kind", "client_id", "n_values", "compute_s", "n_samples", "loss", "accuracy",
                               "importance"},
    "result:initial_prune": _COMMON | {"result_kind", "client_id", "n_values", "compute_s", "passes", "masks",
                                       "kept_history", "densities", "train_accuracy"},
    MsgKind.STATUS: _COMMON | {"state", "info"},
    MsgKind.REJECT: _COMMON | {"reason", "needs_full_mask"},
    MsgKind.CHUNK: _COMMON | {"index", "count", "total", "crc"},
}
_HEX = frozenset("0123456789abcdef")


def _header(kind: MsgKind, h: dict[str, Any]) -> Header:
    for k in _COMMON_ORDER:
        if k not in h:
            raise ProtocolError(f"header: missing field {k!r}")
    if h["kind"] != kind.name.lower():
        raise ProtocolError(f"header kind {_show(h['kind'])} does not match the envelope's {kind.name.lower()!r}")
    mid = h["msg_id"]
    if not isinstance(mid, str) or len(mid) != 32 or not set(mid) <= _HEX:
        raise ProtocolError(f"header: msg_id must be 32 lowercase hex digits, got {_show(mid)}")
    return Header(kind, _id(h, "federation", "header"), _id(h, "sender", "header"),
                  _int(h, "round", "header", -1, MAX_ID), _int(h, "mask_version", "header", -1, MAX_ID), mid)


def _list(v: Any, what: str, max_len: int) -> list[Any]:
    if not isinstance(v, list) or len(v) > max_len:
        raise ProtocolError(f"{what} must be a list of at most {max_len} entries")
    return v


def _masks_from(entries: Any, t: _Tensors, what: str) -> dict[int, np.ndarray]:
    """Full masks: all entries and sizes checked (and the element budget) before any mask is allocated."""
    checked = []
    total = 0
    for e in _list(entries, what, MAX_PARAMS):
        _exact_keys(e, frozenset({"param", "shape", "enc"}), f"{what} entry")
        p = _int(e, "param", what, 0, MAX_PARAMS - 1)
        shape = e["shape"]
        if not isinstance(shape, list) or not 1 <= len(shape) <= 8 or not all(
                _is_int(s) and 1 <= s <= MAX_ELEMENTS for s in shape) or math.prod(shape) > MAX_ELEMENTS:
            raise ProtocolError(f"{what} of parameter {p}: bad shape {_show(shape)}")
        size = math.prod(shape)
        arr = t.take(f"m{p}", what)  # a repeated parameter finds its tensor already used
        _check_positions(e["enc"], arr, size, f"{what} of parameter {p}")
        total += size
        checked.append((p, tuple(shape), size, e["enc"], arr))
    if total > t.budget:
        raise ProtocolError(f"{what}: {total} mask entries from a {t.budget // MASK_ELEMENTS_PER_BYTE}-byte body "
                            f"(at most {MASK_ELEMENTS_PER_BYTE} per byte)")
    return {p: _decode_mask(enc, arr, size, f"{what} of parameter {p}").reshape(shape)
            for p, shape, size, enc, arr in checked}


def _delta_from(m: dict[str, Any], version: int, t: _Tensors) -> MaskDelta:
    _exact_keys(m, frozenset({"mode", "base_version", "entries"}), "task mask")
    base = _int(m, "base_version", "task mask", -1, MAX_ID)
    added: dict[int, np.ndarray] = {}
    removed: dict[int, np.ndarray] = {}
    for e in _list(m["entries"], "task mask delta", MAX_PARAMS):
        _exact_keys(e, frozenset({"param", "size", "added", "removed"}), "mask delta entry")
        p = _int(e, "param", "mask delta", 0, MAX_PARAMS - 1)
        size = _int(e, "size", f"mask delta of parameter {p}", 1, MAX_ELEMENTS)
        for key, table in (("added", added), ("removed", removed)):
            if e[key] is None:
                continue
            what = f"{key} positions of parameter {p}"
            arr = t.take(f"{key[0]}{p}", what)
            _check_positions(e[key], arr, size, what)
            table[p] = _decode_indices(e[key], arr, size, what)
    return MaskDelta(base, version, added, removed)


def _decode_task(header: Header, h: dict[str, Any], t: _Tensors) -> tuple[Task, dict[str, Any] | None]:
    _exact_keys(h, _KIND_FIELDS[MsgKind.TASK], "task header")
    kind_s = h["task_kind"]
    if kind_s not in [k.value for k in TaskKind]:
        raise ProtocolError(f"task: unknown task kind {_show(kind_s)}")
    kind = TaskKind(kind_s)
    config_kind = "initial_prune" if kind == TaskKind.INITIAL_PRUNE else "train"
    if h["config_kind"] != config_kind:
        raise ProtocolError(f"task: config_kind must be {config_kind!r} for a {kind.value} task, got "
                            f"{_show(h['config_kind'])}")
    config = _config_from(h["config"], config_kind)
    m = h["mask"]
    mode = m.get("mode") if isinstance(m, dict) else None
    if mode == "none":
        _exact_keys(m, frozenset({"mode"}), "task mask")
        mu = MaskUpdate(header.mask_version)
    elif mode == "full":
        _exact_keys(m, frozenset({"mode", "entries"}), "task mask")
        mu = MaskUpdate(header.mask_version, full=_masks_from(m["entries"], t, "task mask"))
    elif mode == "delta":
        mu = MaskUpdate(header.mask_version, delta=_delta_from(m, header.mask_version, t))
    else:
        raise ProtocolError(f"task mask: mode must be none, full or delta, got {_show(mode)}")
    values = [t.vector(f"v{i}", "task values") for i in range(_int(h, "n_values", "task", 0, MAX_PARAMS))]
    model = h["model"]
    if model is not None and not isinstance(model, dict):
        raise ProtocolError("task: model must be a JSON object or null")
    return Task(header.round, kind, mu, values, config), model


def _decode_result(header: Header, h: dict[str, Any], t: _Tensors) -> TrainResult | InitialPruneResult:
    rk = h.get("result_kind")
    if rk not in ("train", "initial_prune"):
        raise ProtocolError(f"result: result_kind must be train or initial_prune, got {_show(rk)}")
    _exact_keys(h, _KIND_FIELDS[f"result:{rk}"], f"result ({rk}) header")
    cid = _id(h, "client_id", "result")
    values = [t.vector(f"v{i}", "result values") for i in range(_int(h, "n_values", "result", 0, MAX_PARAMS))]
    compute = _float(h, "compute_s", "result", 0.0, 1e9, null_is_nan=True)
    if rk == "train":
        importance = None
        if h["importance"] is not None:
            importance = []
            for i, shape in enumerate(_list(h["importance"], "result importance", MAX_PARAMS)):
                z = t.take(f"z{i}", "result importance")
                if z.dtype != np.float32 or not isinstance(shape, list) or list(z.shape) != shape:
                    raise ProtocolError(f"result importance: z{i} is {z.dtype} {list(z.shape)}, the header says "
                                        f"float32 {_show(shape)}")
                importance.append(z)
        return TrainResult(cid, header.round, header.mask_version, _int(h, "n_samples", "result", 0, 10**12), values,
                           importance, _float(h, "loss", "result", null_is_nan=True),
                           _float(h, "accuracy", "result", 0.0, 1.0, True), compute)
    hist = _list(h["kept_history"], "result kept_history", 10**6)
    if not all(isinstance(row, list) and len(row) <= MAX_PARAMS and all(_is_int(k) and 0 <= k <= MAX_ELEMENTS
                                                                          for k in row) for row in hist):
        raise ProtocolError("result: kept_history must be lists of integers in 0..2**34")
    dens = _list(h["densities"], "result densities", 10**6)
    if not all(d is None or (_is_num(d) and math.isfinite(d)) for d in dens):
        raise ProtocolError("result: densities must be finite numbers or null")
    masks = _masks_from(h["masks"], t, "result masks")
    return InitialPruneResult(cid, header.round, masks, values, _int(h, "passes", "result", 0, 10**9),
                              [list(row) for row in hist], [float("nan") if d is None else float(d) for d in dens],
                              _float(h, "train_accuracy", "result", 0.0, 1.0, True), compute, header.mask_version)


def _decode_status(h: dict[str, Any]) -> StatusMsg:
    _exact_keys(h, _KIND_FIELDS[MsgKind.STATUS], "status header")
    if h["state"] not in STATES:
        raise ProtocolError(f"status: state must be one of {STATES}, got {_show(h['state'])}")
    info = h["info"]
    if not isinstance(info, dict) or len(_dumps(info)) > MAX_INFO_BYTES:
        raise ProtocolError(f"status: info must be a JSON object of at most {MAX_INFO_BYTES} bytes")
    return StatusMsg(h["state"], info)


def _decode_reject(h: dict[str, Any]) -> RejectMsg:
    _exact_keys(h, _KIND_FIELDS[MsgKind.REJECT], "reject header")
    return RejectMsg(_str(h, "reason", "reject", MAX_REASON_CHARS), _bool(h, "needs_full_mask", "reject"))


def _guarded(what: str, fn: Any, *args: Any) -> Any:
    """Run a decoding step; an exception that is not a ProtocolError is a decoder bug, reported as bad input (so a
    peer can never crash us) but logged, and marked so tests can tell it from a deliberate rejection."""
    try:
        return fn(*args)
    except ProtocolError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError, MemoryError,
            RecursionError) as e:
        log.warning("unexpected error decoding %s", what, exc_info=True)
        raise ProtocolError(f"unexpected decoder error on {what}: {type(e).__name__}: {str(e)[:200]}") from None


def _decode(data: bytes | bytearray | memoryview, limits: Limits) -> Decoded:
    kind, body, crc = _read_prefix(data, limits)
    if zlib.crc32(body) != crc:
        raise ProtocolError("checksum mismatch (corrupted in transit)")
    h = _container(body, limits)
    header = _header(kind, h)
    if kind == MsgKind.CHUNK:
        raise ProtocolError("a CHUNK envelope is part of a larger message: pass it through a Reassembler first")
    t = _Tensors.load(body)
    model = None
    out: Task | TrainResult | InitialPruneResult | StatusMsg | RejectMsg
    if kind == MsgKind.TASK:
        out, model = _decode_task(header, h, t)
    elif kind == MsgKind.RESULT:
        out = _decode_result(header, h, t)
    elif kind == MsgKind.STATUS:
        out = _decode_status(h)
    else:
        out = _decode_reject(h)
    t.all_used()
    return Decoded(header, out, model, len(body) + PREFIX.size)


def decode(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Decoded:
    """The message in ``data``; :class:`ProtocolError` (only) for anything that is not a well-formed one."""
    return _guarded("a message", _decode, data, limits)


def _peek(data: bytes | bytearray | memoryview, limits: Limits) -> Header:
    kind, body, _ = _read_prefix(data, limits)
    h = _container(body, limits)
    return _header(kind, h)


def peek_header(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Header:
    """The common header, for routing and logging: prefix and JSON headers only (no checksum, no tensor data)."""
    return _guarded("a message header", _peek, data, limits)


def _decode_chunk(data: bytes | bytearray | memoryview, limits: Limits) -> Chunk:
    kind, body, crc = _read_prefix(data, limits)
    if kind != MsgKind.CHUNK:
        raise ProtocolError(f"a {kind.name} envelope is not a chunk")
    if zlib.crc32(body) != crc:
        raise ProtocolError("chunk checksum mismatch (corrupted in transit)")
    h = _container(body, limits)
    header = _header(kind, h)
    _exact_keys(h, _KIND_FIELDS[MsgKind.CHUNK], "chunk header")
    total = _int(h, "total", "chunk", 2, limits.max_message_bytes)
    count = _int(h, "count", "chunk", 2, total)
    index = _int(h, "index", "chunk", 0, count - 1)
    whole_crc = _int(h, "crc", "chunk", 0, 2**32 - 1)
    t = _Tensors.load(body)
    d = t.take("data", "chunk")
    t.all_used()
    if d.dtype != np.uint8 or d.ndim != 1 or not 1 <= d.size <= total:
        raise ProtocolError(f"chunk: data must be a uint8 vector of 1..{total} bytes, got {d.dtype} {d.shape}")
    return Chunk(header, index, count, total, whole_crc, d.tobytes())


def decode_chunk(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Chunk:
    """A CHUNK envelope, checked (the reassembler's input); :class:`ProtocolError` on anything else."""
    return _guarded("a chunk", _decode_chunk, data, limits)
