"""Leak verdicts: from a test's repeated measurements to leak / clean. No pytest here.

The plugin screens every test cheaply (retained RSS after trimming the allocator,
malloc'd bytes, allocated blocks, open fds); a test that crosses a screening
threshold is a *suspect*. A suspect is re-run several times and this module fits
the growth per run across those runs: a leak keeps growing run after run, while
an import, a warm-up cache or a module fixture grows once and then stops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import median
from typing import NamedTuple, Optional, Sequence

from .units import format_size

__all__ = [
    "SCREENING",
    "AllocationSite",
    "LeakReport",
    "LeftBehind",
    "RunSample",
    "Screening",
    "decide",
    "judge_runs",
    "pressure_score",
    "quiet",
    "session_pressure",
    "survives_full_collection",
]

KIB = 1024
MIB = 1024 * KIB


class RunSample(NamedTuple):
    """Process state after one run of a test (absolute values, not deltas).

    ``heap``: tracemalloc's traced bytes (``None`` when not tracing); ``malloc``:
    glibc's bytes in use (``None`` elsewhere); ``peak``: that run's peak RSS above its start.
    """

    rss: int
    blocks: int
    fds: Optional[int]
    heap: Optional[int]
    malloc: Optional[int]
    peak: int


@dataclass(frozen=True)
class AllocationSite:
    """Where memory grew during the confirmation runs (tracemalloc), per run."""

    where: str
    size: int
    count: int


class LeftBehind(NamedTuple):
    """What one run left allocated, as screening reads it (``None``: not measured here).
    ``malloc_in_call``: the C heap bytes kept by the call phase alone (the test's body)."""

    rss: int
    malloc: Optional[int]
    blocks: int
    heap: Optional[int]
    fds: Optional[int]
    malloc_in_call: Optional[int] = None


@dataclass(frozen=True)
class Screening:
    """The thresholds that make a test a suspect (one run's growth) and a leak (growth per run)."""

    rss: int = 1 * MIB
    malloc: int = 4 * KIB
    blocks: int = 256
    heap: int = 4 * KIB
    fds: int = 1
    #: C heap kept by the test's body (its call phase) and by the whole run alike. pytest keeps
    #: ~1 KiB of C heap around every test on its own (reports, the environment's
    #: PYTEST_CURRENT_TEST, a unittest item's attributes), which is why the whole run's bar is
    #: 4 KiB; inside the call phase that is gone, so a 1 KiB leak shows there.
    malloc_in_call: int = 1 * KIB

    def small(self, left: LeftBehind) -> bool:
        """A suspect by a small growth only: below what one re-run can confirm of C heap
        (:data:`FLOORS`), under 1 MiB of RSS, 64 KiB of heap and :data:`FREE_LIST_BLOCKS`
        blocks, no fds."""
        return (
            left.rss < self.rss
            and (left.malloc is None or left.malloc < FLOORS["malloc"])
            and left.blocks < FREE_LIST_BLOCKS
            and (left.heap is None or left.heap < 64 * KIB)
            and not left.fds
        )

    def by_call_malloc(self, left: LeftBehind) -> bool:
        """Whether its call phase and its whole run both kept :attr:`malloc_in_call` of C heap.
        A suspect by that must have its re-runs watched for C heap growth of that size, or what
        made it a suspect would pass for quiet."""
        return (
            left.malloc is not None
            and left.malloc_in_call is not None
            and min(left.malloc, left.malloc_in_call) >= self.malloc_in_call
        )

    def _by_other(self, left: LeftBehind) -> bool:
        return (
            left.blocks >= self.blocks
            or left.rss >= self.rss
            or (left.malloc is not None and left.malloc >= self.malloc)
            or (left.heap is not None and left.heap >= self.heap)
            or (left.fds is not None and left.fds >= self.fds)
        )

    def suspect(self, left: LeftBehind) -> bool:
        return self._by_other(left) or self.by_call_malloc(left)


SCREENING = Screening()
#: blocks one run can add without keeping anything: CPython keeps up to 2,000 freed tuples of
#: each small size for reuse (and floats, lists, dicts), and they count as allocated until a
#: full collection empties those free lists
FREE_LIST_BLOCKS = 4096


@dataclass(frozen=True)
class LeakReport:
    """The verdict on one suspect after its confirmation runs."""

    confirmed: bool
    runs: int
    rss_per_run: int
    heap_per_run: Optional[int]
    malloc_per_run: Optional[int]
    blocks_per_run: float
    fds_per_run: float
    indicators: tuple[str, ...] = ()
    pressure: float = 0.0
    sites: tuple[AllocationSite, ...] = ()
    note: str = ""

    @property
    def bytes_per_run(self) -> int:
        """Bytes kept per run: the largest of the Python heap's, the C heap's and RSS's growth
        (each sees what the others miss: native buffers, small objects in arenas). RSS grows by
        whole pages, and under tracing tracemalloc's own tables add to it: below its floor it
        counts only where neither heap is read or it exceeds them by 64 KiB (memory only RSS
        sees, mmap'd say); else a 1 KiB/run leak read as 4.0 KiB/run. Likewise the C heap,
        where the Python heap is read too: re-running moves it by ~1-2 KiB a run on its own
        (pytest's per-run objects, tracemalloc's tables), so it counts only where it exceeds the
        Python heap by :data:`NATIVE_MARGIN` (native buffers, raw malloc); else a 1 KiB/run
        Python leak read as 2.5 KiB/run. (A native part under that margin, beside a Python leak,
        is left out of the size: only the report and the pressure score read it.)"""
        heap, malloc = self.heap_per_run, self.malloc_per_run
        if heap is not None and malloc is not None and malloc - heap < NATIVE_MARGIN:
            malloc = None
        finer = [value for value in (heap, malloc) if value is not None]
        finest = max(finer, default=0)
        coarse = self.rss_per_run >= FLOORS["rss"] or not finer or self.rss_per_run - finest >= 64 * KIB
        return max(self.rss_per_run if coarse else 0, finest, 0)

    def summary(self) -> str:
        """One line: how much per run, of what, confirmed by how many runs."""
        parts = [f"{format_size(self.bytes_per_run)}/run"]
        if self.blocks_per_run >= 1:
            parts.append(f"{self.blocks_per_run:,.0f} objects/run")
        if self.fds_per_run >= 1:
            parts.append(f"{self.fds_per_run:g} fds/run")
        text = f"leaks {', '.join(parts)} over {self.runs} runs"
        if self.note:
            text += f"; {self.note}"
        return text


#: how far the C heap's growth per run must exceed the Python heap's to count in the leak's size
NATIVE_MARGIN = 4 * KIB
#: growth per run that counts, per signal; below it a step is noise
FLOORS: dict[str, float] = {"heap": 512, "malloc": 64 * KIB, "blocks": 16, "rss": 512 * KIB, "fds": 1}
MIN_STEPS = 3


def _steps(samples: Sequence[RunSample], signal: str) -> Optional[list[int]]:
    values = [getattr(sample, signal) for sample in samples]
    if any(value is None for value in values):
        return None
    return [b - a for a, b in zip(values, values[1:])]


def _leaking(steps: Optional[list[int]], floor: float) -> bool:
    """Persistent, repeating growth: every step (one forgiven from four on) at least the floor
    and at least a quarter of the typical step. A cache or an import grows once and stops; a
    cache filling up, or objects made before tracing started being replaced by traced ones,
    grows by less and less, which fails the second test."""
    if not steps or len(steps) < MIN_STEPS:
        return False
    typical = median(steps)
    bar = max(floor, typical / 4)
    rising = sum(1 for step in steps if step >= bar)
    return rising >= len(steps) - (1 if len(steps) >= 4 else 0) and typical >= floor


def _confirmed(steps: dict[str, Optional[list[int]]], heap_needs_witness: bool) -> bool:
    """Some signal grows persistently. With tracemalloc started just for the re-runs, objects
    made before it are untraced: replacing them (a full bounded cache) looks like heap
    growth. A real Python leak also adds blocks or C heap bytes, so then the heap needs
    that witness: blocks up in every step, or malloc'd bytes at least half the heap's."""
    others = any(_leaking(values, FLOORS[signal]) for signal, values in steps.items() if signal != "heap")
    if others:
        return True
    if not _leaking(steps["heap"], FLOORS["heap"]):
        return False
    if not heap_needs_witness:
        return True
    heap, blocks, malloc = steps["heap"] or [], steps["blocks"] or [], steps["malloc"]
    blocks_grow = bool(blocks) and all(step >= 1 for step in blocks)
    malloc_grows = malloc is not None and bool(malloc) and median(malloc) >= median(heap) / 2
    return blocks_grow or malloc_grows


def decide(samples: Sequence[RunSample], max_steps: int, *, heap_needs_witness: bool = False) -> Optional[bool]:
    """``True`` leak, ``False`` clean, ``None`` run again. ``samples``: state after a warm-up
    re-run, then after each measured re-run (all after ``gc.collect()`` and an allocator trim)."""
    steps = {signal: _steps(samples, signal) for signal in FLOORS}
    if _confirmed(steps, heap_needs_witness):
        return True
    count = len(samples) - 1
    if count >= max_steps:
        return False
    # Nothing above its floor in the last two steps, or in the first one: a leak grows in
    # (nearly) every step, so a first step with nothing to show is enough to clear.
    recent = 1 if count == 1 else 2
    if count >= 1 and all(values is None or max(values[-recent:]) < FLOORS[signal] for signal, values in steps.items()):
        return False
    return None


#: below these in every step, a suspect holds still: no need to look closer. Blocks: a re-run
#: moves a few on its own account (1-4 for a clean test in a pytester session), and a leak of a
#: dozen small objects per run reads +11 or so (5 less while samples took objects in the free
#: lists for their own, when the bar was 4: either way a quick look passes on 9 or more); the
#: traced heap can still confirm a leak that passes it: a low bar costs traced re-runs, a
#: high one misses leaks. RSS: the floor, as a step below it confirms nothing.
#: C heap: a re-run moves it by up to ~1 KiB on its own account (seen in pytester sessions).
QUIET: dict[str, float] = {
    "malloc": 4 * KIB,
    "blocks": 8,
    "rss": FLOORS["rss"],
    "fds": 1,
    "heap": FLOORS["heap"],  # when tracing
}


def quiet(samples: Sequence[RunSample], *, malloc_bar: Optional[float] = None) -> bool:
    """Nothing grew in any step by as much as :data:`QUIET` says (the heap: when traced).
    ``malloc_bar``: a lower C heap bar, for a suspect by what its call phase kept
    (:meth:`Screening.by_call_malloc`): what made it a suspect must not pass for quiet."""
    bars = QUIET if malloc_bar is None else {**QUIET, "malloc": malloc_bar}
    for signal, bar in bars.items():
        steps = _steps(samples, signal)
        if steps and max(steps) >= bar:
            return False
    return True


def survives_full_collection(warm: RunSample, frozen: RunSample, collected: RunSample) -> bool:
    """Whether the growth from ``warm`` to ``frozen``, sampled with the older objects frozen out
    of the cycle collector, is still there after a full collection (``collected``, the same
    state): no signal gave back more than a quarter of it, or than a :data:`QUIET` step. Older
    objects in cycles that the re-runs orphaned (a bounded buffer pushing its oldest out) are
    only freed there; a leak keeps what it grew."""
    for signal, step in QUIET.items():
        before, grown, after = getattr(warm, signal), getattr(frozen, signal), getattr(collected, signal)
        if (
            before is not None
            and grown is not None
            and after is not None
            and grown - after > max(step, (grown - before) / 4)
        ):
            return False
    return True


def _per_run(steps: Optional[list[int]]) -> Optional[float]:
    return None if steps is None else (max(0.0, float(median(steps))) if steps else 0.0)


def judge_runs(
    samples: Sequence[RunSample],
    *,
    runs: int,
    first_run_rss: int,
    traced: bool,
    sites: Sequence[AllocationSite] = (),
    heap_needs_witness: bool = False,
) -> LeakReport:
    """The report on a suspect from its confirmation samples (see :func:`decide`).

    ``first_run_rss``: what the first run retained (a large one-off is worth saying);
    ``traced``: whether tracemalloc watched the re-runs (if so and only RSS grew, the
    growth is native memory tracemalloc cannot see, and the report says so)."""
    steps = {signal: _steps(samples, signal) for signal in FLOORS}
    confirmed = _confirmed(steps, heap_needs_witness)
    rss = _per_run(steps["rss"]) or 0.0
    heap = _per_run(steps["heap"])
    malloc = _per_run(steps["malloc"])
    report = LeakReport(
        confirmed=confirmed,
        runs=runs,
        rss_per_run=round(rss),
        heap_per_run=None if heap is None else round(heap),
        malloc_per_run=None if malloc is None else round(malloc),
        blocks_per_run=_per_run(steps["blocks"]) or 0.0,
        fds_per_run=_per_run(steps["fds"]) or 0.0,
        sites=tuple(sites),
    )
    indicators = _indicators(samples, steps, report, first_run_rss)
    note = ""
    native = _leaking(steps["rss"], FLOORS["rss"]) or _leaking(steps["malloc"], FLOORS["malloc"])
    if confirmed and traced and native and not _leaking(steps["heap"], FLOORS["heap"] * 8):
        grown = max(report.rss_per_run, report.malloc_per_run or 0)
        note = f"native (non-Python) memory grew by ~{format_size(grown)}/run; tracemalloc cannot see it"
    return replace(report, indicators=indicators, pressure=pressure_score(report, indicators), note=note)


def _slope(values: Sequence[int]) -> float:
    """Least-squares growth per run."""
    count = len(values)
    if count < 2:
        return 0.0
    mean_x = (count - 1) / 2
    mean_y = sum(values) / count
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values))
    return numerator / sum((x - mean_x) ** 2 for x in range(count))


def _indicators(
    samples: Sequence[RunSample], steps: dict[str, Optional[list[int]]], report: LeakReport, first_run_rss: int
) -> tuple[str, ...]:
    """The seed analysis's indicators that make sense for one test."""
    found = []
    growth = next((values for name in ("heap", "malloc", "rss") if (values := steps[name])), None) or []
    if report.confirmed and growth and all(step > 0 for step in growth):
        found.append("steady_growth")
    rising = len(growth) >= 3 and all(b > a for a, b in zip(growth, growth[1:]))
    if report.confirmed and rising and growth[-1] > 1.5 * max(1, growth[0]):
        found.append("accelerating_growth")
    if report.confirmed and report.blocks_per_run > 1000:
        found.append("many_small_objects")
    if first_run_rss >= 8 * MIB and report.rss_per_run < MIB:
        found.append("large_one_off")
    peaks = [sample.peak for sample in samples]
    if len(peaks) >= 3 and all(b > a for a, b in zip(peaks, peaks[1:])) and _slope(peaks) >= MIB / 4:
        found.append("growing_peak")
    return tuple(found)


def pressure_score(report: LeakReport, indicators: Sequence[str]) -> float:
    """0.0-1.0: how hard a test pushes memory up per run. Zero unless a leak is confirmed;
    then by bytes per run on a log scale (1 KiB -> 0.0, 1 MiB -> 0.5, 1 GiB -> 1.0),
    plus 0.1 for each of accelerating growth, a growing peak, many small objects."""
    if not report.confirmed:
        return 0.0
    per_run = max(report.bytes_per_run, 1)
    base = min(1.0, max(0.0, (math.log2(per_run) - 10) / 20))
    bonus = 0.1 * sum(1 for name in ("accelerating_growth", "growing_peak", "many_small_objects") if name in indicators)
    return round(min(1.0, base + bonus), 2)


def session_pressure(pressures: Sequence[float]) -> float:
    """The session's score: 1 - prod(1 - p), so one heavy leak or many light ones both show."""
    remaining = 1.0
    for pressure in pressures:
        remaining *= 1.0 - pressure
    return round(1.0 - remaining, 2)
