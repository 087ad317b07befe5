"""The plugin object: measures each test, judges it, collects records, prints the summary.

Per test it runs pytest's own protocol with logging held back (as pytest-rerunfailures
and pytest-leaks do), so the verdict, known only after teardown, can fail the
*call* report: a breach reads ``FAILED``, not an error at teardown. Reports are
then logged as usual, which is also how they reach the xdist controller.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Generator, Optional

import pytest
from _pytest.runner import runtestprotocol  # the one private import: owning the protocol needs it

from . import __version__
from .baseline import BaselineError, Finding, write_atomic
from .gate import BaselineGate, GateResult, lowest, verdict_for
from .limits import HEAP_KEYS, RETAINED_KEYS, Limit, LimitError, check_limits, merge_limits, parse_limits
from .record import MemoryRecord, Verdict
from .reporting.json_report import render_json
from .reporting.terminal import render_details, render_gate, render_summary
from .settings import Settings
from .tolerance import Tolerance, ToleranceError, parse_figure_tolerances
from .tracker import Measurement, Start, Tracker

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr
    from _pytest.nodes import Node

__all__ = ["MemguardSession", "MemoryLimitExceeded"]

MARKER = "memguard"
REGRESSIONS_STAT = "memguard regressions"
#: marker keywords that are not limits
MARKER_OPTIONS = frozenset({"tolerance"})


class MemoryLimitExceeded(Exception):
    """Raised (and caught) only to give a breach a one-line failure pytest can render and ship."""


# The crash line reads "MemoryLimitExceeded: peak RSS ..." rather than the dotted path,
# which would push the figures off the short test summary.
MemoryLimitExceeded.__module__ = "builtins"


class _Plan:
    """What to do with one collected test: limits, tolerances, or why its marker is invalid."""

    __slots__ = ("error", "limits", "tolerances")

    def __init__(
        self,
        limits: dict[str, Limit],
        error: Optional[str] = None,
        tolerances: Optional[dict[str, Tolerance]] = None,
    ) -> None:
        self.limits = limits
        self.error = error
        self.tolerances = tolerances


_PLAN = pytest.StashKey[_Plan]()


def _describe_node(node: Node) -> str:
    if isinstance(node, pytest.Class):
        return f"@pytest.mark.memguard on class {node.name}"
    if isinstance(node, pytest.Module):
        return f"pytestmark in {node.name}"
    return f"@pytest.mark.memguard on {node.name}"


class MemguardSession:
    """Registered as ``memguard-session`` in every process (controller and xdist workers)."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.tracker = Tracker(trace=settings.trace)
        self.records: list[MemoryRecord] = []
        self.is_worker = hasattr(config, "workerinput")
        self.gate: Optional[BaselineGate] = None
        self.gate_result: Optional[GateResult] = None
        path = settings.baseline_path
        if settings.measure_all and path is not None and (settings.update_baseline or path.exists()):
            try:
                self.gate = BaselineGate.load(path, settings.tolerances)
            except BaselineError as exc:
                raise pytest.UsageError(f"memguard: {exc}") from None

    # -- collection: decide which tests are measured, validate their markers ---
    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        global_limits = self.settings.limits
        for item in items:
            marked = list(item.iter_markers_with_node(MARKER))
            if not marked and not self.settings.measure_all:
                continue
            try:
                layers = [self._marker_limits(node, mark) for node, mark in marked]
                tolerances = self._marker_tolerances(marked)
            except LimitError as exc:
                item.stash[_PLAN] = _Plan({}, f"memguard: invalid marker on {item.nodeid}: {exc}")
                continue
            limits = merge_limits([*layers, global_limits])
            if not self.tracker.tracing and HEAP_KEYS.intersection(limits):
                self.tracker.enable_tracing()  # a heap limit is meaningless without tracemalloc
            item.stash[_PLAN] = _Plan(limits, tolerances=tolerances)

    @staticmethod
    def _marker_limits(node: Node, mark: pytest.Mark) -> dict[str, Optional[Limit]]:
        source = _describe_node(node)
        if mark.args:
            raise LimitError(f"{source} takes keywords only, e.g. memguard(peak='50 MB'), got {mark.args!r}")
        values = {key: value for key, value in mark.kwargs.items() if key not in MARKER_OPTIONS}
        try:
            return parse_limits(values, source)
        except LimitError as exc:
            raise LimitError(f"{exc} ({source})") from None

    def _marker_tolerances(self, marked: list[tuple[Node, pytest.Mark]]) -> Optional[dict[str, Tolerance]]:
        """``tolerance="20%"`` (every figure) or ``tolerance={"rss": "20%"}``; nearest marker wins."""
        for node, mark in marked:
            if "tolerance" not in mark.kwargs:
                continue
            spec = mark.kwargs["tolerance"]
            values = spec if isinstance(spec, dict) else {"all": spec}
            try:
                return parse_figure_tolerances(values, self.settings.tolerances.defaults, "tolerance")
            except ToleranceError as exc:
                raise LimitError(f"{exc} ({_describe_node(node)})") from None
        return None

    # -- running ------------------------------------------------------------
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        plan = item.stash.get(_PLAN, None)
        if plan is not None and plan.error is not None:
            pytest.fail(plan.error, pytrace=False)

    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Optional[bool]:
        plan = item.stash.get(_PLAN, None)
        if plan is None or plan.error is not None:
            return None  # pytest's own protocol; a bad marker fails in setup
        ihook = item.ihook
        ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        start = self.tracker.start()
        reports = runtestprotocol(item, nextitem=nextitem, log=False)
        measurement = self.tracker.finish(start)
        if any(report.when == "call" for report in reports):
            self._judge(item, nextitem, plan, start, measurement, reports)
        for report in reports:
            ihook.pytest_runtest_logreport(report=report)
        ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _judge(
        self,
        item: pytest.Item,
        nextitem: Optional[pytest.Item],
        plan: _Plan,
        start: Start,
        measurement: Measurement,
        reports: list[pytest.TestReport],
    ) -> None:
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
        passed = all(report.passed for report in reports)
        measurement, findings = self._compare(item, nextitem, plan, measurement, rerun=passed)
        messages = [breach.message() for breach in breaches] + [f.message() for f in findings]
        verdict = Verdict.OVER_LIMIT if breaches else verdict_for(findings, self._in_baseline(item.nodeid))
        record = MemoryRecord(item.nodeid, measurement, verdict, "; ".join(messages), tuple(findings))
        message = "; ".join(breach.message() for breach in breaches)
        properties = record.to_properties()
        for report in reports:
            report.user_properties.extend(properties)
            if breaches:
                report.sections.append(("memguard", render_details(record, plan.limits, breaches)))
        call = next(report for report in reports if report.when == "call")
        if breaches and call.passed:
            call.outcome = "failed"
            call.longrepr = _failure_repr(message)

    def _in_baseline(self, nodeid: str) -> bool:
        return self.gate is None or self.gate.entry(nodeid) is not None

    def _compare(
        self,
        item: pytest.Item,
        nextitem: Optional[pytest.Item],
        plan: _Plan,
        measurement: Measurement,
        *,
        rerun: bool,
    ) -> tuple[Measurement, list[Finding]]:
        """Findings against the baseline; a regression is re-measured before it counts."""
        if self.gate is None:
            return measurement, []
        findings = self.gate.compare(item.nodeid, measurement, plan.tolerances)
        if rerun and self.settings.reruns and any(f.kind == "regression" for f in findings):
            # One sample in a full session is noisy (allocator state, first calls):
            # run the test again, unlogged, and keep each figure's lowest value.
            measurement = lowest([measurement, *self._remeasure(item, nextitem, self.settings.reruns)])
            findings = self.gate.compare(item.nodeid, measurement, plan.tolerances)
        return measurement, findings

    def _remeasure(self, item: pytest.Item, nextitem: Optional[pytest.Item], runs: int) -> list[Measurement]:
        """Run the whole test again ``runs`` times with its reports kept out of the results."""
        measurements = []
        for _ in range(runs):
            start = self.tracker.start()
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            measured = self.tracker.finish(start)
            if not all(report.passed for report in reports):
                break  # not repeatable: judge on the runs we have
            measurements.append(measured)
        return measurements

    # -- the gate (controller) -------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        try:
            result = yield
        except BaseException:
            if not self.is_worker:
                self._finish_run(session, interrupted=True)
            raise
        if not self.is_worker:
            self._finish_run(session, interrupted=False)
        return result

    def _finish_run(self, session: pytest.Session, *, interrupted: bool) -> None:
        """On the controller, after the last test: the gate, the baseline update, the JSON file.
        An interrupted run writes its JSON but neither updates the baseline nor gates."""
        if self.gate is not None:
            update = self.settings.update_baseline and not interrupted
            self.gate_result = self.gate.finish(self.records, update=update)
            if self.gate_result.failed and self.settings.gate == "fail" and not update and not interrupted:
                session.testsfailed += len(self.gate_result.regressions)
                # Also in pytest's closing line ("3 passed, 2 memguard regressions"), which
                # would otherwise read as a success next to a non-zero exit code.
                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.stats.setdefault(REGRESSIONS_STAT, []).extend(self.gate_result.regressions)
        if self.settings.json_path is not None:
            text = render_json(
                self.records,
                version=__version__,
                gate=self.gate_result,
                baseline=None if self.gate is None else self.gate.path,
            )
            write_atomic(self.settings.json_path, text)

    # -- collecting records (on the controller under xdist) -----------------
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "teardown" or self.is_worker:
            return
        record = MemoryRecord.from_properties(report.nodeid, report.user_properties)
        if record is not None:
            self.records.append(record)

    # -- output -------------------------------------------------------------
    def pytest_report_header(self, config: pytest.Config) -> Optional[str]:
        if not self.settings.measure_all:
            return None
        return f"memguard: {self.tracker.describe()}"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.is_worker or (not self.records and not self.settings.measure_all):
            return
        verbosity = self.config.get_verbosity()
        if verbosity < -1:
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


def _failure_repr(message: str) -> TerminalRepr:
    """A longrepr that shows the message alone and keeps it as the crash line (``FAILED … - …``)."""
    try:
        raise MemoryLimitExceeded(message)
    except MemoryLimitExceeded:
        return pytest.ExceptionInfo.from_current().getrepr(style="value")
