"""Messages larger than the broker's packet limit travel as CHUNK envelopes and are put back together here.

A chunk is an ordinary envelope of kind CHUNK whose header carries the whole message's id (a fresh uuid, not the
message's own ``msg_id``), its ``index``, the chunk ``count``, the ``total`` length and the whole message's
``crc`` (CRC-32), and whose body is one uint8 tensor ``data``: the slice. The reassembler keeps partial messages
per (sender, id), ignores repeated chunks (also late repeats of a message it has completed), drops a partial
message ``timeout_s`` after its first chunk and bounds what it holds (bytes and messages: the oldest partial
message is evicted first, with a warning), so a flood of chunks cannot exhaust memory.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field

from prunefl_common.protocol.envelope import MsgKind, decode_chunk, encode_chunk, envelope_kind
from prunefl_common.protocol.fields import DEFAULT_LIMITS, Limits, ProtocolError
from prunefl_common.protocol.recent import RecentIds

log = logging.getLogger(__name__)

MIN_PAYLOAD = 1024  # the smallest max_payload split_message accepts
CHUNK_BOOKKEEPING = 128  # bytes counted per held chunk beside its slice (so 1-byte chunks cannot hide their cost)
DONE_MEMORY = 1024  # completed (sender, id) pairs remembered, so late duplicate chunks are ignored


def chunk_overhead(total: int, *, federation: str, sender: str) -> int:
    """At most how many bytes of any chunk of a ``total``-byte message are not its slice (prefix, container
    header, JSON header). About 330 bytes plus the lengths of the two ids."""
    probe = encode_chunk(federation=federation, sender=sender, msg_id="0" * 32, index=total, count=total, total=total,
                         crc=2**32 - 1, data=b"")
    # the slice's length appears twice (shape, end offset) where the probe has "0"; the container pads its header
    # to a multiple of 8 bytes
    return len(probe) + 2 * len(str(total)) + 7


def split_message(message: bytes, max_payload: int, *, federation: str, sender: str) -> list[bytes]:
    """``[message]`` if it is at most ``max_payload`` bytes, else CHUNK envelopes of at most ``max_payload`` bytes
    each (ValueError if ``max_payload`` < 1024)."""
    if max_payload < MIN_PAYLOAD:
        raise ValueError(f"max_payload {max_payload} is too small (at least {MIN_PAYLOAD} bytes)")
    if len(message) <= max_payload:
        return [message]
    total = len(message)
    step = max_payload - chunk_overhead(total, federation=federation, sender=sender)
    if step < 1:
        raise ValueError(f"max_payload {max_payload} leaves no room for data beside a chunk's headers")
    count = -(-total // step)
    mid, crc = uuid.uuid4().hex, zlib.crc32(message)
    view = memoryview(message)
    out = [encode_chunk(federation=federation, sender=sender, msg_id=mid, index=i, count=count, total=total, crc=crc,
                        data=view[i * step:(i + 1) * step]) for i in range(count)]
    too_big = [len(c) for c in out if len(c) > max_payload]
    if too_big:  # chunk_overhead is an upper bound; this would be a bug in it
        raise RuntimeError(f"chunks of {max(too_big)} bytes exceed max_payload {max_payload}")
    return out


@dataclass
class _Partial:
    count: int
    total: int
    crc: int
    first_seen: float
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0  # slice bytes held
    cost: int = 0  # slice bytes + bookkeeping, what pending_bytes counts


class Reassembler:
    """Puts chunked messages back together; non-chunk envelopes pass through. Not thread-safe: feed it from one
    thread (the MQTT client's callback thread)."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS, timeout_s: float = 120.0, max_pending_bytes: int = 512 * 2**20,
                 max_pending_messages: int = 64, max_pending_per_sender: int | None = None) -> None:
        self.limits = limits
        self.timeout_s = timeout_s
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_messages = max_pending_messages
        # partial messages one sender may hold: a sender flooding chunks of new messages evicts its own oldest
        # partial messages, not other senders'
        self.max_pending_per_sender = max_pending_per_sender
        self.evicted = 0  # partial messages dropped for the limits
        self.expired = 0  # partial messages dropped for the timeout
        self._pending: OrderedDict[tuple[str, str], _Partial] = OrderedDict()  # oldest first
        self._done = RecentIds(DONE_MEMORY)
        self._bytes = 0

    @property
    def pending_bytes(self) -> int:
        """Bytes held by partial messages: their slices plus a fixed bookkeeping cost per chunk."""
        return self._bytes

    @property
    def pending_messages(self) -> int:
        return len(self._pending)

    def _drop(self, key: tuple[str, str]) -> _Partial:
        part = self._pending.pop(key)
        self._bytes -= part.cost
        return part

    def expire(self, now: float | None = None) -> list[str]:
        """Drop partial messages older than ``timeout_s`` (since their first chunk); their message ids."""
        now = time.monotonic() if now is None else now
        gone = [k for k, p in self._pending.items() if now - p.first_seen > self.timeout_s]
        for k in gone:
            p = self._drop(k)
            self.expired += 1
            log.warning("dropped incomplete message %s from %s after %.0f s: %d of %d chunks arrived", k[1], k[0],
                        self.timeout_s, len(p.parts), p.count)
        return [k[1] for k in gone]

    def feed(self, data: bytes, now: float | None = None) -> bytes | None:
        """The whole message when ``data`` completes one (or ``data`` itself if it is not a chunk, after a cheap
        prefix check), else None. ProtocolError on a bad envelope or chunk."""
        now = time.monotonic() if now is None else now
        self.expire(now)
        if envelope_kind(data, self.limits) != MsgKind.CHUNK:
            return data
        c = decode_chunk(data, self.limits)
        key = (c.header.sender, c.header.msg_id)
        if key in self._done:
            return None  # a late repeat of a message already returned
        if c.total + c.count * CHUNK_BOOKKEEPING > self.max_pending_bytes:
            raise ProtocolError(f"chunked message {c.header.msg_id} of {c.total} bytes is larger than the "
                                f"reassembly budget of {self.max_pending_bytes}")
        part = self._pending.get(key)
        if part is None:
            own = [k for k in self._pending if k[0] == key[0]] if self.max_pending_per_sender else []
            for old in own[:max(0, len(own) - (self.max_pending_per_sender or 0) + 1)]:
                dropped = self._drop(old)
                self.evicted += 1
                log.warning("%s holds %d partial messages (at most %d): evicted its oldest, %s (%d of %d chunks)",
                            key[0], len(own), self.max_pending_per_sender, old[1], len(dropped.parts), dropped.count)
            part = self._pending[key] = _Partial(c.count, c.total, c.crc, now)
        elif (part.count, part.total, part.crc) != (c.count, c.total, c.crc):
            raise ProtocolError(f"chunk {c.index} of {c.header.msg_id} from {c.header.sender} says {c.count} chunks, "
                                f"{c.total} bytes, crc {c.crc:#x}; earlier ones said {part.count}, {part.total}, "
                                f"{part.crc:#x}")
        if c.index in part.parts:
            return None  # a repeat
        if part.size + len(c.data) > part.total:
            self._drop(key)
            raise ProtocolError(f"chunks of {c.header.msg_id} from {c.header.sender} exceed the declared {part.total} "
                                "bytes; dropped the partial message")
        part.parts[c.index] = c.data
        part.size += len(c.data)
        part.cost += len(c.data) + CHUNK_BOOKKEEPING
        self._bytes += len(c.data) + CHUNK_BOOKKEEPING
        if len(part.parts) == part.count:
            self._drop(key)
            self._done.add(key)
            whole = b"".join(part.parts[i] for i in range(part.count))
            if len(whole) != part.total or zlib.crc32(whole) != part.crc:
                raise ProtocolError(f"reassembled {c.header.msg_id} from {c.header.sender}: {len(whole)} bytes of "
                                    f"{part.total}, or a checksum mismatch")
            return whole
        while len(self._pending) > self.max_pending_messages or self._bytes > self.max_pending_bytes:
            old = next(iter(self._pending))
            dropped = self._drop(old)
            self.evicted += 1
            log.warning("reassembly limits (%d messages, %d bytes): evicted the oldest partial message %s from %s "
                        "(%d of %d chunks)", self.max_pending_messages, self.max_pending_bytes, old[1], old[0],
                        len(dropped.parts), dropped.count)
        return None
