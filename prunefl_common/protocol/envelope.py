"""The envelope and its tensor container: the part of the wire format that bounds what a peer can make us allocate.

Envelope = a 16-byte prefix + a body::

    "PFLE" | u8 protocol version | u8 kind | u16 flags (0) | u32 body length | u32 CRC-32 of the body   (little-endian)

The body is a safetensors file: a u64 header length, a JSON header (tensor dtypes, shapes and data offsets, and
under ``__metadata__`` / ``"prunefl"`` the message's own JSON header), then the tensors' little-endian bytes.
:func:`container_header` checks the prefix-announced length, the header length, every dtype, shape and offset
and that the tensors tile the data exactly *before* anything but the JSON header is read; :class:`Tensors` then
hands out each tensor once. The message's own header is checked by the per-kind decoders in
:mod:`prunefl_common.protocol.codec`.

Both directions are ours: the decoder reads tensors as views into the message (after the checks above), and the
encoder writes the container itself (:func:`container_layout`, the layout safetensors' own writer produces:
tensors ordered by dtype, then name; the header padded with spaces to 8 bytes), so that the size of a message
(:func:`envelope_nbytes`) is computed by the same code that builds it, without building it.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from prunefl_common.protocol.fields import (
    DEFAULT_LIMITS,
    MASK_ELEMENTS_PER_BYTE,
    MAX_ELEMENTS,
    MAX_ID,
    Limits,
    ProtocolError,
    dumps,
    exact_keys,
    guarded,
    is_int,
    parse_json,
    read_id,
    read_int,
    show,
)
from prunefl_common.protocol.topics import valid_id

__all__ = [  # what wire.py re-exports
    "MAGIC", "PREFIX", "PROTOCOL_VERSION", "Chunk", "Header", "MsgKind", "decode_chunk", "encode_chunk",
    "envelope_kind",
]

PROTOCOL_VERSION = 1
MAGIC = b"PFLE"
PREFIX = struct.Struct("<4sBBHII")  # magic, version, kind, flags, body length, CRC-32 of the body


class MsgKind(IntEnum):
    TASK = 1
    RESULT = 2
    STATUS = 3
    REJECT = 4
    CHUNK = 5


@dataclass(frozen=True)
class Header:
    kind: MsgKind
    federation: str
    sender: str
    round: int
    mask_version: int
    msg_id: str


@dataclass(frozen=True)
class Chunk:
    """One CHUNK envelope: ``data`` is bytes ``[index * step, ...)`` of the message ``header.msg_id``."""

    header: Header
    index: int
    count: int
    total: int  # length of the whole message
    crc: int  # CRC-32 of the whole message
    data: bytes


DTYPES: dict[str, type[np.generic]] = {"F32": np.float32, "F16": np.float16, "U8": np.uint8, "U16": np.uint16,
                                       "U32": np.uint32, "U64": np.uint64}
_DTYPE_NAMES = {np.dtype(t): name for name, t in DTYPES.items()}
# safetensors' data order: by dtype as its writer ranks them (8-byte unsigned, float32, 4-byte unsigned, float16, 2-,
# 1-byte unsigned), then
# by name
_DTYPE_RANK = {"U64": 0, "F32": 1, "U32": 2, "F16": 3, "U16": 4, "U8": 5}


def container_layout(tensors: dict[str, np.ndarray], metadata: str) -> tuple[bytes, list[np.ndarray]]:
    """(the container's length field and JSON header, the tensors in data order), as safetensors writes them."""
    arrays = {}
    for k, v in tensors.items():
        a = np.ascontiguousarray(v)
        if a.dtype not in _DTYPE_NAMES or not a.dtype.isnative and a.dtype.byteorder != "|":
            raise ValueError(f"tensor {k}: dtype {a.dtype} cannot travel (one of {sorted(DTYPES)})")
        arrays[k] = a
    order = sorted(arrays, key=lambda k: (_DTYPE_RANK[_DTYPE_NAMES[arrays[k].dtype]], k))
    head: dict[str, Any] = {"__metadata__": {"prunefl": metadata}}
    off = 0
    for k in order:
        a = arrays[k]
        head[k] = {"dtype": _DTYPE_NAMES[a.dtype], "shape": [int(s) for s in a.shape],
                   "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    text = json.dumps(head, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, [arrays[k] for k in order]


def _check_header_size(head: bytes) -> None:
    n = len(head) - 8
    if n > DEFAULT_LIMITS.max_header_bytes:
        raise ValueError(f"a container header of {n} bytes exceeds the default limit of "
                         f"{DEFAULT_LIMITS.max_header_bytes} (too large a model description or history?)")


def envelope(kind: MsgKind, header: dict[str, Any], tensors: dict[str, np.ndarray]) -> bytes:
    """The whole message: prefix, container header, tensor data (one copy of the data)."""
    head, arrays = container_layout(tensors, dumps(header))
    _check_header_size(head)
    crc = zlib.crc32(head)
    length = len(head)
    for a in arrays:
        crc = zlib.crc32(a.data.cast("B") if a.size else b"", crc)
        length += a.nbytes
    parts = [PREFIX.pack(MAGIC, PROTOCOL_VERSION, int(kind), 0, length, crc), head]
    parts += [a.data.cast("B") for a in arrays if a.size]
    return b"".join(parts)


def envelope_nbytes(kind: MsgKind, header: dict[str, Any], tensors: dict[str, np.ndarray]) -> int:
    """``len(envelope(kind, header, tensors))``, without building it."""
    head, arrays = container_layout(tensors, dumps(header))
    _check_header_size(head)
    return PREFIX.size + len(head) + sum(a.nbytes for a in arrays)


def common_header(kind: MsgKind, federation: str, sender: str, round_: int, mask_version: int,
            msg_id: str | None = None) -> dict[str, Any]:
    for name, what in ((federation, "federation"), (sender, "sender")):
        if not valid_id(name):
            raise ValueError(f"{what} {name!r} must be 1-64 characters of A-Z a-z 0-9 _ . -")
    for v, what in ((round_, "round"), (mask_version, "mask_version")):
        if not -1 <= int(v) <= MAX_ID:
            raise ValueError(f"{what} {v} is outside -1..{MAX_ID}")
    return {"kind": kind.name.lower(), "federation": federation, "sender": sender, "round": int(round_),
            "mask_version": int(mask_version), "msg_id": msg_id or uuid.uuid4().hex}


def read_prefix(data: bytes | bytearray | memoryview, limits: Limits) -> tuple[MsgKind, memoryview, int]:
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
    return read_prefix(data, limits)[0]


def container_header(body: memoryview, limits: Limits) -> dict[str, Any]:
    """The PruneFL header, after checking the safetensors header against ``limits``: every dtype, shape and offset
    is consistent and the tensors tile the data exactly, before any data is read."""
    if len(body) < 8:
        raise ProtocolError(f"a body of {len(body)} bytes is too short for a tensor container")
    (n,) = struct.unpack_from("<Q", body)
    if n > limits.max_header_bytes:
        raise ProtocolError(f"container header of {n} bytes exceeds the limit of {limits.max_header_bytes}")
    if n > len(body) - 8:
        raise ProtocolError(f"container header of {n} bytes does not fit the {len(body)}-byte body")
    meta = parse_json(bytes(body[8:8 + n]), "the container header")
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
        exact_keys(info, frozenset({"dtype", "shape", "data_offsets"}), f"tensor {show(name)}")
        dt, shape, off = info["dtype"], info["shape"], info["data_offsets"]
        if dt not in DTYPES:
            raise ProtocolError(f"tensor {show(name)}: dtype {show(dt)} is not one of {sorted(DTYPES)}")
        if not isinstance(shape, list) or len(shape) > 8 or not all(is_int(s) and 0 <= s <= MAX_ELEMENTS
                                                                    for s in shape):
            raise ProtocolError(f"tensor {show(name)}: shape {show(shape)} (at most 8 sizes in 0..{MAX_ELEMENTS})")
        if not (isinstance(off, list) and len(off) == 2 and all(is_int(o) for o in off)
                and 0 <= off[0] <= off[1] <= data_len):
            raise ProtocolError(f"tensor {show(name)}: data offsets {show(off)} outside the {data_len} data bytes")
        nbytes = math.prod(shape) * np.dtype(DTYPES[dt]).itemsize
        if nbytes != off[1] - off[0]:
            raise ProtocolError(f"tensor {show(name)}: {off[1] - off[0]} bytes for shape {shape} of {dt}")
        spans.append((off[0], off[1]))
    pos = 0
    for start, end in sorted(spans):
        if start != pos:
            raise ProtocolError("tensor data overlaps or leaves gaps")
        pos = end
    if pos != data_len:
        raise ProtocolError(f"tensors cover {pos} of the {data_len} data bytes")
    h = parse_json(md["prunefl"], "the message header")
    if not isinstance(h, dict):
        raise ProtocolError("the message header must be a JSON object")
    return h


class Tensors:
    """The message's tensors (each must be used exactly once) and its full-mask element budget."""

    def __init__(self, t: dict[str, np.ndarray], budget: int) -> None:
        self._t = t
        self._used: set[str] = set()
        self.budget = budget

    @classmethod
    def load(cls, body: memoryview) -> Tensors:
        """The tensors as read-only views into ``body`` (no copy), after :func:`container_header` has checked
        every dtype, shape and offset and that they tile the data; a view a hostile layout leaves unaligned is
        copied (aligned) instead."""
        (n,) = struct.unpack_from("<Q", body)
        meta = parse_json(bytes(body[8:8 + n]), "the container header")
        meta.pop("__metadata__", None)
        start = 8 + n
        t: dict[str, np.ndarray] = {}
        for name, info in meta.items():
            dt = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
            off0, off1 = info["data_offsets"]
            arr = np.frombuffer(body, dtype=dt, count=(off1 - off0) // dt.itemsize, offset=start + off0)
            arr = arr.reshape(info["shape"])
            t[name] = arr if arr.flags.aligned else arr.copy()
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

    def half_vector(self, name: str, what: str) -> np.ndarray:
        v = self.take(name, what)
        if v.dtype != np.float16 or v.ndim != 1:
            raise ProtocolError(f"{what}: {name} must be a float16 vector, got {v.dtype} {v.shape}")
        return v

    def all_used(self) -> None:
        extra = sorted(set(self._t) - self._used)
        if extra:
            raise ProtocolError(f"unexpected tensors {', '.join(show(x) for x in extra[:8])}")



_COMMON_ORDER = ("kind", "federation", "sender", "round", "mask_version", "msg_id")
COMMON_FIELDS = frozenset(_COMMON_ORDER)
_CHUNK_FIELDS = COMMON_FIELDS | {"index", "count", "total", "crc"}
_HEX = frozenset("0123456789abcdef")


def read_header(kind: MsgKind, h: dict[str, Any]) -> Header:
    for k in _COMMON_ORDER:
        if k not in h:
            raise ProtocolError(f"header: missing field {k!r}")
    if h["kind"] != kind.name.lower():
        raise ProtocolError(f"header kind {show(h['kind'])} does not match the envelope's {kind.name.lower()!r}")
    mid = h["msg_id"]
    if not isinstance(mid, str) or len(mid) != 32 or not set(mid) <= _HEX:
        raise ProtocolError(f"header: msg_id must be 32 lowercase hex digits, got {show(mid)}")
    return Header(kind, read_id(h, "federation", "header"), read_id(h, "sender", "header"),
                  read_int(h, "round", "header", -1, MAX_ID), read_int(h, "mask_version", "header", -1, MAX_ID), mid)


def encode_chunk(*, federation: str, sender: str, msg_id: str, index: int, count: int, total: int, crc: int,
                 data: bytes) -> bytes:
    """One CHUNK envelope (see :mod:`prunefl_common.protocol.chunks`, which builds and reassembles them)."""
    h = common_header(MsgKind.CHUNK, federation, sender, -1, -1, msg_id)
    h.update(index=int(index), count=int(count), total=int(total), crc=int(crc))
    return envelope(MsgKind.CHUNK, h, {"data": np.frombuffer(data, np.uint8)})


def _decode_chunk(data: bytes | bytearray | memoryview, limits: Limits) -> Chunk:
    kind, body, crc = read_prefix(data, limits)
    if kind != MsgKind.CHUNK:
        raise ProtocolError(f"a {kind.name} envelope is not a chunk")
    if zlib.crc32(body) != crc:
        raise ProtocolError("chunk checksum mismatch (corrupted in transit)")
    h = container_header(body, limits)
    header = read_header(kind, h)
    exact_keys(h, _CHUNK_FIELDS, "chunk header")
    total = read_int(h, "total", "chunk", 2, limits.max_message_bytes)
    count = read_int(h, "count", "chunk", 2, total)
    index = read_int(h, "index", "chunk", 0, count - 1)
    whole_crc = read_int(h, "crc", "chunk", 0, 2**32 - 1)
    t = Tensors.load(body)
    d = t.take("data", "chunk")
    t.all_used()
    if d.dtype != np.uint8 or d.ndim != 1 or not 1 <= d.size <= total:
        raise ProtocolError(f"chunk: data must be a uint8 vector of 1..{total} bytes, got {d.dtype} {d.shape}")
    return Chunk(header, index, count, total, whole_crc, d.tobytes())


def decode_chunk(data: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Chunk:
    """A CHUNK envelope, checked (the reassembler's input); :class:`ProtocolError` on anything else."""
    return guarded("a chunk", _decode_chunk, data, limits)

