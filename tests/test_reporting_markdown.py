"""The markdown report: verdict line, sections, escaping of hostile ids, the size cap, the job summary."""

from __future__ import annotations

import dataclasses
import html
import re
from pathlib import Path
from typing import Optional

import pytest
from samples import analysis_of

from pytest_memguard.baseline import Finding
from pytest_memguard.gate import GateResult
from pytest_memguard.leak_detector import AllocationSite, LeakReport
from pytest_memguard.record import MemoryRecord, Verdict
from pytest_memguard.reporting.markdown import ID_LIMIT, append_step_summary, render_markdown
from pytest_memguard.tracker import Measurement

KIB = 1024
MIB = 1024 * KIB
HOSTILE = [
    "tests/test_x.py::test_pipe[a|b||c]",
    "tests/test_x.py::test_tick[`code` ``x``]",
    "tests/test_x.py::test_html[<script>alert(1)</script>]",
    "tests/test_x.py::test_comment[--> <!-- x]",
    "tests/test_x.py::test_lines[a\nb\r\nc\rd]",
    "tests/test_x.py::test_cdata[]]>]",
    "tests/test_x.py::test_backslash[end\\]",
    "tests/test_x.py::test_md[*b* _i_ [l](http://x) ~s~ $m$ #1 @user !]",
    "tests/test_x.py::test_ctl[\x1b\x00\ud800é]",
    '# tests/test_x.py::test_quote["\'"]',
]


def measured(peak: int, retained: int = 0, heap: Optional[int] = None) -> Measurement:
    return Measurement(peak, retained, heap, None if heap is None else 0, 0)


def regression(nodeid: str, before: int = 10 * MIB, after: int = 20 * MIB) -> MemoryRecord:
    finding = Finding(nodeid, "rss_peak", before, after, 768 * KIB)
    return MemoryRecord(nodeid, measured(after), Verdict.REGRESSION, finding.message(), (finding,))


def leaking(nodeid: str) -> MemoryRecord:
    leak = LeakReport(
        confirmed=True,
        runs=6,
        rss_per_run=2 * MIB,
        heap_per_run=1 * KIB,
        malloc_per_run=None,
        blocks_per_run=1200.0,
        fds_per_run=1.0,
        indicators=("steady_growth",),
        pressure=0.55,
        sites=(AllocationSite("app/cache.py:42", 2 * MIB, 1200),),
        note="native (non-Python) memory grew by ~2.0 MiB/run; tracemalloc cannot see it",
    )
    return MemoryRecord(nodeid, measured(5 * MIB, 2 * MIB), Verdict.LEAK, leak.summary(), (), leak)


def over_limit(nodeid: str) -> MemoryRecord:
    message = "peak RSS 64.0 MiB exceeds the limit of 50 MB (47.7 MiB) by 16.3 MiB"
    return MemoryRecord(nodeid, measured(64 * MIB), Verdict.OVER_LIMIT, message)


def analysed(nodeid: str, text: str = "app/io") -> MemoryRecord:
    return over_limit(nodeid)._replace(analysis=analysis_of(text))


def improvement(nodeid: str) -> MemoryRecord:
    finding = Finding(nodeid, "rss_peak", 3 * MIB, 1 * MIB, 300 * KIB)
    return MemoryRecord(nodeid, measured(1 * MIB), Verdict.IMPROVEMENT, "", (finding,))


def tables(text: str) -> list[list[str]]:
    """Every table as its lines (consecutive lines starting with "|")."""
    found: list[list[str]] = []
    previous = False
    for line in text.splitlines():
        row = line.startswith("|")
        if row and not previous:
            found.append([])
        if row:
            found[-1].append(line)
        previous = row
    return found


def cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def section(text: str, title: str) -> str:
    """The text of one ``###`` section."""
    match = re.search(rf"^### {re.escape(title)}\n(.*?)(?=^### |\Z)", text, re.M | re.S)
    assert match is not None, f"no section {title!r} in:\n{text}"
    return match[1]


@pytest.fixture
def session() -> tuple[list[MemoryRecord], GateResult]:
    regressed = regression("tests/test_io.py::test_load")
    improved = improvement("tests/test_io.py::test_small")
    records = [
        regressed,
        leaking("tests/test_cache.py::test_fill"),
        over_limit("tests/test_big.py::test_huge"),
        improved,
        MemoryRecord("tests/test_ok.py::test_fine", measured(3 * MIB)),
    ]
    gate = GateResult(
        regressions=[regressed],
        improvements=[improved],
        new=["tests/test_ok.py::test_fine"],
        not_run=["tests/test_gone.py::test_old"],
        environment_note="the baseline was recorded on python=3.12, this run is python=3.11",
    )
    return records, gate


def test_verdict_line_then_every_section(session: tuple[list[MemoryRecord], GateResult]) -> None:
    records, gate = session
    text = render_markdown(records, gate, top=3, baseline=Path("memguard.yml"))
    lines = text.splitlines()
    assert lines[0] == "## ❌ pytest-memguard: 1 regression, 1 leak, 1 over limit · 5 tests measured"
    assert "Compared with the baseline <code>memguard.yml</code>." in lines

    regressions = tables(section(text, "Regressions"))[0]
    assert cells(regressions[0]) == ["test", "figure", "baseline → now", "change", "tolerance"]
    assert cells(regressions[2]) == [
        r"<code>tests/test\_io.py::test\_load</code>",
        "peak RSS",
        "10.0 MiB → 20.0 MiB",
        "+10.0 MiB, +100%",
        "768.0 KiB",
    ]
    leak_row = cells(tables(section(text, "Leaks (confirmed by re-running)"))[0][2])
    assert leak_row[1:6] == ["2.0 MiB", "1,200", "1", "6", "<code>app/cache.py:42</code> (2.0 MiB/run)"]
    assert "native (non-Python) memory" in leak_row[6]
    over = cells(tables(section(text, "Over limit"))[0][2])
    assert over[1] == "peak RSS 64.0 MiB exceeds the limit of 50 MB (47.7 MiB) by 16.3 MiB"

    heaviest = tables(section(text, "Heaviest 3 tests by peak RSS"))[0]
    assert [cells(row)[0] for row in heaviest[2:]] == [
        r"<code>tests/test\_big.py::test\_huge</code>",
        r"<code>tests/test\_io.py::test\_load</code>",
        r"<code>tests/test\_cache.py::test\_fill</code>",
    ]
    chart = section(text, "Heaviest 3 tests by peak RSS").split("```mermaid\n")[1].split("```")[0]
    assert chart.splitlines() == [
        "xychart-beta",
        '    title "Peak RSS of the heaviest tests (MiB)"',
        '    x-axis ["1 test_huge", "2 test_load", "3 test_fill"]',
        '    y-axis "MiB" 0 --> 71',
        "    bar [64.0, 20.0, 5.0]",
    ]
    improvements = section(text, "Improvements")
    assert cells(tables(improvements)[0][2])[2:4] == ["3.0 MiB → 1.0 MiB", "-2.0 MiB, -67%"]
    assert "1 test not in the baseline yet" in improvements
    assert "1 test in the baseline did not run here" in improvements
    assert r"- <code>tests/test\_gone.py::test\_old</code>" in improvements
    assert "> **Note:** the baseline was recorded on python=3.12, this run is python=3.11" in improvements

    details = section(text, "Per-test details")
    assert details.count("<details><summary>") == details.count("</details>") == 3
    assert "<code>tests/test_cache.py::test_fill</code> · peak RSS 5.0 MiB · leak</summary>" in details
    assert "| <code>app/cache.py:42</code> |" in details
    assert "regression: 10.0 MiB → 20.0 MiB, +10.0 MiB, +100% (tolerance 768.0 KiB)" in details


def test_sections_appear_only_when_they_have_rows() -> None:
    records = [MemoryRecord(f"tests/test_a.py::test_{i}", measured(i * MIB)) for i in range(3)]
    text = render_markdown(records, GateResult(), top=2)
    assert text.splitlines()[0] == "## ✅ pytest-memguard: no memory regression · 3 tests measured"
    assert re.findall(r"^### .*", text, re.M) == ["### Heaviest 2 tests by peak RSS", "### Per-test details"]
    for absent in ("Regressions", "Leaks", "Over limit", "Improvements", "baseline yet", "did not run", "Note"):
        assert absent not in text


def test_without_a_gate_or_tables() -> None:
    one = [MemoryRecord("tests/test_a.py::test_a", measured(MIB, heap=2 * MIB))]
    assert render_markdown(one, top=0) == "## ✅ pytest-memguard: no limit breached, no leak found · 1 test measured\n"
    # Findings on the records count even without a GateResult (e.g. results read back from a file).
    text = render_markdown([regression("tests/test_a.py::test_r"), *one], top=5)
    assert text.startswith("## ❌ pytest-memguard: 1 regression · 2 tests measured\n")
    header = cells(tables(section(text, "Heaviest 2 tests by peak RSS"))[0][0])
    assert header == ["test", "peak RSS", "retained RSS", "peak heap", "retained heap", "verdict"]


def test_chart_labels_name_the_test_even_when_its_parameters_hold_colons() -> None:
    text = render_markdown([leaking("tests/test_a.py::TestIds::test_ids[a::b]")], top=5)
    chart = text.split("```mermaid\n")[1].split("\n```")[0]
    assert 'x-axis ["1 test_ids a::b"]' in chart  # not "1 b]", the part after the last "::"


@pytest.mark.parametrize("nodeid", HOSTILE)
def test_hostile_ids_cannot_break_tables_html_or_the_chart(nodeid: str) -> None:
    records = [regression(nodeid), leaking(nodeid + "leak"), over_limit(nodeid + "over")]
    records.append(analysed(nodeid + "analysed", text=nodeid))  # its sites, package and advice too
    gate = GateResult(regressions=[records[0]], not_run=[nodeid], new=[nodeid])
    text = render_markdown(records, gate, top=5)
    chart = text.split("```mermaid\n")[1].split("\n```")[0]
    prose = text.replace(chart, "")
    assert "<script" not in prose
    assert "<!--" not in prose
    assert "-->" not in prose
    # GitHub links no @mention inside <code>, and ids only ever appear there.
    assert not re.findall(r"@\w", re.sub(r"<code>.*?</code>", "", prose))
    for table in tables(text):
        width = len(cells(table[0]))
        assert all(line.endswith("|") and len(cells(line)) == width for line in table), table
    tags = re.findall(r"</?(\w+)", text)
    assert set(tags) <= {"details", "summary", "code"}
    assert tags.count("details") == tags.count("summary")
    assert "`" not in chart
    assert "%%" not in chart
    labels = re.search(r"x-axis \[(.*)\]", chart)
    assert labels is not None
    assert re.fullmatch(r'"[^"\[\]]*"(, "[^"\[\]]*")*', labels[1])
    assert "\x1b" not in text
    assert "\x00" not in text
    assert "\ud800" not in text
    text.encode("utf-8")  # a lone surrogate would make this raise
    assert text.count("**Allocation analysis**") == 1


def test_no_at_word_in_free_text_mentions_anyone() -> None:
    """GitHub turns "@name" in text into a mention (and a notification); a marker name must not ping a user."""
    message = "peak RSS 64.0 MiB exceeds the limit of 50 MB by 16.3 MiB (limit from @pytest.mark.memguard on test_x)"
    over = MemoryRecord("tests/test_x.py::test_x", measured(64 * MIB), Verdict.OVER_LIMIT, message)
    leak = leaking("tests/test_y.py::test_y")
    assert leak.leak is not None
    leak = leak._replace(leak=dataclasses.replace(leak.leak, note="ask @octocat, or @org/team"))
    gate = GateResult(environment_note="recorded by @someone on python=3.12")
    text = render_markdown([over, leak], gate, top=5)
    # Outside <code> (where GitHub links nothing) no "@" is directly followed by a name.
    prose = re.sub(r"<code>.*?</code>", "", text)
    assert not re.findall(r"@\w", prose)
    why = "(limit from @&#8203;pytest.mark.memguard on test\\_x)"
    # Shown as "@pytest.mark.memguard": the zero-width space does not show.
    assert html.unescape(why).replace("\u200b", "") == "(limit from @pytest.mark.memguard on test\\_x)"
    assert cells(tables(section(text, "Over limit"))[0][2])[1].endswith(why)
    assert f"**Why:** peak RSS 64.0 MiB exceeds the limit of 50 MB by 16.3 MiB {why}" in text
    assert "ask @&#8203;octocat, or @&#8203;org/team" in text
    assert "recorded by @&#8203;someone on python=3.12" in text


def test_an_analysed_test_gets_its_details_block_with_sites_and_advice() -> None:
    records = [
        analysed("tests/test_io.py::test_load"),
        *(MemoryRecord(f"t.py::test_{i}", measured(MIB)) for i in range(3)),
    ]
    text = render_markdown(records, top=1)
    assert "### Heaviest 1 test by peak RSS" in text
    details = section(text, "Per-test details")
    assert details.count("<details>") == 1  # the analysed test, which is also the heaviest
    block = details.split("<details>")[1]
    assert "<code>tests/test_io.py::test_load</code> · peak RSS 64.0 MiB · over_limit</summary>" in block
    assert (
        "**Allocation analysis** (one more run under tracemalloc): retained +4.0 KiB in +30 blocks; "
        "allocated 5.0 KiB, freed 1.0 KiB; peak 30.0 MiB; efficiency 1.00"
    ) in block
    assert "Held near the peak (snapshot at 30.0 MiB):" in block
    peak, kept = tables(block)[1:3]
    assert cells(peak[0]) == ["peak site", "size", "blocks", "average"]
    assert cells(peak[2]) == [r"<code>app/io.py:4 &lt;- app/io.py:9</code>", "+30.0 MiB", "+2", "15.0 MiB"]
    assert cells(kept[0])[0] == "kept at"
    assert "Blocks gained: tiny 11 (436 B)" in block
    assert "By package: <code>app/io</code> +4.0 KiB" in block
    assert "By operation near the peak: <code>test\\_app/io</code> +30.0 MiB" in block
    assert "By operation: <code>fixture app/io</code> +3.0 KiB, <code>&lt;other&gt;</code> +1.0 KiB" in block
    assert (
        "- <code>one 30.0 MiB allocation at app/io.py:4</code>\n"
        "- <code>most retained memory (99%) comes from app/io</code>"
    ) in block


def test_long_ids_are_shortened_in_the_middle() -> None:
    nodeid = "tests/" + "deep/" * 100 + "test_mod.py::test_case[end]"
    text = render_markdown([over_limit(nodeid)], top=1)
    shown = re.search(r"<code>([^<]*test\\_case\\\[end\\\])</code>", text)
    assert shown is not None
    assert "…" in shown[1]
    assert len(shown[1].replace("\\", "")) == ID_LIMIT


def huge_suite(tests: int, regressions: int) -> tuple[list[MemoryRecord], GateResult]:
    records = []
    for i in range(tests):
        nodeid = f"tests/package_{i % 50}/test_module_{i % 700}.py::TestGroup::test_case_named_at_length[{i}|`x`]"
        if i < regressions:
            records.append(regression(nodeid, 10 * MIB, 10 * MIB + (i + 1) * KIB))
        elif i % 100 == 1:
            records.append(leaking(nodeid))
        elif i % 50 == 2:
            records.append(analysed(nodeid, text=nodeid))
        else:
            records.append(MemoryRecord(nodeid, measured(i * KIB)))
    gate = GateResult(
        regressions=records[:regressions],
        new=[r.nodeid for r in records[: tests // 10]],
        not_run=[f"tests/removed/test_{i}.py::test_gone" for i in range(tests // 5)],
    )
    return records, gate


@pytest.mark.parametrize("max_chars", [65_000, 20_000])
def test_a_huge_suite_stays_under_the_cap(max_chars: int) -> None:
    records, gate = huge_suite(50_000, 5_000)
    text = render_markdown(records, gate, top=10, max_chars=max_chars)
    assert len(text) <= max_chars
    assert (
        text.splitlines()[0]
        == "## ❌ pytest-memguard: 5,000 regressions, 450 leaks, 900 over limit · 50,000 tests measured"
    )
    regressions = section(text, "Regressions")
    shown = len(tables(regressions)[0]) - 2
    assert 0 < shown < 5_000
    assert f"… and {5_000 - shown:,} more figures (see the JSON report)" in regressions
    # Most severe first: the largest growth leads the table.
    assert "4999&#124;&#96;x&#96;\\]</code>" in tables(regressions)[0][2]
    assert f"… and {10_000 - shown:,} more tests (see the JSON report)" in text  # not run
    assert "50,000 tests measured" in text
    assert "### Per-test details" in text
    assert "**Allocation analysis**" in text


def test_a_tiny_cap_keeps_only_the_verdict() -> None:
    records, gate = huge_suite(200, 20)
    text = render_markdown(records, gate, max_chars=300)
    assert len(text) <= 300
    assert text.startswith("## ❌ pytest-memguard: 20 regressions")
    assert "does not fit" in text
    assert len(render_markdown(records, gate, max_chars=10)) <= 10


def test_step_summary_is_appended_only_on_github(tmp_path: Path) -> None:
    assert append_step_summary("# report\n", env={}) is None
    assert append_step_summary("# report\n", env={"GITHUB_STEP_SUMMARY": ""}) is None
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step's text", encoding="utf-8")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert append_step_summary("## ✅ first", env=env) == summary
    assert append_step_summary("## ❌ second\n", env=env) == summary
    assert summary.read_text(encoding="utf-8") == "earlier step's text\n\n## ✅ first\n\n## ❌ second\n"


def test_step_summary_file_may_not_exist_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "new.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert append_step_summary("## report") == summary
    assert summary.read_text(encoding="utf-8") == "## report\n"
