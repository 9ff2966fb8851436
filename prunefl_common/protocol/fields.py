"""The bottom of the wire format: limits, :class:`ProtocolError` and the readers of JSON header fields.

Every reader checks one field's type and range and raises :class:`ProtocolError` saying which field of what is
wrong; nothing here allocates more than the field itself.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prunefl_common.protocol.topics import valid_id

__all__ = [  # what wire.py re-exports
    "DEFAULT_LIMITS", "MASK_ELEMENTS_PER_BYTE", "MAX_ELEMENTS", "MAX_ID", "MAX_INFO_BYTES", "MAX_PARAMS",
    "MAX_REASON_CHARS", "Limits", "ProtocolError",
]

log = logging.getLogger(__name__)

MASK_ELEMENTS_PER_BYTE = 64  # full masks of a message: at most this many elements per body byte
MAX_ELEMENTS = 2**34  # elements of one tensor, mask or parameter
MAX_PARAMS = 4096  # parameter indices 0..4095; at most this many value / importance arrays
MAX_ID = 2**62  # round, mask version
MAX_INFO_BYTES = 65536  # a status's info object, as JSON
MAX_REASON_CHARS = 4096


class ProtocolError(ValueError):
    """Bytes that are not a well-formed message of this protocol; the message says what is wrong."""


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts. ``shapes`` (every parameter's shape, the model's order) and ``prunable`` (the
    parameters that carry masks), when set, are the model messages must fit: a decoder checks every declared mask,
    mask change, value vector and importance array against them before it allocates anything for it."""

    max_message_bytes: int = 256 * 2**20  # a whole (reassembled) message
    max_header_bytes: int = 1 * 2**20  # the JSON header(s)
    max_tensors: int = 4096
    shapes: tuple[tuple[int, ...], ...] | None = None
    prunable: frozenset[int] | None = None

    @classmethod
    def for_model(cls, shapes: Sequence[Sequence[int]], prunable: Iterable[int], receiver: str,
                  max_message_bytes: int | None = None) -> Limits:
        """Limits for messages about this model. The message limit (unless given) is what the largest honest
        message can be, x 1.25, + 1 MiB of headers: for an edge (``receiver="edge"``: it receives tasks) the dense
        values (4 bytes a parameter) and a mask change's two bitmaps (1/4 byte a weight); for the coordinator
        (results) dense values plus dense importance plus a mask bitmap (8 1/8 bytes a parameter)."""
        shapes_t = tuple(tuple(int(d) for d in s) for s in shapes)
        pr = frozenset(int(p) for p in prunable)
        n = sum(math.prod(s) for s in shapes_t)
        w = sum(math.prod(shapes_t[p]) for p in pr)
        if receiver == "edge":
            need = 4 * n + w // 4
        elif receiver == "coordinator":
            need = 8 * n + w // 8
        else:
            raise ValueError(f"receiver must be 'edge' or 'coordinator', got {receiver!r}")
        derived = need + need // 4 + 2**20
        return cls(max_message_bytes=max_message_bytes or derived, max_tensors=min(4096, 3 * len(shapes_t) + 8),
                   shapes=shapes_t, prunable=pr)

    def reassembly_budget(self, senders: int = 1) -> int:
        """Bytes a receiver holds for partial chunked messages: two messages' worth per sender it expects."""
        return 2 * self.max_message_bytes * max(1, senders)


DEFAULT_LIMITS = Limits()


# ---- JSON ------------------------------------------------------------------------------------------------
def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise ProtocolError(f"a JSON object repeats a key ({sorted(k for k, _ in pairs)[:8]})")
    return d


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"JSON constant {name} is not allowed (non-finite numbers travel as null)")


def parse_json(text: bytes | str, what: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except ProtocolError as e:
        raise ProtocolError(f"{what}: {e}") from None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError, JSONDecodeError, too many digits, nesting
        raise ProtocolError(f"{what} is not valid JSON: {type(e).__name__}: {str(e)[:200]}") from None


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def exact_keys(d: Any, keys: set[str] | frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    if set(d) != keys:
        missing, unknown = sorted(keys - set(d)), [show(k) for k in sorted(set(d) - keys)[:8]]
        parts = [f"missing fields {missing}"] if missing else []
        parts += [f"unknown fields {unknown}"] if unknown else []
        raise ProtocolError(f"{what}: " + "; ".join(parts))
    return d


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def read_int(d: dict[str, Any], key: str, what: str, lo: int, hi: int) -> int:
    v = d[key]
    if not is_int(v) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be an integer in {lo}..{hi}, got {show(v)}")
    return int(v)


def read_float(d: dict[str, Any], key: str, what: str, lo: float = -math.inf, hi: float = math.inf,
           null_is_nan: bool = False) -> float:
    v = d[key]
    if v is None and null_is_nan:
        return float("nan")
    if not is_num(v) or not math.isfinite(v) or not lo <= v <= hi:
        raise ProtocolError(f"{what}: {key} must be a finite number in [{lo}, {hi}]"
                            f"{' or null' if null_is_nan else ''}, got {show(v)}")
    return float(v)


def read_bool(d: dict[str, Any], key: str, what: str) -> bool:
    v = d[key]
    if not isinstance(v, bool):
        raise ProtocolError(f"{what}: {key} must be true or false, got {show(v)}")
    return v


def read_str(d: dict[str, Any], key: str, what: str, max_len: int) -> str:
    v = d[key]
    if not isinstance(v, str) or len(v) > max_len:
        raise ProtocolError(f"{what}: {key} must be a string of at most {max_len} characters, got {show(v)}")
    return v


def read_id(d: dict[str, Any], key: str, what: str) -> str:
    v = d[key]
    if not valid_id(v):
        raise ProtocolError(f"{what}: {key} must be 1-64 characters of A-Z a-z 0-9 _ . -, got {show(v)}")
    return str(v)


def show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def null_nan(x: float) -> float | None:
    """Non-finite floats travel as null (and come back as NaN)."""
    return float(x) if math.isfinite(x) else None




def read_list(v: Any, what: str, max_len: int) -> list[Any]:
    if not isinstance(v, list) or len(v) > max_len:
        raise ProtocolError(f"{what} must be a list of at most {max_len} entries")
    return v


def guarded(what: str, fn: Any, *args: Any) -> Any:
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
