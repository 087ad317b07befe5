"""The plugin object: measures each test, judges it, collects records, prints the summary.

Per test it runs pytest's own protocol with logging held back (as pytest-rerunfailures
and pytest-leaks do), so the verdict, known only after teardown, can fail the
*call* report: a breach reads ``FAILED``, not an error at teardown. Reports are
then logged as usual, which is also how they reach the xdist controller.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Generator, NamedTuple, Optional

import pytest
from _pytest.runner import runtestprotocol  # the one private import: owning the protocol needs it

from . import __version__
from .allocation_result import AllocationAnalysis
from .baseline import BaselineError, Finding, write_atomic
from .gate import BaselineGate, GateResult, lowest, verdict_for
from .interpreter_caches import PatternMark, forget_patterns, mark_patterns, patterns_since
from .leak_check import confirm_leak, measured_rerun, unchecked
from .leak_detector import SCREENING, LeakReport, LeftBehind
from .limits import HEAP_KEYS, RETAINED_KEYS, Breach, Limit, LimitError, check_limits, merge_limits, parse_limits
from .record import MemoryRecord, Verdict, is_ours
from .reporting.benchmark_export import render_benchmark_json
from .reporting.json_report import render_json
from .reporting.junit import write_junit
from .reporting.markdown import append_step_summary, render_markdown
from .reporting.terminal import render_details, render_gate, render_summary
from .rerun_analysis import analyse_flagged
from .settings import Settings
from .tolerance import Tolerance, ToleranceError, parse_figure_tolerances
from .tracker import Growth, Measurement, Start, Tracker

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr
    from _pytest.nodes import Node

__all__ = ["MaxfailWatch", "MemguardSession", "MemoryLimitExceeded"]

MARKER = "memguard"
REGRESSIONS_STAT = "memguard regressions"
WORKER_NOTES = "memguard_notes"  # key in an xdist worker's workeroutput
#: marker keywords that are not limits
MARKER_OPTIONS = frozenset({"tolerance", "leak"})
#: a suspect with a small growth whose run took longer than both is not re-run (--memguard-leak-slow)
SLOW_SUSPECT_S = 0.05
SLOW_SUSPECT_SHARE = 0.02
#: on the teardown report: the test did not pass on its own (before memguard's verdict)
PARTIAL_RUN = "memguard_partial_run"
_LEAK_MARKER_VALUES: dict[object, str] = {True: "fail", False: "off", "fail": "fail", "warn": "warn", "off": "off"}


class MemoryLimitExceeded(Exception):
    """Raised (and caught) only to give a breach a one-line failure pytest can render and ship."""


# The crash line reads "MemoryLimitExceeded: peak RSS ..." rather than the dotted path,
# which would push the figures off the short test summary.
MemoryLimitExceeded.__module__ = "builtins"


class _Plan:
    """What to do with one collected test: limits, tolerances, or why its marker is invalid.
    ``may_rerun``: False when its marker says ``leak=False`` (side effects: never run it twice;
    ``--memguard-leaks=off`` alone only turns the leak check off)."""

    __slots__ = ("error", "leaks", "limits", "may_rerun", "tolerances")

    def __init__(
        self,
        limits: dict[str, Limit],
        error: Optional[str] = None,
        tolerances: Optional[dict[str, Tolerance]] = None,
        leaks: Optional[str] = None,
        may_rerun: bool = True,
    ) -> None:
        self.limits = limits
        self.error = error
        self.tolerances = tolerances
        self.leaks = leaks
        self.may_rerun = may_rerun


_PLAN = pytest.StashKey[_Plan]()


class _Carried(NamedTuple):
    """The block count after one test, kept as the next test's start: reading it in ``start()``
    took 26 µs a test in a 50 MB session (it walks every pymalloc pool, there right after the
    syscalls that reset the peak: 11 µs in a loop), and in between only our judging
    and pytest's logging run. Used only by the test it was read for, and only when no garbage
    collection (it would free the last test's garbage unseen) and no run of a test (a hidden
    re-run's growth is not the next test's) came in between. What pytest's logging keeps counts
    as the next test's: on more-itertools a median of 0 blocks a test, 29 with ``--junitxml``
    (its XML), where the bar is 256. The C heap is read afresh: logging's lists grow by
    reallocation, up to 24 KiB at a time there, which read as kept made 4 clean tests suspects."""

    nodeid: str
    collections: int
    runs: int
    blocks: int

    def blocks_for(self, nodeid: str, runs: int, collections: int) -> Optional[int]:
        """The block count, if it was read for ``nodeid`` with ``runs`` test runs and
        ``collections`` garbage collections so far."""
        if self.nodeid != nodeid or self.runs != runs or self.collections != collections:
            return None
        return self.blocks


class _Collections:
    """Counts garbage collections (any generation) through ``gc.callbacks`` while the tests run:
    ~260 in a run of more-itertools, so ~0.3 ms in all, where asking ``gc.get_stats()`` twice a
    test cost ~5 µs a test."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.count += 1


class _RegressionEntry:
    """One regression as the terminal reporter's stats hold it, for pytest's closing line to
    count. Other plugins walk every entry there as a report: hypothesis' reads each one's
    ``__dict__`` (a NamedTuple record, which has none, broke its terminal summary with an
    INTERNALERROR), so this is a plain object with a report's node id and phase."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid
        self.when = "memguard"


def _describe_node(node: Node) -> str:
    if isinstance(node, pytest.Class):
        return f"@pytest.mark.memguard on class {node.name}"
    if isinstance(node, pytest.Module):
        return f"pytestmark in {node.name}"
    return f"@pytest.mark.memguard on {getattr(node, 'originalname', node.name)}"


def _memguard_markers(item: pytest.Item) -> list[tuple[str, pytest.Mark]]:
    """The test's memguard markers, nearest first, each with where it was written.

    pytest keeps a parametrization's own marks (``pytest.param(..., marks=...)``) on the item
    after the function's, so nearest-first by node alone let the function's marker win over
    the parametrization's: they come first here."""
    param_marks = [mark for mark in getattr(getattr(item, "callspec", None), "marks", ()) if mark.name == MARKER]
    params, others = [], []
    for node, mark in item.iter_markers_with_node(MARKER):
        if node is item and mark in param_marks:
            params.append((f"the memguard mark of parametrization {item.name}", mark))
        else:
            others.append((_describe_node(node), mark))
    return params + others


class MemguardSession:
    """Registered as ``memguard-session`` in every process (controller and xdist workers)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.tracker = Tracker(trace=settings.trace, trace_frames=settings.stack_depth)
        self.records: list[MemoryRecord] = []
        self.is_worker = hasattr(config, "workerinput")
        # Under --pdb a failure in a hidden re-run would open the debugger: never re-run then.
        self.can_rerun = not (config.getoption("usepdb", False) or config.getoption("trace", False))
        self._running: Optional[str] = None
        self._reported_while_running = False
        self._watch_call = False  # read the C heap around the running test's call phase
        self._malloc_in_call: Optional[int] = None
        self._patterns: Optional[PatternMark] = None  # re's cache when the running test started
        self._carried: Optional[_Carried] = None
        self._runs = 0  # test runs started (setups), hidden re-runs included
        self._collections = _Collections()  # counting while the tests run
        self._screened = False  # a test was screened in this process
        # (teardown report, its record): the controller's own tests skip rebuilding the record
        # from the report's properties (~15 µs a test) where that gives the same record back
        self._handed: Optional[tuple[pytest.TestReport, MemoryRecord]] = None
        self._analysed_at: dict[str, str] = {}  # a confirmed leak's top site -> the test analysed for it
        self._first_test_at: Optional[float] = None
        # tests whose teardown was logged (controller): a -x/--maxfail stop after the last one,
        # serial or xdist, is a whole run
        self._torn_down: set[str] = set()
        self._subtest_failed = False  # a subtest of the running test failed (logged while it ran)
        # tests that did not pass on their own: a baseline update leaves them out (controller)
        self._partial: set[str] = set()
        self.write_errors: list[str] = []
        self.gate: Optional[BaselineGate] = None
        self.gate_result: Optional[GateResult] = None
        path = settings.baseline_path
        if settings.measure_all and path is not None and (settings.update_baseline or path.exists()):
            try:
                self.gate = BaselineGate.load(path, settings.tolerances)
            except BaselineError as exc:
                raise pytest.UsageError(f"memguard: {exc}") from None
        elif settings.measure_all and path is not None and settings.baseline_given:
            # A path asked for that is not there: on the command line most likely a typo, which
            # would let every run pass ungated; in the ini file maybe one not recorded yet.
            missing = f"baseline {path} does not exist, so nothing is compared; --memguard-update-baseline records it"
            if settings.baseline_given == "option":
                raise pytest.UsageError(f"memguard: {missing}")
            self.tracker.notes.append(f"{missing} (memguard_baseline in {config.inipath or 'the ini file'})")

    # -- collection: decide which tests are measured, validate their markers ---
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        global_limits = self.settings.limits
        # Leak screening comes with --memguard; a marker or a global limit alone only measures
        # (unless the marker asks for the leak check with leak=...).
        self._default_leaks = self.settings.leaks if self.settings.enabled else "off"
        self._default_plan = _Plan(merge_limits([global_limits]), leaks=self._default_leaks)
        if not self.tracker.tracing and HEAP_KEYS.intersection(self._default_plan.limits):
            self.tracker.enable_tracing()
        for item in items:
            marked = _memguard_markers(item)
            if not marked and not self.settings.measure_all:
                continue
            try:
                layers = [self._marker_limits(source, mark) for source, mark in marked]
                tolerances = self._marker_tolerances(marked)
                leaks = self._marker_leaks(marked)
            except LimitError as exc:
                item.stash[_PLAN] = _Plan({}, f"memguard: invalid marker on {item.nodeid}: {exc}")
                continue
            if not marked:  # most tests: share one plan rather than hold one each
                item.stash[_PLAN] = self._default_plan
                continue
            limits = merge_limits([*layers, global_limits])
            if not self.tracker.tracing and HEAP_KEYS.intersection(limits):
                self.tracker.enable_tracing()  # a heap limit is meaningless without tracemalloc
            item.stash[_PLAN] = _Plan(
                limits, tolerances=tolerances, leaks=leaks or self._default_leaks, may_rerun=leaks != "off"
            )

    @staticmethod
    def _marker_limits(source: str, mark: pytest.Mark) -> dict[str, Optional[Limit]]:
        if mark.args:
            raise LimitError(f"{source} takes keywords only, e.g. memguard(peak='50 MB'), got {mark.args!r}")
        values = {key: value for key, value in mark.kwargs.items() if key not in MARKER_OPTIONS}
        try:
            return parse_limits(values, source, also_known=sorted(MARKER_OPTIONS))
        except LimitError as exc:
            raise LimitError(f"{exc} ({source})") from None

    @staticmethod
    def _marker_leaks(marked: list[tuple[str, pytest.Mark]]) -> Optional[str]:
        """``leak=False`` (never re-run this test), ``True``/``"fail"``, ``"warn"``; nearest wins."""
        for source, mark in marked:
            if "leak" in mark.kwargs:
                value = mark.kwargs["leak"]
                if isinstance(value, (bool, str)) and value in _LEAK_MARKER_VALUES:
                    return _LEAK_MARKER_VALUES[value]
                raise LimitError(f"leak={value!r}: use True, False, 'fail', 'warn' or 'off' ({source})")
        return None

    def _marker_tolerances(self, marked: list[tuple[str, pytest.Mark]]) -> Optional[dict[str, Tolerance]]:
        """``tolerance="20%"`` (every figure) or ``tolerance={"rss": "20%"}``; nearest marker wins."""
        for source, mark in marked:
            if "tolerance" not in mark.kwargs:
                continue
            spec = mark.kwargs["tolerance"]
            values = spec if isinstance(spec, dict) else {"all": spec}
            try:
                return parse_figure_tolerances(values, self.settings.tolerances.defaults, "tolerance")
            except ToleranceError as exc:
                raise LimitError(f"{exc} ({source})") from None
        return None

    # -- running ------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self._runs += 1
        plan = item.stash.get(_PLAN, None)
        if plan is not None and plan.error is not None:
            pytest.fail(plan.error, pytrace=False)

    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Optional[bool]:
        plan = item.stash.get(_PLAN, None)
        if plan is None or plan.error is not None:
            return None  # pytest's own protocol; a bad marker fails in setup
        ihook, nodeid = item.ihook, item.nodeid
        ihook.pytest_runtest_logstart(nodeid=nodeid, location=item.location)
        self._running, self._reported_while_running, self._subtest_failed = nodeid, False, False
        if self._first_test_at is None:
            self._first_test_at = time.perf_counter()
        screen = self._screens(plan)
        if screen and not self._screened:
            self._before_first_screened()
        self._watch_call, self._malloc_in_call = screen, None
        self._patterns = mark_patterns() if screen else None
        carried, self._carried = self._carried, None
        blocks = carried.blocks_for(nodeid, self._runs, self._collections.count) if carried else None
        start = self.tracker.start(screen=screen, blocks=blocks)
        if carried is not None and blocks is not None and self._collections.count != carried.collections:
            start = start._replace(blocks=sys.getallocatedblocks())  # one ran while start() read the rest
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        measurement = self.tracker.finish(start)
        # counted before the readings: a collection during them (or later) makes the carry stale
        collections, runs = self._collections.count, self._runs
        now = self.tracker.screening() if screen else (0, None)
        growth = self.tracker.growth(start, now, self._malloc_in_call)
        counting = screen and self._collections in gc.callbacks
        carry = _Carried(nextitem.nodeid, collections, runs, now[0]) if counting and nextitem is not None else None
        self._running, self._watch_call = None, False
        self._carried = carry  # judging drops it where it frees memory without running a test
        try:
            if any(report.when == "call" for report in reports):
                self._judge(item, nodeid, nextitem, plan, start, measurement, growth, reports)
        finally:  # also when Ctrl-C or pytest.exit() stops a hidden re-run: the first run happened
            for report in reports:
                ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=nodeid, location=item.location)
        return True

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        """Innermost around the test body: the C heap it kept, without the ~1 KiB pytest keeps
        around every test on its own (its reports, a unittest item's attributes, the
        environment's PYTEST_CURRENT_TEST), which hides a small leak in the whole run's figure."""
        if not self._watch_call or item.nodeid != self._running:  # not screened, or a hidden re-run
            return (yield)
        before = self.tracker.malloc_in_use()
        try:
            return (yield)
        finally:
            after = self.tracker.malloc_in_use()
            if before is not None and after is not None:
                self._malloc_in_call = after - before

    @property
    def running(self) -> Optional[str]:
        """The node id of the test whose protocol runs now (``None`` between tests)."""
        return self._running

    def _judge(
        self,
        item: pytest.Item,
        nodeid: str,
        nextitem: Optional[pytest.Item],
        plan: _Plan,
        start: Start,
        measurement: Measurement,
        growth: Growth,
        reports: list[pytest.TestReport],
    ) -> None:
        # A test whose reports reach the terminal by themselves (subtests) cannot be
        # re-run unseen: it is measured once and neither leak-confirmed nor re-measured.
        own = all(report.passed for report in reports)  # before our verdict can fail it
        passed = own and not self._reported_while_running
        whole = own and not self._subtest_failed
        left = self._left_behind(measurement, growth) if passed and self._screens(plan) else None
        suspect = left is not None and SCREENING.suspect(left)
        if suspect:
            growth = self._less_new_patterns(growth)
            left = self._left_behind(measurement, growth)
            suspect = SCREENING.suspect(left)
        if not plan.limits and self.gate is None and not suspect:
            # Most tests: no limit, no baseline, not a suspect, so nothing to judge but "ok".
            # Going straight there spares ~10-15 µs a test of the general path below.
            self._attach(MemoryRecord(nodeid, measurement), reports, whole)
            return
        runs = self._runs
        breaches = check_limits(measurement, plan.limits)
        if any(breach.limit.key in RETAINED_KEYS for breach in breaches):
            # Garbage the cycle collector has not reached yet is not "retained":
            # pay for a full collection only when it could clear a breach.
            gc.collect()
            again = self.tracker.finish(start)
            measurement = measurement._replace(
                rss_retained=again.rss_retained, heap_retained=again.heap_retained, fds_gained=again.fds_gained
            )
            breaches = check_limits(measurement, plan.limits)
            if left is not None:  # screened on what is retained now
                left = self._left_behind(measurement, growth)
        leak: Optional[LeakReport] = None
        findings: list[Finding] = []
        analysis: Optional[AllocationAnalysis] = None
        notes: list[str] = []
        verdict: Optional[str] = None
        duration = sum(report.duration for report in reports)
        # slow: judged before any re-run adds to the session's time; spared re-runs unless asked
        spare_slow = self.settings.leak_slow == "skip" and duration > self._slow_after()
        try:
            leak = self._check_leak(item, nextitem, left, duration, spare_slow) if left is not None else None
            if whole:  # a run cut short (failed, skipped, xfailed) says nothing against the baseline
                measurement, findings = self._compare(item, nodeid, nextitem, plan, measurement, rerun=passed)
            verdict = self._verdict(nodeid, breaches, findings, leak)
            analysed_for = self._analysed_for(leak) if verdict == Verdict.LEAK and leak is not None else None
            if verdict == Verdict.LEAK and leak is not None and spare_slow:
                # The analysis is one more traced run (4-5 times the test's time): for a slow
                # test (attrs' hypothesis tests: 1-4 s, ~7.5 s an analysis) its leak report says
                # enough. On the report, so the summary's Leaks section shows it too.
                skipped = f"no allocation analysis of this slow test ({duration:.2f} s); --memguard-leak-slow=check"
                leak = replace(leak, note="; ".join(filter(None, [leak.note, f"{skipped} analyses it"])))
            elif leak is not None and analysed_for is not None:
                # A suite whose tests leak through one holder (click's stream cache: 217 tests) paid
                # an analysis each (one more traced run, ~0.1 s there) to name the same place again.
                same = (
                    f"no allocation analysis: it leaks at the site analysed for {analysed_for} ({leak.sites[0].where})"
                )
                leak = replace(leak, note="; ".join(filter(None, [leak.note, same])))
            elif passed and self.can_rerun and plan.may_rerun:  # flagged tests only: one more hidden run
                analysis, note = analyse_flagged(
                    item, nextitem, verdict, self.tracker, stack_depth=self.settings.stack_depth
                )
                notes += [note] if note else []
                if verdict == Verdict.LEAK and analysis is not None and leak is not None and leak.sites:
                    self._analysed_at.setdefault(leak.sites[0].where, nodeid)
        finally:  # also when Ctrl-C or pytest.exit() stops a hidden re-run: judge on what we have
            if verdict is None:
                verdict = self._verdict(nodeid, breaches, findings, leak)
            self._record(nodeid, verdict, plan, measurement, breaches, findings, leak, analysis, notes, reports, whole)
            if self._runs != runs:  # hidden re-runs parked their frees in glibc's cache: fill it again
                self.tracker.fill_cache()

    def _analysed_for(self, leak: LeakReport) -> Optional[str]:
        """The test analysed already in this process whose leak grew most at the same site as
        ``leak``'s (its confirmation runs' top site), if one was."""
        return self._analysed_at.get(leak.sites[0].where) if leak.sites else None

    def _verdict(self, nodeid: str, breaches: list[Breach], findings: list[Finding], leak: Optional[LeakReport]) -> str:
        if breaches:
            return Verdict.OVER_LIMIT
        if leak is not None and leak.confirmed:
            return Verdict.LEAK
        return verdict_for(findings, self._in_baseline(nodeid))

    def _record(
        self,
        nodeid: str,
        verdict: str,
        plan: _Plan,
        measurement: Measurement,
        breaches: list[Breach],
        findings: list[Finding],
        leak: Optional[LeakReport],
        analysis: Optional[AllocationAnalysis],
        notes: list[str],
        reports: list[pytest.TestReport],
        whole: bool,
    ) -> None:
        """The record on the teardown report, and a failed call report for a breach or a leak.
        ``whole``: the test passed on its own (every phase, every subtest)."""
        failures = [breach.message() for breach in breaches]
        if leak is not None and leak.confirmed and plan.leaks == "fail":
            failures.append(leak.summary())
        messages = [breach.message() for breach in breaches]
        if leak is not None and (leak.confirmed or leak.note):
            messages.append(leak.summary() if leak.confirmed else leak.note)
        messages += [f.message() for f in findings] + notes
        record = MemoryRecord(nodeid, measurement, verdict, "; ".join(messages), tuple(findings), leak, analysis)
        self._attach(record, reports, whole)
        message = "; ".join(failures)
        if not message:
            return
        call = next(report for report in reports if report.when == "call")
        call.sections.append(("memguard", render_details(record, plan.limits, breaches)))
        if call.passed:
            if hasattr(call, "wasxfail"):  # an XPASS over its limit is a failure, in JUnit too
                del call.wasxfail
            call.outcome = "failed"
            call.longrepr = _failure_repr(message)

    def _attach(self, record: MemoryRecord, reports: list[pytest.TestReport], whole: bool) -> None:
        """The record's figures onto the teardown report only: that is where pytest's junitxml and
        our controller read them, and on every report they cost ~1 KiB per test in the terminal
        reporter's stats (12 MB for 10,000 tests). A plain record is handed to our own logreport
        as it is, unless the test recorded ``memguard_*`` properties of its own (record_property),
        which rebuilding it from the properties would read back into it. ``whole``: False for a
        test that did not pass on its own, which a baseline update leaves out; the report says
        so with :data:`PARTIAL_RUN` (how an xdist worker tells the controller)."""
        teardown = reports[-1]
        handable = (
            record.plain and not self.is_worker and not any(is_ours(name) for name, _ in teardown.user_properties)
        )
        teardown.user_properties.extend(record.to_properties())
        self._handed = (teardown, record) if handable else None
        if not whole:
            teardown.user_properties.append((PARTIAL_RUN, True))
            if not self.is_worker:
                self._partial.add(record.nodeid)

    def _less_new_patterns(self, growth: Growth) -> Growth:
        """``growth`` less what the regular expressions the test compiled first in the session
        hold, kept by ``re``'s cache (a bounded cache: see :mod:`.interpreter_caches`). They are
        taken out of it and the heaps read again, where a re-run would have cost the test's
        time. Taken off the call phase's C heap too: a test's patterns are compiled there but
        for a fixture's."""
        added = patterns_since(self._patterns)
        if not added:
            return growth
        blocks, malloc = sys.getallocatedblocks(), self.tracker.malloc_in_use()
        forget_patterns(added)
        del added  # its keys hold the patterns' source strings
        self._carried = None  # it carries a block count read before these were freed
        freed_blocks = blocks - sys.getallocatedblocks()
        now = self.tracker.malloc_in_use()
        if malloc is None or now is None:
            return growth._replace(blocks=growth.blocks - freed_blocks)
        freed = malloc - now
        return Growth(
            growth.blocks - freed_blocks,
            None if growth.malloc is None else growth.malloc - freed,
            None if growth.malloc_in_call is None else growth.malloc_in_call - freed,
        )

    @staticmethod
    def _left_behind(measurement: Measurement, growth: Growth) -> LeftBehind:
        return LeftBehind(
            rss=measurement.rss_retained,
            malloc=growth.malloc,
            blocks=growth.blocks,
            heap=measurement.heap_retained,
            fds=measurement.fds_gained,
            malloc_in_call=growth.malloc_in_call,
        )

    def _check_leak(
        self, item: pytest.Item, nextitem: Optional[pytest.Item], left: LeftBehind, duration: float, spare_slow: bool
    ) -> Optional[LeakReport]:
        """Screen cheaply (``left``: what the screened run left behind); re-run only a suspect to
        confirm (or clear) it. ``duration``: the run's seconds; ``spare_slow``: longer than
        :meth:`_slow_after` then, under ``--memguard-leak-slow=skip``."""
        if not SCREENING.suspect(left):
            return None
        small = SCREENING.small(left)
        # Re-runs cost a slow test's time again and again; for a small growth (most often a
        # first-call cache) that is more than the check is worth. Said, not hidden.
        skip_note = None
        if small and spare_slow:
            skip_note = (
                f"a slow test ({duration:.2f} s) that kept a little memory on its first run was not "
                "re-run; --memguard-leak-slow=check checks it"
            )
        # Traced, tracemalloc's own bookkeeping moves the C heap by more than 1 KiB a run, and
        # the traced heap (bar: 512 B) sees a small Python leak itself.
        small_c_leak = SCREENING.by_call_malloc(left) and not self.settings.trace
        quiet_malloc = SCREENING.malloc_in_call if small_c_leak else None
        try:
            return confirm_leak(
                item,
                nextitem,
                self.tracker,
                skip_note=skip_note,
                quiet_malloc=quiet_malloc,
                max_steps=self.settings.leak_runs,
                first_run_rss=left.rss,
            )
        except pytest.exit.Exception:
            raise
        except Exception as exc:  # a check that breaks must never end the session
            return unchecked(f"leak check failed ({type(exc).__name__}: {exc}); the test was not checked")

    def _before_first_screened(self) -> None:
        """Collecting tests leaves garbage that the first automatic collection frees in the middle
        of some early test, whose blocks and C heap then read as freed (-310 blocks, -2 KiB in the
        leak corpus's first test): free it now, with a young collection (~0.2 ms; the finalizers
        of that garbage run here, not in whichever test set the collection off). And fill
        glibc's cache (see :meth:`Tracker.fill_cache`).

        pytest 8's ``config.hook`` (a proxy, gone in pytest 9) keeps each hook in its own
        ``__dict__`` the first time it is asked for: in the first test of a process (each xdist
        worker's) the call phase asked for ``pytest_pyfunc_call``, the dict grew by 1.5 KiB of C
        heap, and the clean test was a suspect. Every hook is asked for here, once."""
        self._screened = True
        for name in vars(self.config.pluginmanager.hook):
            getattr(self.config.hook, name)
        gc.collect(1)
        self.tracker.fill_cache()

    def _screens(self, plan: _Plan) -> bool:
        """Whether this test is screened for leaks (which needs readings before it starts)."""
        return plan.leaks != "off" and self.can_rerun

    def _slow_after(self) -> float:
        """Seconds after which a suspect with a small growth is not re-run: 50 ms, or 2% of
        the session so far (in a long session a re-run weighs less)."""
        elapsed = time.perf_counter() - (self._first_test_at or time.perf_counter())
        return max(SLOW_SUSPECT_S, SLOW_SUSPECT_SHARE * elapsed)

    def _in_baseline(self, nodeid: str) -> bool:
        return self.gate is None or self.gate.entry(nodeid) is not None

    def _compare(
        self,
        item: pytest.Item,
        nodeid: str,
        nextitem: Optional[pytest.Item],
        plan: _Plan,
        measurement: Measurement,
        *,
        rerun: bool,
    ) -> tuple[Measurement, list[Finding]]:
        """Findings against the baseline; a regression is re-measured before it counts."""
        if self.gate is None:
            return measurement, []
        findings = self.gate.compare(nodeid, measurement, plan.tolerances)
        if rerun and self.can_rerun and self.settings.reruns and any(f.kind == "regression" for f in findings):
            # One sample in a full session is noisy (allocator state, first calls):
            # run the test again, unlogged, and keep each figure's lowest value.
            measurement = lowest([measurement, *self._remeasure(item, nextitem, self.settings.reruns)])
            findings = self.gate.compare(nodeid, measurement, plan.tolerances)
        return measurement, findings

    def _remeasure(self, item: pytest.Item, nextitem: Optional[pytest.Item], runs: int) -> list[Measurement]:
        """Run the whole test again ``runs`` times with its reports kept out of the results."""
        measurements = []
        for _ in range(runs):
            measured = measured_rerun(item, nextitem, self.tracker)
            if measured is None:
                break  # not repeatable: judge on the runs we have
            measurements.append(measured)
        return measurements

    # -- the gate (controller) -------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        gc.callbacks.append(self._collections)
        try:
            result = yield
        except pytest.Session.Failed:  # -x, --maxfail: the tests that ran were measured whole
            if not self.is_worker:
                self._finish_run(session, interrupted=False, stopped=self._stopped_before_last(session))
            raise
        except BaseException:
            if not self.is_worker:
                if _xdist_stopped_on_failures(self.config):  # its --maxfail/-x: as pytest's own
                    self._finish_run(session, interrupted=False, stopped=self._stopped_before_last(session))
                else:
                    self._finish_run(session, interrupted=True)
            raise
        finally:
            if self._collections in gc.callbacks:
                gc.callbacks.remove(self._collections)
        if not self.is_worker:
            self._finish_run(session, interrupted=False)
        return result

    def _stopped_before_last(self, session: pytest.Session) -> bool:
        """Whether a run stopped on failures left tests it collected without a teardown."""
        return len(self._torn_down) < session.testscollected

    def _finish_run(self, session: pytest.Session, *, interrupted: bool, stopped: bool = False) -> None:
        """On the controller, after the last test: the gate, the baseline update, the JSON file.
        An interrupted run (Ctrl-C, ``pytest.exit``, ``--sw``) writes its JSON and shows the
        gate's findings, but neither updates the baseline nor counts them as failures; one
        ``stopped`` on failures before its last test (``-x``, ``--maxfail``, under xdist too)
        counts them, and does not update the baseline either."""
        if self.config.option.collectonly:
            return
        if self.gate is not None:
            recording, cut_short = self.settings.update_baseline, interrupted or stopped
            update = recording and not cut_short
            self.gate_result = self.gate.finish(self.records, update=update, partial=self._partial)
            if recording and cut_short:
                self.gate_result.held = "the run stopped before its last test; nothing recorded"
            if self.gate_result.failed and self.settings.gate == "fail" and not recording and not interrupted:
                session.testsfailed += len(self.gate_result.regressions)
                # Also in pytest's closing line ("3 passed, 2 memguard regressions"), which
                # would otherwise read as a success next to a non-zero exit code.
                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    entries = [_RegressionEntry(record.nodeid) for record in self.gate_result.regressions]
                    reporter.stats.setdefault(REGRESSIONS_STAT, []).extend(entries)
                    _forget_summary_types(reporter)
        if self.gate_result is not None and self.gate_result.write_failed:
            session.testsfailed += 1  # an update asked for and not made must not pass for one
        self._write_reports()

    def _write_report(self, path: Path, write: Callable[[Path], object]) -> None:
        """One report; one that cannot be written is said, and the others are still written."""
        try:
            write(path)
        except (OSError, UnicodeError) as exc:
            self.write_errors.append(f"could not write a report to {path}: {exc}")

    def _write_reports(self) -> None:
        """Every report asked for, from the same records; markdown also to the job summary."""
        settings, baseline = self.settings, None if self.gate is None else self.gate.path
        if settings.json_path is not None:
            text = render_json(
                self.records, version=__version__, gate=self.gate_result, baseline=baseline, partial=self._partial
            )
            self._write_report(settings.json_path, lambda path: write_atomic(path, text))
        if settings.junit_path is not None:
            self._write_report(settings.junit_path, lambda path: write_junit(path, self.records, self.gate_result))
        if settings.benchmark_json_path is not None:
            benchmark = render_benchmark_json(self.records)
            self._write_report(settings.benchmark_json_path, lambda path: write_atomic(path, benchmark))
        in_actions = settings.step_summary and bool(os.environ.get("GITHUB_STEP_SUMMARY"))
        if settings.markdown_path is None and not (in_actions and self.settings.measure_all):
            return
        markdown = render_markdown(self.records, self.gate_result, top=settings.top, baseline=baseline)
        if settings.markdown_path is not None:
            self._write_report(settings.markdown_path, lambda path: write_atomic(path, markdown))
        if in_actions and self.settings.measure_all:
            try:
                append_step_summary(markdown)
            except OSError as exc:  # a summary we cannot write must not fail the tests
                self.tracker.notes.append(f"could not append to $GITHUB_STEP_SUMMARY: {exc}")

    # -- collecting records (on the controller under xdist) -----------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.nodeid == self._running:
            # Reports logged while we hold the test's own back: subtests (pytest's
            # subtests, unittest's subTest) log themselves, and would again on every re-run.
            self._reported_while_running = True
            self._subtest_failed = self._subtest_failed or report.failed
            return
        if report.when != "teardown" or self.is_worker:
            return
        self._torn_down.add(report.nodeid)
        handed, self._handed = self._handed, None
        if handed is not None and handed[0] is report:
            record: Optional[MemoryRecord] = handed[1]
        else:
            record = MemoryRecord.from_properties(report.nodeid, report.user_properties)
            if any(name == PARTIAL_RUN for name, _ in report.user_properties):
                self._partial.add(report.nodeid)
        if record is not None:
            self.records.append(record)

    # -- a worker's notes, for the controller's summary (xdist) ----------------
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker and self.tracker.notes:
            session.config.workeroutput[WORKER_NOTES] = list(self.tracker.notes)  # type: ignore[attr-defined]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        """A worker's notes (a tracemalloc restart, C heap readings stopped) join the controller's,
        once each however many workers say them."""
        for note in getattr(node, "workeroutput", {}).get(WORKER_NOTES, []):
            if isinstance(note, str) and note not in self.tracker.notes:
                self.tracker.notes.append(note)

    # -- output -------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> Optional[str]:
        if not self.settings.measure_all:
            return None
        return f"memguard: {self.tracker.describe()}"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.is_worker or (not self.records and not self.settings.measure_all) or self.config.option.collectonly:
            return
        verbosity = self.config.get_verbosity()
        for error in self.write_errors:
            terminalreporter.write_line(f"memguard: {error}", red=True)
        if verbosity < -1:
            if self.gate_result is not None and self.gate_result.failed and self.settings.gate == "fail":
                count = len(self.gate_result.regressions)  # -qq still says why the run failed
                terminalreporter.write_line(f"memguard gate: FAILED, {count} regression(s)")
            return
        text = render_summary(self.records, top=self.settings.top, brief=verbosity < 0, notes=self.tracker.notes)
        terminalreporter.write_sep("=", "memguard")
        terminalreporter.write_line(text)
        if self.gate is not None and self.gate_result is not None:
            terminalreporter.write_line("")
            terminalreporter.write_line(
                render_gate(
                    self.gate_result,
                    baseline=self.gate.path,
                    gate=self.settings.gate,
                    update=self.settings.update_baseline,
                    brief=verbosity < 0,
                )
            )

    def close(self) -> None:
        self.tracker.close()


class MaxfailWatch:
    """Registered beside the session only when ``--maxfail``/``-x`` is given as the session starts
    (a hook wrapper around every report costs ~1.5 µs a phase otherwise). pytest tears everything
    down (and reports fixture errors) before a run stops on --maxfail/-x (#11706), deciding from
    session.shouldfail, which its own logreport sets; the session logs after teardown, so say it
    as soon as the failure happens."""

    def __init__(self, session: MemguardSession) -> None:
        self.session = session

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if item.nodeid == self.session.running and report.failed and not hasattr(report, "wasxfail"):
            maxfail = int(item.config.getoption("maxfail", 0) or 0)
            failed = item.session.testsfailed + 1
            if maxfail and failed >= maxfail and not item.session.shouldfail:
                item.session.shouldfail = f"stopping after {failed} failures"
        return report


def _xdist_stopped_on_failures(config: pytest.Config) -> bool:
    """Whether pytest-xdist's controller is stopping the run because ``--maxfail``/``-x`` was
    reached: it raises its ``Interrupted`` (a ``KeyboardInterrupt``) for that too, where pytest
    itself raises ``Session.Failed``. Read from its private counters, defensively: without
    them the stop stays an interruption."""
    dsession = config.pluginmanager.get_plugin("dsession")
    maxfail, failures = getattr(dsession, "maxfail", 0), getattr(dsession, "countfailures", 0)
    return isinstance(maxfail, int) and isinstance(failures, int) and 0 < maxfail <= failures


def _forget_summary_types(reporter: object) -> None:
    """pytest keeps the list of stats keys its closing line counts from the progress output on,
    and sets it afresh only after the last test: a run that stops early (``-x``, ``--maxfail``)
    would leave a key added after the tests out. Reset that cache (private to pytest, hence the
    guard: without it pytest merely rebuilds the line as before)."""
    if getattr(reporter, "_known_types", None) is not None:
        with contextlib.suppress(AttributeError):  # say, a read-only property some day
            reporter._known_types = None  # type: ignore[attr-defined]


def _failure_repr(message: str) -> TerminalRepr:
    """A longrepr that shows the message alone and keeps it as the crash line (``FAILED … - …``)."""
    try:
        raise MemoryLimitExceeded(message) from None  # no "during handling of" a Ctrl-C in flight
    except MemoryLimitExceeded:
        return pytest.ExceptionInfo.from_current().getrepr(style="value")
