"""Snapshots of the traced heap near its peak, for :func:`.allocation_analyzer.memory_analysis`.
No pytest here."""

from __future__ import annotations

import sys
import tracemalloc
from types import FrameType
from typing import Optional

__all__ = ["PeakWatcher"]

_PEAK_STEP, _PEAK_MIN_STEP = 1.10, 256 * 1024  # a new peak snapshot at +10% and +256 KiB over the last one


def _next_level(level: int) -> int:
    return max(int(level * _PEAK_STEP), level + _PEAK_MIN_STEP)


class PeakWatcher:
    """Snapshots the traced heap while it climbs, so the sites of (nearly) its peak can be named.

    A profile hook (``sys.setprofile``) reads the traced total at every call and return in this
    thread and takes a snapshot when it passed the level of the last snapshot by 10% and 256 KiB;
    only the last one is kept. Not a polling thread: a thread needs the GIL, which the code under
    test holds while it fills a block, and a 5 ms poller missed a 30 MiB ``bytearray`` alive for a
    moment in 18 of 20 runs; the hook saw it every time (a return event comes while the returning
    frame's locals, and the caller's, are still alive). Costs: the hook makes call-heavy code about
    5x slower on top of tracing; snapshots grow by 10% or more each, so together they cost at most
    about 11 times the last one. Other threads' allocations count, but are only looked at when this
    thread calls or returns. If a snapshot's own memory is traced (it is not on CPython 3.11), it
    is taken off the levels and the peak.
    """

    def __init__(self, start: int) -> None:
        self.snapshot: Optional[tracemalloc.Snapshot] = None
        self.level = start  # traced bytes when the kept snapshot was taken
        self._held = 0  # traced bytes of the kept snapshot itself
        self._peak = start  # highest traced total seen, our snapshots left out
        self._next = _next_level(start)
        self._installed = False

    def install(self) -> None:
        """Start watching, unless a profiler (cProfile, a debugger) holds the hook: it stays theirs."""
        if sys.getprofile() is None:
            sys.setprofile(self._check)
            self._installed = True

    def _check(self, frame: FrameType, event: str, arg: object) -> None:
        if tracemalloc.get_traced_memory()[0] > self._next:
            self._take()

    def _take(self) -> None:
        try:
            self._peak = max(self._peak, tracemalloc.get_traced_memory()[1] - self._held)
            self.snapshot, self._held = None, 0  # free the last one first
            level = tracemalloc.get_traced_memory()[0]
            self.snapshot = tracemalloc.take_snapshot()
            self._held = tracemalloc.get_traced_memory()[0] - level
            tracemalloc.reset_peak()  # forget the transient peak of taking the snapshot
            self.level, self._next = level, _next_level(level) + self._held
        except Exception:  # tracing stopped by the code under test, no memory left: stop watching
            self.uninstall()

    def peak(self) -> int:
        """The highest traced total so far, our snapshots left out."""
        return max(self._peak, tracemalloc.get_traced_memory()[1] - self._held)

    def uninstall(self) -> None:
        if self._installed and sys.getprofile() == self._check:  # the code under test may have replaced it
            sys.setprofile(None)
        self._installed = False
