"""The markdown report for a pull-request comment or a GitHub job summary (tabulate, GitHub-flavoured).

No pytest here. The first line is the verdict; then, each only when it has rows:
regressions, confirmed leaks, tests over their limit, the heaviest tests by peak RSS
(with a mermaid bar chart), improvements, new tests, baseline tests that did not
run, the environment note, and per-test ``<details>`` blocks (leaks, tests with an
allocation analysis, then the heaviest; an analysis is shown in its test's block).

Every piece of text that comes from a test (ids, parameters, messages, allocation
sites) goes through :mod:`.escape`. However large the suite, the report stays
under ``max_chars``: lists are cut (most severe first) with a line saying how
many more there are, and the JSON report (``--memguard-json``) has them all.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from tabulate import tabulate

from ..allocation_analyzer import AllocationAnalysis, SiteStat
from ..baseline import Finding
from ..gate import GateResult
from ..record import MemoryRecord, Verdict
from ..tolerance import FIGURES
from ..units import format_size
from .escape import escape_html, escape_markdown, markdown_code, mermaid_label, shorten
from .junit import junit_names

__all__ = ["append_step_summary", "render_markdown"]

MIB = 1024 * 1024
ID_LIMIT = 200  # characters of a test id shown; the JSON report has every id whole
_ROW_STEPS = (100, 50, 25, 10, 5, 2, 1, 0)  # rows per list, fewer until the report fits
_FIGURE_NAMES = {**FIGURES, "fds_gained": "open files gained"}

Row = list[str]


@dataclass(frozen=True)
class _Report:
    """The session result sorted once, most severe first; rendering only slices it."""

    measured: int
    compared: bool
    regressions: list[tuple[MemoryRecord, Finding]]
    regressed_tests: int
    improvements: list[tuple[MemoryRecord, Finding]]
    leaks: list[MemoryRecord]
    analysed: list[MemoryRecord]
    over_limit: list[MemoryRecord]
    heaviest: list[MemoryRecord]
    show_heap: bool
    new: int
    not_run: list[str]
    environment_note: str


def _collect(records: Sequence[MemoryRecord], gate: Optional[GateResult], top: int) -> _Report:
    if gate is not None:
        regressed, improved = gate.regressions, gate.improvements
    else:
        regressed = [r for r in records if any(f.kind == "regression" for f in r.findings)]
        improved = [r for r in records if r.findings and not any(f.kind == "regression" for f in r.findings)]
    regressions = [(r, f) for r in regressed for f in r.findings if f.kind == "regression"]
    improvements = [(r, f) for r in improved for f in r.findings if f.kind == "improvement"]
    leaks = [r for r in records if r.leak is not None and r.leak.confirmed]
    return _Report(
        measured=len(records),
        compared=gate is not None,
        regressions=sorted(regressions, key=lambda p: (-p[1].change, p[0].nodeid, p[1].figure)),
        regressed_tests=len(regressed),
        improvements=sorted(improvements, key=lambda p: (p[1].change, p[0].nodeid, p[1].figure)),
        leaks=sorted(leaks, key=lambda r: (-r.leak.bytes_per_run if r.leak else 0, r.nodeid)),
        analysed=sorted((r for r in records if r.analysis is not None), key=lambda r: (r.verdict, r.nodeid)),
        over_limit=sorted((r for r in records if r.verdict == Verdict.OVER_LIMIT), key=lambda r: r.nodeid),
        # Ties broken by node id so the report is the same with and without xdist.
        heaviest=sorted(records, key=lambda r: (-r.measurement.rss_peak, r.nodeid))[: max(top, 0)],
        show_heap=any(r.measurement.heap_peak is not None for r in records),
        new=len(gate.new) if gate else 0,
        not_run=list(gate.not_run) if gate else [],
        environment_note=gate.environment_note if gate else "",
    )


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _test(nodeid: str) -> str:
    return markdown_code(shorten(nodeid, ID_LIMIT))


def _size(value: Optional[int], *, signed: bool = False) -> str:
    return "-" if value is None else format_size(value, signed=signed)


def _table(headers: Sequence[str], rows: Sequence[Row], align: Sequence[str]) -> str:
    return tabulate(rows, headers=list(headers), tablefmt="github", colalign=list(align), disable_numparse=True)


def _more(shown: int, total: int, what: str = "tests") -> list[str]:
    left = total - shown
    return [f"… and {left:,} more {what} (see the JSON report)"] if left > 0 else []


def _headline(report: _Report) -> str:
    measured = f"{_plural(report.measured, 'test')} measured"
    problems = []
    if report.regressed_tests:
        problems.append(_plural(report.regressed_tests, "regression"))
    if report.leaks:
        problems.append(_plural(len(report.leaks), "leak"))
    if report.over_limit:
        problems.append(f"{len(report.over_limit):,} over limit")
    if problems:
        return f"## ❌ pytest-memguard: {', '.join(problems)} · {measured}"
    fine = "no memory regression" if report.compared else "no limit breached, no leak found"
    return f"## ✅ pytest-memguard: {fine} · {measured}"


def _findings(title: str, pairs: list[tuple[MemoryRecord, Finding]], rows: int, hint: str = "") -> list[str]:
    if not pairs:
        return []
    table = [
        [
            _test(record.nodeid),
            FIGURES[finding.figure],
            f"{format_size(finding.baseline)} → {format_size(finding.current)}",
            finding.describe_change(),
            format_size(finding.threshold),
        ]
        for record, finding in pairs[:rows]
    ]
    lines = [f"### {title}"] + ([hint] if hint else [])
    if table:
        headers = ["test", "figure", "baseline → now", "change", "tolerance"]
        lines.append(_table(headers, table, ["left", "left", "right", "right", "right"]))
    return ["\n\n".join(lines), *_more(len(table), len(pairs), "figures")]


def _leaks(report: _Report, rows: int) -> list[str]:
    if not report.leaks:
        return []
    table = []
    for record in report.leaks[:rows]:
        leak = record.leak
        assert leak is not None
        site = leak.sites[0] if leak.sites else None
        where = "-" if site is None else f"{markdown_code(shorten(site.where, 80))} ({format_size(site.size)}/run)"
        table.append(
            [
                _test(record.nodeid),
                format_size(leak.bytes_per_run),
                f"{leak.blocks_per_run:,.0f}",
                f"{leak.fds_per_run:g}",
                str(leak.runs),
                where,
                escape_markdown(shorten(leak.note, 300)) or "-",
            ]
        )
    headers = ["test", "leaked/run", "objects/run", "fds/run", "runs", "top site", "note"]
    lines = ["### Leaks (confirmed by re-running)"]
    if table:
        lines.append(_table(headers, table, ["left", "right", "right", "right", "right", "left", "left"]))
    return ["\n\n".join(lines), *_more(len(table), len(report.leaks))]


def _over_limit(report: _Report, rows: int) -> list[str]:
    if not report.over_limit:
        return []
    table = [[_test(r.nodeid), escape_markdown(shorten(r.message, 500))] for r in report.over_limit[:rows]]
    lines = ["### Over limit"] + ([_table(["test", "why"], table, ["left", "left"])] if table else [])
    return ["\n\n".join(lines), *_more(len(table), len(report.over_limit))]


def _columns(report: _Report) -> list[tuple[str, Callable[[MemoryRecord], str]]]:
    columns: list[tuple[str, Callable[[MemoryRecord], str]]] = [
        ("test", lambda r: _test(r.nodeid)),
        ("peak RSS", lambda r: format_size(r.measurement.rss_peak)),
        ("retained RSS", lambda r: format_size(r.measurement.rss_retained, signed=True)),
    ]
    if report.show_heap:
        columns.append(("peak heap", lambda r: _size(r.measurement.heap_peak)))
        columns.append(("retained heap", lambda r: _size(r.measurement.heap_retained, signed=True)))
    columns.append(("verdict", lambda r: escape_markdown(r.verdict)))
    return columns


def _chart(records: Sequence[MemoryRecord]) -> str:
    """A mermaid bar chart GitHub draws natively; labels keep only harmless characters."""
    labels = ", ".join(f'"{rank} {mermaid_label(junit_names(r.nodeid)[1], 20)}"' for rank, r in enumerate(records, 1))
    values = [max(r.measurement.rss_peak, 0) / MIB for r in records]
    ceiling = max(1, math.ceil(max(values) * 1.1))
    bars = ", ".join(f"{value:.1f}" for value in values)
    return (
        "```mermaid\nxychart-beta\n"
        '    title "Peak RSS of the heaviest tests (MiB)"\n'
        f"    x-axis [{labels}]\n"
        f'    y-axis "MiB" 0 --> {ceiling}\n'
        f"    bar [{bars}]\n```"
    )


def _heaviest(report: _Report, rows: int) -> list[str]:
    shown = report.heaviest[:rows]
    if not shown:
        return []
    columns = _columns(report)
    table = _table(
        [name for name, _ in columns],
        [[render(r) for _, render in columns] for r in shown],
        ["left"] + ["right"] * (len(columns) - 2) + ["left"],
    )
    return [f"### Heaviest {_plural(len(shown), 'test')} by peak RSS", table, _chart(shown)]


def _others(report: _Report, rows: int) -> list[str]:
    parts = []
    if report.new:
        parts.append(
            f"{_plural(report.new, 'test')} not in the baseline yet "
            "(`pytest --memguard --memguard-update-baseline` adds new tests)."
        )
    if report.not_run:
        what = (
            f"{_plural(len(report.not_run), 'test')} in the baseline did not run here (deselected, skipped or removed)"
        )
        shown = report.not_run[:rows]
        if shown:
            items = "\n".join(f"- {_test(nodeid)}" for nodeid in shown)
            more = "".join(f"\n\n{line}" for line in _more(len(shown), len(report.not_run)))
            parts.append(f"<details><summary>{what}</summary>\n\n{items}{more}\n\n</details>")
        else:
            parts.append(f"{what}.")
    if report.environment_note:
        parts.append(f"> **Note:** {escape_markdown(shorten(report.environment_note, 1000))}")
    return parts


def _site_rows(sites: Sequence[SiteStat]) -> list[Row]:
    return [
        [
            markdown_code(shorten(s.where, 160)),
            format_size(s.size, signed=True),
            f"{s.count:+,}",
            format_size(s.average),
        ]
        for s in sites
    ]


def _analysis(analysis: AllocationAnalysis) -> list[str]:
    """Where the test's bytes went, from one more run under tracemalloc (paths and advice escaped)."""
    figures = [
        f"retained {format_size(analysis.retained_bytes, signed=True)} in {analysis.retained_blocks:+,} blocks",
        f"allocated {format_size(analysis.allocated_bytes)}, freed {format_size(analysis.freed_bytes)}",
    ]
    if analysis.peak_bytes is not None:
        figures.append(f"peak {format_size(analysis.peak_bytes)}")
    figures.append(f"efficiency {analysis.efficiency:.2f}")
    parts = [f"**Allocation analysis** (one more run under tracemalloc): {'; '.join(figures)}"]
    align = ["left", "right", "right", "right"]
    if analysis.peak_sites and analysis.peak_snapshot_bytes is not None:
        parts.append(f"Held near the peak (snapshot at {format_size(analysis.peak_snapshot_bytes)}):")
        parts.append(_table(["peak site", "size", "blocks", "average"], _site_rows(analysis.peak_sites), align))
    if analysis.top_by_size:
        parts.append(_table(["kept at", "size", "blocks", "average"], _site_rows(analysis.top_by_size), align))
    grown = [f"{c.name} {c.count:,} ({format_size(c.size)})" for c in analysis.size_classes if c.count]
    if grown:
        parts.append("Blocks gained: " + ", ".join(grown))
    if analysis.by_component:
        packages = [f"{markdown_code(g.name)} {format_size(g.size, signed=True)}" for g in analysis.by_component]
        parts.append("By package: " + ", ".join(packages))
    if analysis.operations_labelled:  # labels come from test and fixture names: as code, like paths
        for title, groups in (
            ("By operation near the peak", analysis.peak_by_operation),
            ("By operation", analysis.by_operation),
        ):
            if groups:
                shares = [f"{markdown_code(shorten(g.name, 120))} {format_size(g.size, signed=True)}" for g in groups]
                parts.append(f"{title}: " + ", ".join(shares))
    if analysis.recommendations:  # as code: they quote paths, which may hold an @mention
        parts.append("\n".join(f"- {markdown_code(shorten(text, 300))}" for text in analysis.recommendations))
    return parts


def _details(record: MemoryRecord) -> str:
    """One test, folded: every figure, what moved against the baseline, the limit breach, leak sites, analysis."""
    moved = {f.figure: f for f in record.findings}
    rows = []
    for figure, value in record.measurement._asdict().items():
        if value is None:
            continue
        shown = str(value) if figure == "fds_gained" else format_size(value, signed=figure.endswith("retained"))
        finding = moved.get(figure)
        against = "-"
        if finding is not None:
            against = f"{finding.kind}: {format_size(finding.baseline)} → {shown}, {finding.describe_change()}"
            against += f" (tolerance {format_size(finding.threshold)})"
        rows.append([_FIGURE_NAMES.get(figure, figure), shown, against])
    summary = (
        f"<code>{escape_html(shorten(record.nodeid, ID_LIMIT))}</code> · "
        f"peak RSS {format_size(record.measurement.rss_peak)} · {escape_html(record.verdict)}"
    )
    body = [_table(["figure", "measured", "against the baseline"], rows, ["left", "right", "left"])]
    if record.message:
        body.append(f"**Why:** {escape_markdown(shorten(record.message, 500))}")
    if record.leak is not None and record.leak.confirmed:
        leak = record.leak
        text = f"**Leak:** {escape_markdown(leak.summary())}; pressure {leak.pressure:.2f}"
        if leak.indicators:
            text += f"; indicators: {escape_markdown(', '.join(leak.indicators))}"
        body.append(text)
        if leak.sites:
            sites = [[markdown_code(shorten(s.where, 120)), format_size(s.size), f"{s.count:,}"] for s in leak.sites]
            body.append(_table(["allocated at", "bytes/run", "blocks/run"], sites, ["left", "right", "right"]))
    if record.analysis is not None:
        body += _analysis(record.analysis)
    return f"<details><summary>{summary}</summary>\n\n" + "\n\n".join(body) + "\n\n</details>"


def _render(report: _Report, rows: int, baseline: Optional[Path]) -> str:
    parts = [_headline(report)]
    if baseline is not None:
        parts.append(f"Compared with the baseline {markdown_code(shorten(str(baseline), ID_LIMIT))}.")
    parts += _findings("Regressions", report.regressions, rows)
    parts += _leaks(report, rows)
    parts += _over_limit(report, rows)
    parts += _heaviest(report, rows)
    hint = "Refresh the baseline with `pytest --memguard --memguard-update-baseline` to keep them."
    parts += _findings("Improvements", report.improvements, rows, hint)
    parts += _others(report, rows)
    detailed: list[MemoryRecord] = []
    for record in report.leaks[:rows] + report.analysed[:rows] + report.heaviest[:rows]:
        if all(record is not shown for shown in detailed):
            detailed.append(record)
    if detailed:
        parts += ["### Per-test details", *(_details(record) for record in detailed)]
    return "\n\n".join(parts) + "\n"


def render_markdown(
    records: Sequence[MemoryRecord],
    gate: Optional[GateResult] = None,
    *,
    top: int = 10,
    baseline: Optional[Path] = None,
    max_chars: int = 65_000,
) -> str:
    """The whole report, at most ``max_chars`` characters (a GitHub comment holds 65,536)."""
    report = _collect(records, gate, top)
    for rows in _ROW_STEPS:
        text = _render(report, rows, baseline)
        if len(text) <= max_chars:
            return text
    # Only a tiny max_chars gets here: the verdict alone, cut if need be.
    return (_headline(report) + "\n\n… the report does not fit here; see the JSON report\n")[: max(max_chars, 0)]


def append_step_summary(markdown: str, env: Mapping[str, str] = os.environ) -> Optional[Path]:
    """Append ``markdown`` to the job summary file when ``GITHUB_STEP_SUMMARY`` names one.

    GitHub's contract: each step appends to that file and never overwrites what earlier
    steps wrote; a blank line keeps our heading apart from their text. Returns the path
    written, ``None`` outside GitHub Actions. ``OSError`` propagates to the caller.
    """
    value = env.get("GITHUB_STEP_SUMMARY", "")
    if not value:
        return None
    path = Path(value)
    text = markdown if markdown.endswith("\n") else markdown + "\n"
    with path.open("a+b") as handle:
        if handle.seek(0, os.SEEK_END) > 0:
            handle.seek(-1, os.SEEK_END)
            text = ("\n" if handle.read(1) == b"\n" else "\n\n") + text
        handle.write(text.encode("utf-8"))
    return path
