"""Messages larger than the broker's packet limit travel as CHUNK envelopes and are put back together here.

A chunk carries the whole message's id, its index, the chunk count, the total length and the whole message's
CRC-32. The reassembler keeps partial messages per (sender, message id), ignores repeated chunks, drops a
partial message after ``timeout_s`` and bounds what it holds (bytes and messages: the oldest partial message is
evicted first), so a flood of chunks cannot exhaust memory.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

from prunefl_edge.protocol.wire import PREFIX, Limits, MsgKind, ProtocolError, decode, encode_chunk

log = logging.getLogger(__name__)

CHUNK_OVERHEAD = 1024  # envelope prefix + container header + JSON header of a chunk, rounded up


def split_message(message: bytes, max_payload: int, *, federation: str, sender: str) -> list[bytes]:
    """``[message]`` if it fits in ``max_payload`` bytes, else CHUNK envelopes of at most ``max_payload`` each."""
    if max_payload < 4 * CHUNK_OVERHEAD:
        raise ValueError(f"max_payload {max_payload} is too small (>= {4 * CHUNK_OVERHEAD} bytes)")
    if len(message) <= max_payload:
        return [message]
    step = max_payload - CHUNK_OVERHEAD
    count = -(-len(message) // step)
    mid, crc = uuid.uuid4().hex, zlib.crc32(message)
    out = [encode_chunk(federation=federation, sender=sender, msg_id=mid, index=i, count=count, total=len(message),
                        crc=crc, data=message[i * step:(i + 1) * step]) for i in range(count)]
    assert all(len(c) <= max_payload for c in out)
    return out


@dataclass
class _Partial:
    count: int
    total: int
    crc: int
    first_seen: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    def __init__(self, limits: Limits | None = None, timeout_s: float = 120.0, max_pending_bytes: int = 512 * 2**20,
                 max_pending_messages: int = 64) -> None:
        self.limits = limits or Limits()
        self.timeout_s = timeout_s
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_messages = max_pending_messages
        self._pending: OrderedDict[tuple[str, str], _Partial] = OrderedDict()
        self._done: OrderedDict[tuple[str, str], None] = OrderedDict()  # late duplicates of these are ignored

    @property
    def pending_bytes(self) -> int:
        return sum(p.size for p in self._pending.values())

    def expire(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        gone = [k for k, p in self._pending.items() if now - p.first_seen > self.timeout_s]
        for k in gone:
            log.warning("dropped an incomplete message %s from %s after %.0f s (%d of %d chunks)", k[1], k[0],
                        self.timeout_s, len(self._pending[k].parts), self._pending[k].count)
            del self._pending[k]
        return [k[1] for k in gone]

    def feed(self, data: bytes, now: float | None = None) -> bytes | None:
        """The whole message when ``data`` completes one (or is one), else None; ProtocolError on bad chunks."""
        now = time.monotonic() if now is None else now
        self.expire(now)
        if len(data) < PREFIX.size:
            raise ProtocolError(f"{len(data)} bytes: shorter than an envelope")
        if data[5] != MsgKind.CHUNK:
            return data
        msg = decode(data, self.limits)
        h = msg.fields or {}
        try:
            index, count, total, crc = (int(h["index"]), int(h["count"]), int(h["total"]), int(h["crc"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ProtocolError(f"chunk: bad header ({e})") from None
        if any(isinstance(h[k], bool) or not isinstance(h[k], int) for k in ("index", "count", "total", "crc")):
            raise ProtocolError("chunk: index, count, total and crc must be integers")
        if not 0 < total <= self.limits.max_message_bytes or not 1 < count <= total or not 0 <= index < count:
            raise ProtocolError(f"chunk: index {index} of {count}, total {total} bytes: out of range or over the limit")
        if not 0 <= crc < 2**32:
            raise ProtocolError("chunk: crc out of range")
        piece = msg.body
        key = (msg.header.sender, msg.header.msg_id)
        if key in self._done:
            return None
        part = self._pending.get(key)
        if part is None:
            part = _Partial(count, total, crc, now)
            self._pending[key] = part
        elif (part.count, part.total, part.crc) != (count, total, crc):
            raise ProtocolError(f"chunk {index} of {msg.header.msg_id} disagrees with earlier chunks")
        if index in part.parts:
            return None
        if part.size + len(piece) > total:
            del self._pending[key]
            raise ProtocolError(f"chunks of {msg.header.msg_id} exceed the declared {total} bytes")
        part.parts[index] = piece
        part.size += len(piece)
        if len(part.parts) == count:
            del self._pending[key]
            self._done[key] = None
            while len(self._done) > 1024:
                self._done.popitem(last=False)
            whole = b"".join(part.parts[i] for i in range(count))
            if len(whole) != total or zlib.crc32(whole) != crc:
                raise ProtocolError(f"reassembled {msg.header.msg_id}: length or checksum mismatch")
            return whole
        while len(self._pending) > self.max_pending_messages or self.pending_bytes > self.max_pending_bytes:
            old, dropped = self._pending.popitem(last=False)
            log.warning("too many partial messages: dropped %s from %s (%d bytes)", old[1], old[0], dropped.size)
        return None
