"""The JUnit XML file (``--memguard-junit``), written with junitparser. No pytest here.

One ``<testcase>`` per measured test, named the way pytest's own ``--junitxml``
names it (``tests/test_a.py::TestX::test_y[1]`` → classname ``tests.test_a.TestX``,
name ``test_y[1]``), so CI test reporters line the two files up. Its figures are
``<property>`` elements with the names ``report.user_properties`` carries
(``memguard_rss_peak``, ``memguard_verdict``, ...; values are strings). Each
problem is one ``<failure>`` whose message reads on its own::

    <testcase classname="tests.test_io" name="test_load">
      <properties>
        <property name="memguard_rss_peak" value="20971520" />
        ...
      </properties>
      <failure message="peak RSS 10.0 MiB -> 20.0 MiB (+10.0 MiB, +100%; tolerance 768.0 KiB)"
               type="memguard.regression">...</failure>
    </testcase>

Failure types: ``memguard.over_limit`` (a limit breach), ``memguard.leak`` (a
confirmed leak), ``memguard.regression`` (one per figure that regressed against the
baseline). The suite's ``failures`` counts failed tests, not ``<failure>`` elements.
A test with an allocation analysis carries it twice: as the ``memguard_analysis``
property (compact JSON, as on the report) and as readable ``<system-out>`` text.
Characters XML 1.0 forbids are shown as ``#xNN`` (as pytest does), so the file
always parses.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from junitparser import Failure, JUnitXml, Properties, Property, TestCase, TestSuite

from ..baseline import write_atomic
from ..gate import GateResult
from ..record import MemoryRecord, Verdict
from ..units import format_size
from .escape import xml_safe

__all__ = ["junit_names", "render_junit", "write_junit"]

_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>\s*")


def junit_names(nodeid: str) -> tuple[str, str]:
    """``(classname, name)`` as pytest's junitxml splits a node id.

    The file path becomes a dotted module (``tests/test_a.py`` → ``tests.test_a``), the
    classes follow it, and the last name keeps its parameters whole, even when they
    contain ``::`` or ``/``.
    """
    path, sep, tail = nodeid.partition("::")
    module = re.sub(r"\.py$", "", path.replace("/", "."))
    if not sep:
        return "", module
    names, bracket, params = tail.partition("[")
    parts = [module, *names.split("::")]
    return ".".join(parts[:-1]), parts[-1] + bracket + params


def _failures(record: MemoryRecord) -> list[tuple[str, str, str]]:
    """``(type, message, text)`` for each problem of one test."""
    found = []
    if record.verdict == Verdict.OVER_LIMIT:
        found.append(("memguard.over_limit", record.message or "over its memory limit", record.message))
    leak = record.leak
    if leak is not None and leak.confirmed:
        text = [leak.summary(), f"pressure {leak.pressure:.2f}"]
        if leak.indicators:
            text.append(f"indicators: {', '.join(leak.indicators)}")
        text += [f"{site.where}: {format_size(site.size)}/run, {site.count:,} blocks/run" for site in leak.sites]
        found.append(("memguard.leak", leak.summary(), "\n".join(text)))
    for finding in record.findings:
        if finding.kind == "regression":
            found.append(("memguard.regression", finding.message(), f"{record.nodeid}: {finding.message()}"))
    return found


def _testcase(record: MemoryRecord) -> tuple[TestCase, bool]:
    classname, name = junit_names(record.nodeid)
    case = TestCase(xml_safe(name), xml_safe(classname))
    # junitparser's element methods carry no annotations: hence the ignores below.
    properties = Properties()  # type: ignore[no-untyped-call]
    for key, value in record.to_properties():
        properties.add_property(Property(xml_safe(key), xml_safe(value)))
    case.append(properties)  # type: ignore[no-untyped-call]
    failures = [_failure(kind, message, text) for kind, message, text in _failures(record)]
    if failures:
        case.result = [*failures]
    if record.analysis is not None:
        case.system_out = xml_safe(record.analysis.to_text())
    return case, bool(failures)


def _failure(kind: str, message: str, text: str) -> Failure:
    failure = Failure(xml_safe(message), kind)
    failure.text = xml_safe(text)
    return failure


def render_junit(
    records: Sequence[MemoryRecord], gate: Optional[GateResult] = None, *, suite_name: str = "pytest-memguard"
) -> str:
    """The XML document as text (UTF-8 declared), test cases sorted by node id."""
    suite = TestSuite(xml_safe(suite_name))
    suite.add_property("memguard_tests_measured", str(len(records)))
    if gate is not None:
        suite.add_property("memguard_gate_failed", "true" if gate.failed else "false")
        for key, items in (
            ("regressions", gate.regressions),
            ("improvements", gate.improvements),
            ("new", gate.new),
            ("not_run", gate.not_run),
        ):
            suite.add_property(f"memguard_{key}", str(len(items)))
        if gate.environment_note:
            suite.add_property("memguard_environment_note", xml_safe(gate.environment_note))
    cases = [_testcase(record) for record in sorted(records, key=lambda r: r.nodeid)]
    suite.add_testcases([case for case, _ in cases])
    root = JUnitXml(xml_safe(suite_name))
    root.add_testsuite(suite)
    root.update_statistics()  # type: ignore[no-untyped-call]
    failed = sum(1 for _, has_failure in cases if has_failure)
    suite.failures = failed
    root.failures = failed
    body = root.tostring()  # type: ignore[no-untyped-call]
    text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
    # ElementTree writes a declaration here and lxml does not: write the same one either way.
    return '<?xml version="1.0" encoding="utf-8"?>\n' + _DECLARATION.sub("", text, count=1).rstrip() + "\n"


def write_junit(
    path: Path,
    records: Sequence[MemoryRecord],
    gate: Optional[GateResult] = None,
    *,
    suite_name: str = "pytest-memguard",
) -> None:
    """Write the JUnit file atomically (a temporary file and a rename)."""
    write_atomic(path, render_junit(records, gate, suite_name=suite_name))
