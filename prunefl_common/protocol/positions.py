"""Index sets on the wire: a mask, or the added/removed positions of a mask change, as the cheaper of a bitmap
(``np.packbits`` of the flat mask) and delta-coded sorted flat indices (the first index, then the gaps, in the
narrowest unsigned type that holds the largest).

:func:`positions_nbytes` is the one byte-size rule: the size of what :func:`encode_positions` produces, which is
what the simulator counts and what the wire sends.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prunefl_common.protocol.fields import ProtocolError

__all__ = [  # what wire.py re-exports
    "positions_nbytes",
]

UINTS: tuple[type[np.unsignedinteger], ...] = (np.uint8, np.uint16, np.uint32, np.uint64)
UINT_DTYPES = frozenset(np.dtype(t) for t in UINTS)


def delta_code(idx: np.ndarray) -> np.ndarray:
    """First index, then the gaps, in the narrowest unsigned type holding the largest of them."""
    if idx.size == 0:
        return np.zeros(0, np.uint8)
    gaps = np.diff(idx, prepend=np.int64(0))
    top = int(gaps.max())
    return gaps.astype(next(t for t in UINTS if top <= np.iinfo(t).max))


def sorted_positions(idx: Any, size: int, what: str) -> np.ndarray:
    """``idx`` as int64, checked strictly increasing within 0..size-1 (the encoder's input contract)."""
    a = np.asarray(idx)
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"{what}: indices must be integers, got {a.dtype}")
    a = a.astype(np.int64).ravel()
    if a.size and (a[0] < 0 or a[-1] >= size or np.any(np.diff(a) <= 0)):
        raise ValueError(f"{what}: indices must be strictly increasing within 0..{size - 1}")
    return a


def encode_positions(idx: np.ndarray, size: int, flat: np.ndarray | None = None) -> tuple[str, np.ndarray]:
    """The cheaper (in bytes) of delta-coded ``idx`` and a bitmap of ``size`` positions; ties go to the bitmap."""
    coded = delta_code(idx)
    if coded.nbytes < (size + 7) // 8:
        return "delta", coded
    return "bitmap", bitmap(idx, size, flat)


def bitmap(idx: np.ndarray, size: int, flat: np.ndarray | None = None) -> np.ndarray:
    if flat is None:
        flat = np.zeros(size, bool)
        flat[idx] = True
    return np.packbits(flat)


def check_positions(enc: Any, arr: np.ndarray, size: int, what: str) -> None:
    """Sizes only, before anything is allocated: a bitmap is exactly ceil(size/8) bytes, indices at most size."""
    if enc == "bitmap":
        if arr.dtype != np.uint8 or arr.ndim != 1 or arr.size != (size + 7) // 8:
            raise ProtocolError(f"{what}: a bitmap of {size} positions is {(size + 7) // 8} uint8 bytes, got "
                                f"{arr.dtype} {arr.shape}")
    elif enc == "delta":
        if arr.dtype not in UINT_DTYPES or arr.ndim != 1 or arr.size > size:
            raise ProtocolError(f"{what}: delta-coded indices must be an unsigned vector of at most {size} "
                                f"entries, got {arr.dtype} {arr.shape}")
    else:
        raise ProtocolError(f"{what}: unknown position encoding {enc!r} (bitmap or delta)")


def bitmap_bits(arr: np.ndarray, size: int, what: str) -> np.ndarray:
    """The bool vector of a checked bitmap; its padding bits must be zero."""
    if size % 8 and int(arr[-1]) & ((1 << (8 - size % 8)) - 1):
        raise ProtocolError(f"{what}: bitmap padding bits (beyond position {size - 1}) are set")
    return np.unpackbits(arr, count=size).view(bool)


def delta_indices(arr: np.ndarray, size: int, what: str) -> np.ndarray:
    """int64 positions of checked delta-coded indices: strictly increasing, within 0..size-1."""
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.size > 1 and not np.all(arr[1:]):
        raise ProtocolError(f"{what}: indices are not strictly increasing (a zero gap)")
    # the sum of the gaps is the last index; exact in float64 below 2**53, so this also rules out int64 overflow
    if float(arr.sum(dtype=np.float64)) >= size:
        raise ProtocolError(f"{what}: indices run beyond position {size - 1}")
    idx = np.cumsum(arr, dtype=np.int64)  # one int64 array: no widened copy of the gaps first
    if idx[-1] >= size:
        raise ProtocolError(f"{what}: indices run beyond position {size - 1}")
    return idx


def decode_indices(enc: str, arr: np.ndarray, size: int, what: str) -> np.ndarray:
    if enc == "bitmap":
        return np.flatnonzero(bitmap_bits(arr, size, what)).astype(np.int64, copy=False)
    return delta_indices(arr, size, what)


def decode_mask(enc: str, arr: np.ndarray, size: int, what: str) -> np.ndarray:
    if enc == "bitmap":
        return bitmap_bits(arr, size, what)
    m = np.zeros(size, bool)
    m[delta_indices(arr, size, what)] = True
    return m




def positions_nbytes(idx: np.ndarray, size: int) -> int:
    """Bytes of the tensor :func:`encode_positions` makes for the sorted positions ``idx`` out of ``size``."""
    coded = delta_code(np.asarray(idx, np.int64).ravel())
    bitmap_bytes = (size + 7) // 8
    return coded.nbytes if coded.nbytes < bitmap_bytes else bitmap_bytes
