"""Peak resident memory of this process per phase of its work (start, task decode, model, training, importance,
initial pruning, result encode, state save), as the kernel counts it.

Linux keeps the process's resident high-water mark (``VmHWM`` in ``/proc/self/status``); writing ``5`` to
``/proc/self/clear_refs`` resets it to the current RSS. A phase resets it on entry and reads it on exit, so its
figure is the highest RSS reached inside it (nested phases report to both). Where ``/proc`` lacks either file
(another OS, a locked-down container) the phases are timed but report nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss_mib() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


class PhasePeaks:
    """``{phase: highest peak RSS in MiB seen in that phase}`` over the process's life."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self._usable = _STATUS.exists() and self._reset()
        self._depth = 0

    def _reset(self) -> bool:
        try:
            _CLEAR.write_text("5")
            return True
        except OSError as e:
            log.debug("peak RSS per phase unavailable: %s", e)
            return False

    def note(self, phase: str) -> None:
        """Record the high-water mark since the last reset under ``phase`` (without resetting)."""
        if not self._usable:
            return
        kib = _status_kib("VmHWM")
        if kib is not None:
            self.peaks[phase] = round(max(self.peaks.get(phase, 0.0), kib / 1024), 1)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if self._usable and self._depth == 0:
            self._reset()
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            self.note(name)


class HeapReturn:
    """Give freed heap memory back to the system, where the C library can (glibc): a device with 512 MB should not
    keep the peak of its last initial pruning resident for the rest of the run.

    glibc raises its mmap threshold to the size of the last large block freed, so later blocks of that size (a
    model's weights, gradient sums) come from the heap and stay resident after ``free``; a fixed threshold keeps
    them mmapped (returned at once), and ``malloc_trim`` returns what is free on the heap. Elsewhere: no-ops.
    """

    M_MMAP_THRESHOLD = -3

    def __init__(self, mmap_threshold: int = 1 << 20) -> None:
        self._libc = None
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            if libc.mallopt(self.M_MMAP_THRESHOLD, int(mmap_threshold)) == 1:
                self._libc = libc
        except (OSError, AttributeError) as e:
            log.debug("heap return unavailable: %s", e)

    def trim(self) -> None:
        if self._libc is not None:
            self._libc.malloc_trim(0)
