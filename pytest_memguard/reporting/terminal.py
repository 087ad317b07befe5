"""The terminal summary section and the per-test failure details (tabulate)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from tabulate import tabulate

from ..gate import GateResult
from ..leak_detector import session_pressure
from ..limits import LIMIT_KEYS, Breach, Limit, describe_amount, measured_value
from ..record import MemoryRecord, Verdict
from ..tolerance import FIGURES
from ..units import format_size

__all__ = ["render_details", "render_gate", "render_summary"]


def _size(value: int | None, *, signed: bool = False) -> str:
    return "-" if value is None else format_size(value, signed=signed)


def _columns(records: Sequence[MemoryRecord]) -> list[tuple[str, Callable[[MemoryRecord], str]]]:
    """Only the columns some record has a figure for, so a plain run stays narrow."""
    columns: list[tuple[str, Callable[[MemoryRecord], str]]] = [
        ("test", lambda r: r.nodeid),
        ("peak RSS", lambda r: _size(r.measurement.rss_peak)),
        ("retained RSS", lambda r: _size(r.measurement.rss_retained, signed=True)),
    ]
    if any(r.measurement.heap_peak is not None for r in records):
        columns.append(("peak heap", lambda r: _size(r.measurement.heap_peak)))
        columns.append(("retained heap", lambda r: _size(r.measurement.heap_retained, signed=True)))
    if any(r.measurement.fds_gained for r in records):
        columns.append(("fds gained", lambda r: str(r.measurement.fds_gained or 0)))
    columns.append(("verdict", lambda r: r.verdict))
    return columns


def _table(records: Sequence[MemoryRecord], columns: list[tuple[str, Callable[[MemoryRecord], str]]]) -> str:
    rows = [[render(record) for _, render in columns] for record in records]
    align = ["left"] + ["right"] * (len(columns) - 2) + ["left"]
    return tabulate(rows, headers=[name for name, _ in columns], colalign=align, disable_numparse=True)


def _analysis_lines(record: MemoryRecord) -> list[str]:
    """Where the test's bytes went, under its line: three sites per table (the JSON report has five)."""
    if record.analysis is None:
        return []
    return [f"      {line}" for line in record.analysis.to_text(sites=3).splitlines()]


def _top(records: Iterable[MemoryRecord], key: Callable[[MemoryRecord], int], count: int) -> list[MemoryRecord]:
    # Ties broken by node id so the table is the same with and without xdist.
    return sorted(records, key=lambda r: (-key(r), r.nodeid))[:count]


def render_summary(records: Sequence[MemoryRecord], *, top: int, brief: bool, notes: Sequence[str] = ()) -> str:
    """The ``memguard`` section: a headline, the heaviest tests, every breach."""
    over = [r for r in records if r.verdict == Verdict.OVER_LIMIT]
    leaks = [r for r in records if r.leak is not None and r.leak.confirmed]
    suspects = [r for r in records if r.leak is not None]
    unchecked = [r for r in suspects if not r.leak.confirmed and r.leak.note]  # type: ignore[union-attr]
    headline = f"{len(records)} test{'' if len(records) == 1 else 's'} measured"
    if over:
        headline += f", {len(over)} over limit"
    if leaks:
        headline += f", {len(leaks)} leak{'' if len(leaks) == 1 else 's'}"
    if records:
        heaviest = max(records, key=lambda r: (r.measurement.rss_peak, r.nodeid))
        headline += f"; highest peak RSS {format_size(heaviest.measurement.rss_peak)} ({heaviest.nodeid})"
    lines = [headline]
    if not brief and top and records:
        columns = _columns(records)
        lines += ["", f"Top {min(top, len(records))} by peak RSS:"]
        lines.append(_table(_top(records, lambda r: r.measurement.rss_peak, top), columns))
        lines += ["", f"Top {min(top, len(records))} by retained RSS:"]
        lines.append(_table(_top(records, lambda r: r.measurement.rss_retained, top), columns))
    if over:
        lines += ["", "Over limit:"]
        for record in sorted(over, key=lambda r: r.nodeid):
            lines.append(f"  {record.nodeid}: {record.message}")
            lines += [] if brief else _analysis_lines(record)
    if leaks:
        lines += ["", "Leaks (confirmed by re-running the test):"]
        for record in sorted(leaks, key=lambda r: r.nodeid):
            leak = record.leak
            assert leak is not None
            lines.append(f"  {record.nodeid}: {leak.summary()}")
            if not brief:
                lines += [
                    f"      {format_size(site.size)}/run, {site.count}/run at {site.where}" for site in leak.sites
                ]
                # Over its limit too: its analysis is under its breach line already.
                lines += _analysis_lines(record) if record.verdict == Verdict.LEAK else []
    rerun = [r for r in suspects if r.leak is not None and r.leak.runs > 1]
    if rerun:
        pressure = session_pressure([r.leak.pressure for r in suspects if r.leak is not None])
        lines.append(
            f"leak screening: {len(rerun)} suspect(s) re-run to confirm, {len(leaks)} confirmed; "
            f"session memory pressure {pressure:.2f}"
        )
    lines += [f"not checked for leaks: {r.nodeid}: {r.leak.note}" for r in unchecked if r.leak is not None]
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines)


def render_details(record: MemoryRecord, limits: Mapping[str, Limit], breaches: Sequence[Breach]) -> str:
    """The ``memguard`` report section of a failed test: every figure against its limit."""
    breached = {breach.limit.key for breach in breaches}
    rows = []
    for key, label in LIMIT_KEYS.items():
        value = measured_value(record.measurement, key)
        limit = limits.get(key)
        if value is None and limit is None:
            continue
        shown = "-" if value is None else describe_amount(key, value)
        rows.append(
            [
                label,
                shown,
                "-" if limit is None else limit.shown(),
                "-" if limit is None else limit.source,
                "OVER" if key in breached else "ok",
            ]
        )
    table = tabulate(rows, headers=["figure", "measured", "limit", "limit from", "status"], disable_numparse=True)
    leak = record.leak
    if leak is None or not leak.confirmed:
        return table
    lines = [table, "", f"leak: {leak.summary()}"]
    if leak.indicators:
        lines.append(f"indicators: {', '.join(leak.indicators)}; memory pressure {leak.pressure:.2f}")
    lines += [f"  {format_size(site.size)}/run, {site.count}/run at {site.where}" for site in leak.sites]
    return "\n".join(lines)


def _findings_table(records: Sequence[MemoryRecord], kind: str) -> str:
    """The ``kind`` findings (regression, improvement) of ``records``, one row each: a regressed
    test's other figures that went down are not regressions (the markdown report agrees)."""
    rows = [
        [
            record.nodeid,
            FIGURES[finding.figure],
            format_size(finding.baseline),
            format_size(finding.current),
            finding.describe_change(),
            format_size(finding.threshold),
        ]
        for record in records
        for finding in record.findings
        if finding.kind == kind
    ]
    headers = ["test", "figure", "baseline", "now", "change", "tolerance"]
    return tabulate(rows, headers=headers, colalign=["left", "left", "right", "right", "right", "right"])


def render_gate(
    result: GateResult, *, baseline: Path, gate: str, update: bool, brief: bool, remeasured: bool = True
) -> str:
    """The gate's verdict against the baseline, then what moved, what is new, what did not run.
    ``remeasured``: regressions were re-measured before they counted (in a pytest run)."""
    lines = []
    count = len(result.regressions)
    regressions = f"{count} regression{'' if count == 1 else 's'}"
    if update:
        if result.held:
            state = f"not written ({result.held})"
        else:
            state = f"written ({result.changed_entries} entries changed)" if result.written else "unchanged"
        lines.append(f"memguard baseline {baseline}: {state}")
        if result.unrecorded:
            left_out, shown = len(result.unrecorded), ", ".join(result.unrecorded[:5])
            tests = "1 test that did not pass on its own"
            if left_out > 1:
                tests = f"{left_out} tests that did not pass on their own"
            lines.append(
                f"{tests} not recorded (failed, skipped or xfailed: a run cut short is not what a test uses; "
                f"entries already there are kept): {shown}{', …' if left_out > 5 else ''}"
            )
    elif result.failed and gate == "fail":
        lines.append(f"memguard gate: FAILED, {regressions} against {baseline}")
    elif result.failed:
        lines.append(f"memguard gate: {regressions} against {baseline} (--memguard-gate=warn: not failing)")
    else:
        lines.append(f"memguard gate: passed, no regression against {baseline}")
    if result.regressions and not brief:
        title = "Regressions (re-measured before they count):" if remeasured else "Regressions:"
        lines += ["", title, _findings_table(result.regressions, "regression")]
        # Over their limit or leaking too: their analysis is in the summary above already.
        for record in (r for r in result.regressions if r.verdict == Verdict.REGRESSION and r.analysis):
            lines += [f"  {record.nodeid}:", *_analysis_lines(record)]
    elif result.regressions:
        lines += [f"  {record.nodeid}: {record.message}" for record in result.regressions]
    if result.improvements and not brief:
        lines += [
            "",
            "Improvements (refresh with --memguard-update-baseline):",
            _findings_table(result.improvements, "improvement"),
        ]
    if result.new and not update:
        lines.append(f"{len(result.new)} test(s) not in the baseline yet; --memguard-update-baseline records them")
    if result.not_run and not brief:
        lines.append(f"{len(result.not_run)} test(s) in the baseline did not run here (deselected, skipped or removed)")
    if result.environment_note:
        lines.append(f"note: {result.environment_note}")
    return "\n".join(lines)
