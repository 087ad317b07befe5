"""Confirming a leak suspect: re-run the whole test, unlogged, and watch the growth per run.

Only suspects pay for this (screening is in :mod:`pytest_memguard.session`). Each re-run
is a full setup/call/teardown (as pytest-rerunfailures does it), its reports are
dropped, and after each one bounded caches are emptied (as CPython's ``regrtest -R`` does),
the cycle collector runs and the C allocator is trimmed, so the samples show what the
test really keeps. tracemalloc watches the re-runs
(started here if it was off) to name the allocation sites that grew.
"""

from __future__ import annotations

import fnmatch
import functools
import gc
import inspect
import os
import sys
import tracemalloc
import warnings
from dataclasses import replace
from typing import Optional

import pytest
from _pytest.runner import runtestprotocol

from .allocation_analyzer import exclude_filters
from .interpreter_caches import clear_bounded_caches
from .leak_detector import AllocationSite, LeakReport, RunSample, decide, judge_runs, quiet, survives_full_collection
from .tracker import Measurement, Tracker

__all__ = ["QUICK_RUNS", "confirm_leak", "measured_rerun", "rerun_unlogged", "unchecked"]


# pytest's, pluggy's, tracemalloc's and our own frames are never where a user's test leaks (the
# allocation analysis hides the same ones), nor are the import machinery's
_HIDDEN_FRAMES = (
    *(hidden.filename_pattern for hidden in exclude_filters()),
    "<frozen importlib._bootstrap*>",
    "<unknown>",
)
TOP_SITES = 5
for _pattern in _HIDDEN_FRAMES:  # compile the patterns now, not between two snapshots
    fnmatch.fnmatch("", _pattern)


def _shown_path(filename: str) -> str:
    """Paths under the working directory as relative ones, as pytest shows them."""
    cwd = os.getcwd() + os.sep
    return filename[len(cwd) :] if filename.startswith(cwd) else filename


def _hidden(filename: str) -> bool:
    return any(fnmatch.fnmatch(filename, pattern) for pattern in _HIDDEN_FRAMES)


def rerun_unlogged(item: pytest.Item, nextitem: Optional[pytest.Item]) -> list[pytest.TestReport]:
    """Run ``item`` again; its reports go nowhere (not the terminal, not JUnit, not xdist).

    Its warnings neither: pytest collects a test's warnings around the whole protocol, so
    without our own recording context every re-run would add its warnings to the summary
    (and the growing list of them would look like a leak)."""
    # Captured output (report sections) and record_property() values pile up on the item
    # itself; what a hidden re-run adds is dropped, or it would show, and look like a leak.
    sections: list[object] = getattr(item, "_report_sections", [])
    kept_sections, kept_properties = len(sections), len(item.user_properties)
    wider = _wider_finalizer_lists(item)
    _restore_doctest_globals(item)
    try:
        with warnings.catch_warnings(record=True):
            return runtestprotocol(item, nextitem=nextitem, log=False)
    finally:
        del sections[kept_sections:]
        del item.user_properties[kept_properties:]
        for finalizers, kept, set_up in wider:
            _drop_finish_registrations(finalizers, kept, set_up)


# a finalizer list, its length before a re-run, and for a node's list the fixtures it held
# registrations of then ({id(fixturedef): its cached result}): only theirs are taken off it
_Finalizers = tuple[list[object], int, Optional[dict[int, object]]]


def _wider_finalizer_lists(item: pytest.Item) -> list[_Finalizers]:
    """The finalizer lists that outlive a run of ``item``, with their lengths now: those of the
    live fixtures wider than a test that it uses, and those of the nodes above it.

    Each time a function-scoped fixture is set up, pytest adds ``partial(its finish,
    request=…)`` to the finalizers of every fixture it requests, and a wider fixture keeps
    them until it is torn down: ``tmp_path`` on the session's ``tmp_path_factory``, an
    autouse fixture on a session-scoped one. Once a run, so every re-run kept ~800 B (a
    request, 9 objects) more, and a clean suspect using them was confirmed as leaking.
    pytest 8.0 and 8.1 also add ``partial(finish, request=…)`` of each wider fixture a test
    requests to the finalizers of the fixture's scope node (the session's, a module's), at
    every run, where only a fixture the re-run sets up anew must keep its own (pytest 8.2+
    registers only those): the node's teardown finishes it.
    pytest's private names, read defensively: without them nothing is dropped."""
    found: dict[int, _Finalizers] = {}
    name2fixturedefs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", None)
    for fixturedefs in name2fixturedefs.values() if isinstance(name2fixturedefs, dict) else ():
        for fixturedef in fixturedefs:
            finalizers = getattr(fixturedef, "_finalizers", None)
            # an empty list: not set up now (a live one holds its own finalizers); it would be
            # set up and torn down again within the re-run, like in the first run
            if getattr(fixturedef, "scope", "function") != "function" and isinstance(finalizers, list) and finalizers:
                found[id(finalizers)] = (finalizers, len(finalizers), None)
    # SetupState.stack: {node: (its finalizers, the exception of its setup)}, the nodes set up now
    stack = getattr(getattr(item.session, "_setupstate", None), "stack", None)
    for node, entry in stack.items() if isinstance(stack, dict) else ():
        finalizers = entry[0] if isinstance(entry, tuple) and entry else None
        if node is not item and isinstance(finalizers, list):
            owners = (getattr(f.func, "__self__", None) for f in finalizers if _is_finish_registration(f, None))
            held = {id(owner): getattr(owner, "cached_result", None) for owner in owners}
            found[id(finalizers)] = (finalizers, len(finalizers), held)
    return list(found.values())


def _drop_finish_registrations(finalizers: list[object], kept: int, set_up: Optional[dict[int, object]]) -> None:
    """Take off what a re-run added to ``finalizers`` (once ``kept`` long) of pytest's "finish me
    when you finish" registrations; anything else stays. ``set_up``: only those of fixtures
    registered there before the re-run that still hold the same value (one set up anew must be
    finished by that registration)."""
    if len(finalizers) <= kept:  # torn down meanwhile, or nothing added
        return
    finalizers[kept:] = [added for added in finalizers[kept:] if not _is_finish_registration(added, set_up)]


def _is_finish_registration(finalizer: object, set_up: Optional[dict[int, object]]) -> bool:
    if not (
        isinstance(finalizer, functools.partial)
        and getattr(finalizer.func, "__name__", None) == "finish"
        and "request" in finalizer.keywords
    ):
        return False
    if set_up is None:
        return True
    fixturedef = getattr(finalizer.func, "__self__", None)
    return id(fixturedef) in set_up and getattr(fixturedef, "cached_result", None) is set_up[id(fixturedef)]


def _restore_doctest_globals(item: pytest.Item) -> None:
    """A doctest's runner empties its namespace after each run; give a re-run what a fresh run
    gets (the module's globals as they are now, or ``__name__`` for a text file), or every
    doctest would fail its re-run and never be checked."""
    dtest = getattr(item, "dtest", None)
    namespace = getattr(dtest, "globs", None)
    if not isinstance(namespace, dict) or namespace:
        return
    module = getattr(item.parent, "obj", None)
    namespace.update(vars(module) if inspect.ismodule(module) else {"__name__": "__main__"})


def measured_rerun(item: pytest.Item, nextitem: Optional[pytest.Item], tracker: Tracker) -> Optional[Measurement]:
    """One hidden re-run, measured like the first run; ``None`` if it did not pass."""
    start = tracker.start(screen=False)  # leak samples read the process state themselves
    reports = rerun_unlogged(item, nextitem)
    measured = tracker.finish(start)
    return measured if all(report.passed for report in reports) else None


def _snapshot() -> tracemalloc.Snapshot:
    # Unfiltered: Snapshot.filter_traces runs fnmatch per trace in Python (seconds for a
    # fully traced process); the hidden frames are dropped per line in _grown_sites instead.
    return tracemalloc.take_snapshot()


def _grown_sites(before: tracemalloc.Snapshot, steps: int) -> tuple[AllocationSite, ...]:
    """Where the heap grew between the warm-up re-run and the last one, per run."""
    growth = [
        s for s in _snapshot().compare_to(before, "lineno") if s.size_diff > 0 and not _hidden(s.traceback[0].filename)
    ]
    growth.sort(key=lambda s: s.size_diff, reverse=True)
    # Sites that add less than 2% of the growth (or 64 B/run) are the re-running's own noise.
    floor = max(64 * max(1, steps), sum(s.size_diff for s in growth) // 50)
    sites = []
    for stat in [s for s in growth if s.size_diff >= floor][:TOP_SITES]:
        frame = stat.traceback[0]
        sites.append(
            AllocationSite(
                f"{_shown_path(frame.filename)}:{frame.lineno}",
                stat.size_diff // max(1, steps),
                max(0, stat.count_diff) // max(1, steps),
            )
        )
    return tuple(sites)


def _less(value: Optional[int], own: int) -> Optional[int]:
    return None if value is None else value - own


def unchecked(note: str, runs: int = 1) -> LeakReport:
    """A suspect that could not be checked, and why (shown to the user)."""
    return LeakReport(
        confirmed=False,
        runs=runs,
        rss_per_run=0,
        heap_per_run=None,
        malloc_per_run=None,
        blocks_per_run=0.0,
        fds_per_run=0.0,
        note=note,
    )


def _unrepeatable(runs: int) -> LeakReport:
    return unchecked(
        "did not pass when re-run, so it was not checked for leaks; "
        "mark it @pytest.mark.memguard(leak=False) to skip the check",
        runs,
    )


class _Sampling:
    """Re-runs a test and keeps what the process holds after each run."""

    def __init__(self, item: pytest.Item, nextitem: Optional[pytest.Item], tracker: Tracker) -> None:
        self.item, self.nextitem, self.tracker = item, nextitem, tracker
        self.samples: list[RunSample] = []
        self.before: Optional[tracemalloc.Snapshot] = None
        self._own_blocks = self._own_heap = 0
        self.traces_lost = False  # a run stopped tracemalloc or cleared its traces

    def rerun(self) -> Optional[int]:
        """One more run, not sampled: its RSS peak, ``None`` if it did not pass. Nothing of the
        run (its measurement, this frame) is alive once it returns, so a sample taken by the
        caller sees the same objects of ours as the warm-up sample did."""
        # an object made now has a traceback for as long as its trace lasts
        witness = object() if tracemalloc.is_tracing() else None
        measured = measured_rerun(self.item, self.nextitem, self.tracker)
        if witness is not None and tracemalloc.get_object_traceback(witness) is None:
            self.traces_lost = True
        return None if measured is None else measured.rss_peak

    def run(self, *, snapshot_first: bool = False) -> bool:
        """One more run; ``False`` if it did not pass."""
        peak = self.rerun()
        if peak is None:
            return False
        self.sample(peak, snapshot_first=snapshot_first)
        return True

    def sample(self, peak: int, *, snapshot_first: bool = False) -> None:
        """Record what the process holds now, after emptying the interpreter's bounded caches
        (:mod:`.interpreter_caches`: one filling over many runs would read as a leak), a full
        collection and an allocator trim.

        The first snapshot is taken before the collection and the readings, so it is in this
        sample and every later one alike. The block count and the traced heap are read last: what the readings
        made and dropped (into the free lists, which the next collection empties) is in every
        sample alike. What the sample itself keeps after that (the sample, its numbers) is
        counted as our own and taken off every later sample. Read the other way round, a
        sample took objects in the free lists for its own, and each step of idle samples read
        5 blocks short (now 1: the tuple that builds a RunSample) and, traced, 6 blocks and
        224 B short (now 2 and 144 B)."""
        clear_bounded_caches()  # before the snapshot too, or what the caches held reads as freed sites
        if snapshot_first and self.before is None and tracemalloc.is_tracing():
            # before the collection and the trim: taking it copies the trace table, and freed
            # but not trimmed, that copy read as tens of MB of RSS gone in the first step
            self.before = _snapshot()
        gc.collect()
        self.tracker.trim()
        rss, fds, malloc = self.tracker.state()
        blocks = sys.getallocatedblocks()
        heap = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
        self.samples.append(RunSample(rss, blocks - self._own_blocks, fds, _less(heap, self._own_heap), malloc, peak))
        self._own_blocks += sys.getallocatedblocks() - blocks
        self._own_heap += (tracemalloc.get_traced_memory()[0] - heap) if heap is not None else 0


def confirm_leak(
    item: pytest.Item,
    nextitem: Optional[pytest.Item],
    tracker: Tracker,
    *,
    skip_note: Optional[str] = None,
    max_steps: int,
    first_run_rss: int,
    frames: int = 1,
    quiet_malloc: Optional[float] = None,
) -> LeakReport:
    """Re-run a suspect until it is clearly clean, clearly leaking, or ``max_steps`` measured
    re-runs. ``skip_note``: do not re-run it; the report says why. ``quiet_malloc``: the C heap
    growth per re-run that counts as moving, when lower than :data:`QUIET`'s (a suspect by
    its call phase's C heap).

    The state after the first run (collected, allocator trimmed) is the warm-up sample: a
    re-run that changes nothing clears the suspect (its imports and first-call caches were
    made by the first run). One that moved gets one more quick re-run (a cache that fills in
    two runs, a class made per run); only one that keeps moving is re-run under tracemalloc
    (started for them if it is off: several times slower), which also names the sites that grew."""
    if skip_note is not None:
        return unchecked(skip_note)
    already_tracing = tracemalloc.is_tracing()
    quick = _Sampling(item, nextitem, tracker)
    cleared = _quick_look(quick, quiet_malloc)
    if cleared is None:
        return _unrepeatable(len(quick.samples) + 1)
    if cleared:
        # judged by the step that cleared it: an earlier one still warmed up
        last = quick.samples[-2:]
        return judge_runs(last, runs=len(quick.samples), first_run_rss=first_run_rss, traced=already_tracing)
    if not already_tracing:
        tracemalloc.start(frames)
    return _traced_runs(
        item,
        nextitem,
        tracker,
        max_steps=max_steps,
        first_run_rss=first_run_rss,
        started=not already_tracing,
        done=len(quick.samples),
    )


#: quick re-runs before traced ones: the second forgives a first re-run that still warmed up
QUICK_RUNS = 2


def _materialise_frames() -> None:
    """Give every frame on the stack its frame object now. CPython (3.11+) makes one only when
    asked (``f_back``, ``sys._getframe``, a traceback): a test that walks the stack (hypothesis'
    ``ensure_free_stackframes``, at every ``@given`` call) makes them for our own frames still
    running when the next sample is read (~300 B, 1 block each; 4-5 on attrs' suite), which
    read as growth of that re-run only. They go when their frames return."""
    getframe = getattr(sys, "_getframe", None)
    frame = getframe(1) if getframe is not None else None
    while frame is not None:
        frame = frame.f_back


def _quick_look(quick: _Sampling, quiet_malloc: Optional[float]) -> Optional[bool]:
    """Up to :data:`QUICK_RUNS` re-runs: ``True`` the last one moved nothing, ``False`` every one
    moved something, ``None`` one failed.

    Everything alive is frozen out of the cycle collector meanwhile, so the samples' collections
    walk only what the re-runs made (~0.1 ms, not ~20 ms). Garbage frozen in stays put, the same
    in every sample, so it cancels out. Frozen, the collector behaves differently (what a re-run
    orphans of the frozen objects stays, and re-runs under it showed growth that unfrozen ones
    did not on more-itertools), so this look only ever clears a suspect: one that moved is
    judged by unfrozen re-runs. If the process froze objects itself, nothing is frozen here:
    unfreezing cannot tell ours from its own."""
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    try:
        _materialise_frames()
        quick.sample(0)  # after the first run
        # every sample from this frame, with nothing of a re-run alive (its Measurement, the
        # frame of _Sampling.run) and no loop iterator: the warm-up sample had none of them
        runs = 0
        while runs < QUICK_RUNS:
            runs += 1
            peak = quick.rerun()
            if peak is None:
                return None
            quick.sample(peak)
            if quiet(quick.samples[-2:], malloc_bar=quiet_malloc):  # a leak grows in every run, the last too
                return True
        return False
    finally:
        if freeze:
            gc.unfreeze()


def _traced_runs(
    item: pytest.Item,
    nextitem: Optional[pytest.Item],
    tracker: Tracker,
    *,
    max_steps: int,
    first_run_rss: int,
    started: bool,
    done: int,
) -> LeakReport:
    """Re-runs under tracemalloc (``started``: by us, just now) until :func:`decide` knows;
    ``done``: runs so far (the first and the quick look's).

    After the warm-up sample's full collection everything alive is frozen (``gc.freeze``),
    as in the quick look, so the later samples' collections walk only what the re-runs made:
    each full one took 10-37 ms in a small session, and a suite whose tests leak (click's)
    paid four for every leak. Frozen, what a re-run orphans of the older objects stays (a
    bounded buffer of objects in cycles, say) and can look like growth, so a leak found
    frozen is read again after a full collection, unfrozen; where that takes the growth back,
    the re-runs start over unfrozen."""
    already_tracing = not started
    # frozen, then unfrozen if need be; a process that froze objects itself: never unfreeze them
    attempts = (True, False) if gc.get_freeze_count() == 0 else (False,)
    try:
        for freeze in attempts:
            sampling = _Sampling(item, nextitem, tracker)
            try:
                for run in range(max_steps + 1):  # run 0 warms up: tracing starts, fixtures settle
                    if not sampling.run(snapshot_first=True):
                        return _unrepeatable(done + run + 1)
                    if run == 0 and freeze:
                        gc.freeze()
                    if (
                        run > 0
                        and decide(sampling.samples, max_steps, heap_needs_witness=not already_tracing) is not None
                    ):
                        break
            finally:
                if freeze:
                    gc.unfreeze()
            samples, before = sampling.samples, sampling.before
            steps = len(samples) - 1
            leaking = decide(samples, steps, heap_needs_witness=not already_tracing) is True
            if leaking and freeze:
                sampling.sample(samples[-1].peak)  # the same state, after a full collection
                if not survives_full_collection(samples[0], samples[-2], samples[-1]):
                    # older objects the re-runs orphaned made that growth: again, unfrozen
                    done += len(samples) - 1
                    continue
                samples[-2:] = samples[-1:]
            break
        # the test itself may have stopped tracemalloc or cleared its traces: then its Python
        # heap was not watched, and what grew cannot be called native, nor its sites named
        traced = tracemalloc.is_tracing() and not sampling.traces_lost
        sites = _grown_sites(before, steps) if leaking and before is not None and traced else ()
        report = judge_runs(
            samples,
            runs=done + len(samples),
            first_run_rss=first_run_rss,
            traced=traced,
            sites=sites,
            heap_needs_witness=not already_tracing,
        )
        if not sampling.traces_lost:
            return report
        unwatched = "the test stops tracemalloc or clears its traces, so its Python heap was not watched"
        return replace(report, note="; ".join(filter(None, [report.note, unwatched])))
    finally:
        if not already_tracing:
            tracemalloc.stop()
