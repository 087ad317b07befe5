"""The JUnit file, the github-action-benchmark export and the escaping helpers they share."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import junitparser
import pytest
from samples import analysis_of

from pytest_memguard.allocation_analyzer import AllocationAnalysis
from pytest_memguard.baseline import Finding
from pytest_memguard.gate import GateResult
from pytest_memguard.leak_detector import AllocationSite, LeakReport
from pytest_memguard.record import MemoryRecord, Verdict
from pytest_memguard.reporting.benchmark_export import benchmark_entries, render_benchmark_json
from pytest_memguard.reporting.escape import (
    escape_html,
    escape_markdown,
    markdown_code,
    mermaid_label,
    shorten,
    xml_safe,
)
from pytest_memguard.reporting.junit import junit_names, render_junit, write_junit
from pytest_memguard.tracker import Measurement

KIB = 1024
MIB = 1024 * KIB
HOSTILE = [
    "tests/test_x.py::test_html[<script>alert(1)</script>]",
    "tests/test_x.py::test_cdata[]]>]",
    "tests/test_x.py::test_quote[\"'&amp;]",
    "tests/test_x.py::test_ctl[\x1b\x00\x7f\ufffe]",
    "tests/test_x.py::test_surrogate[\ud800]",
    "tests/test_x.py::test_unicode[é日本🐍]",
    "tests/test_x.py::test_lines[a\nb\tc]",
    "tests/test_x.py::test_pipe[a|b`c`-->]",
]


def regressed(nodeid: str) -> MemoryRecord:
    finding = Finding(nodeid, "rss_peak", 10 * MIB, 20 * MIB, 768 * KIB)
    return MemoryRecord(
        nodeid, Measurement(20 * MIB, 0, None, None, 0), Verdict.REGRESSION, finding.message(), (finding,)
    )


def leaked(nodeid: str) -> MemoryRecord:
    leak = LeakReport(
        confirmed=True,
        runs=6,
        rss_per_run=2 * MIB,
        heap_per_run=None,
        malloc_per_run=None,
        blocks_per_run=0.0,
        fds_per_run=0.0,
        sites=(AllocationSite("app/cache.py:42", 2 * MIB, 10),),
    )
    return MemoryRecord(nodeid, Measurement(3 * MIB, 2 * MIB, None, None, 0), Verdict.LEAK, leak.summary(), (), leak)


def over(nodeid: str) -> MemoryRecord:
    message = "peak RSS 64.0 MiB exceeds the limit of 50 MB (47.7 MiB) by 16.3 MiB"
    return MemoryRecord(nodeid, Measurement(64 * MIB, 0, 5 * MIB, KIB, 1), Verdict.OVER_LIMIT, message)


def analysed(nodeid: str) -> MemoryRecord:
    """Over its limit, with an analysis whose site, package and advice quote the id (as a hostile path would)."""
    return over(nodeid)._replace(analysis=analysis_of(nodeid))


def fine(nodeid: str) -> MemoryRecord:
    return MemoryRecord(nodeid, Measurement(MIB, -4 * KIB, None, None, None))


def parse(path: Path) -> dict[str, ET.Element]:
    """``{"classname::name": <testcase>}`` read back with ElementTree."""
    return {f"{case.get('classname')}::{case.get('name')}": case for case in ET.parse(path).getroot().iter("testcase")}


# --- names -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodeid", "classname", "name"),
    [
        ("tests/test_a.py::TestX::test_y[1]", "tests.test_a.TestX", "test_y[1]"),
        ("test_a.py::test_b", "test_a", "test_b"),
        ("tests/test_a.py::test_p[x::y/z.py]", "tests.test_a", "test_p[x::y/z.py]"),
        ("tests/test_a.py::TestX::TestInner::test_z", "tests.test_a.TestX.TestInner", "test_z"),
        ("tests/test_a.py", "", "tests.test_a"),
        ("tests/data.txt::case", "tests.data.txt", "case"),
    ],
)
def test_names_are_split_like_pytest_junitxml(nodeid: str, classname: str, name: str) -> None:
    assert junit_names(nodeid) == (classname, name)


def test_names_match_pytests_own_junit_xml(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_names="""
        import pytest

        class TestGroup:
            @pytest.mark.parametrize("value", ["a::b", "c/d.py", "[x]", "é"])
            def test_param(self, value):
                pass

        def test_plain():
            pass
        """
    )
    xml = pytester.path / "pytest.xml"
    result = pytester.runpytest("-p", "no:cacheprovider", f"--junitxml={xml}", "--collect-only", "-q")
    nodeids = [line for line in result.outlines if "::" in line]
    assert len(nodeids) == 5
    pytester.runpytest("-p", "no:cacheprovider", f"--junitxml={xml}")
    theirs = {(case.get("classname"), case.get("name")) for case in ET.parse(xml).getroot().iter("testcase")}
    assert {junit_names(nodeid) for nodeid in nodeids} == theirs


# --- the JUnit file ----------------------------------------------------------------


def test_one_testcase_per_test_with_properties_and_failures(tmp_path: Path) -> None:
    records = [
        regressed("tests/test_io.py::test_load"),
        leaked("tests/test_cache.py::TestCache::test_fill"),
        over("tests/test_big.py::test_huge[2]"),
        fine("tests/test_ok.py::test_fine"),
    ]
    gate = GateResult(regressions=[records[0]], new=["tests/test_ok.py::test_fine"], environment_note="differs")
    path = tmp_path / "reports" / "memguard.xml"
    write_junit(path, records, gate)

    cases = parse(path)
    assert sorted(cases) == [
        "tests.test_big::test_huge[2]",
        "tests.test_cache.TestCache::test_fill",
        "tests.test_io::test_load",
        "tests.test_ok::test_fine",
    ]
    regression = cases["tests.test_io::test_load"].findall("failure")
    assert [(f.get("type"), f.get("message")) for f in regression] == [
        ("memguard.regression", "peak RSS 10.0 MiB -> 20.0 MiB (+10.0 MiB, +100%; tolerance 768.0 KiB)")
    ]
    leak = cases["tests.test_cache.TestCache::test_fill"].find("failure")
    assert leak is not None
    assert leak.get("type") == "memguard.leak"
    assert leak.get("message") == "leaks 2.0 MiB/run over 6 runs"
    assert "app/cache.py:42: 2.0 MiB/run, 10 blocks/run" in (leak.text or "")
    limit = cases["tests.test_big::test_huge[2]"].find("failure")
    assert limit is not None
    assert limit.get("type") == "memguard.over_limit"
    assert limit.get("message") == "peak RSS 64.0 MiB exceeds the limit of 50 MB (47.7 MiB) by 16.3 MiB"
    assert cases["tests.test_ok::test_fine"].find("failure") is None

    # Properties: exactly what report.user_properties carries, as strings.
    for record in records:
        case = cases["::".join(junit_names(record.nodeid))]
        found = [(p.get("name"), p.get("value")) for p in case.iter("property")]
        assert found == [(name, str(value)) for name, value in record.to_properties()]
    huge = {p.get("name"): p.get("value") for p in cases["tests.test_big::test_huge[2]"].iter("property")}
    assert huge["memguard_heap_peak"] == str(5 * MIB)
    assert huge["memguard_fds_gained"] == "1"

    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("pytest-memguard", "4", "3")
    summary = {p.get("name"): p.get("value") for p in suite.find("properties") or []}
    assert summary == {
        "memguard_tests_measured": "4",
        "memguard_gate_failed": "true",
        "memguard_regressions": "1",
        "memguard_improvements": "0",
        "memguard_new": "1",
        "memguard_not_run": "0",
        "memguard_environment_note": "differs",
    }


def test_junitparser_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "memguard.xml"
    write_junit(path, [regressed("t.py::test_r"), fine("t.py::test_f")], suite_name="memory")
    document = junitparser.JUnitXml.fromfile(str(path))
    suites = list(document)
    assert [(s.name, s.tests, s.failures) for s in suites] == [("memory", 2, 1)]
    cases = {case.name: case for case in suites[0]}
    assert cases["test_r"].classname == "t"
    assert [(r.type, r.message) for r in cases["test_r"].result] == [
        ("memguard.regression", "peak RSS 10.0 MiB -> 20.0 MiB (+10.0 MiB, +100%; tolerance 768.0 KiB)")
    ]
    assert cases["test_f"].is_passed


def test_a_test_with_several_problems_has_a_failure_for_each(tmp_path: Path) -> None:
    base = over("t.py::test_all")
    findings = (
        Finding("t.py::test_all", "rss_peak", 10 * MIB, 64 * MIB, 768 * KIB),
        Finding("t.py::test_all", "heap_peak", 4 * MIB, 5 * MIB, 128 * KIB),
    )
    record = base._replace(findings=findings, leak=leaked("t.py::test_all").leak)
    path = tmp_path / "memguard.xml"
    write_junit(path, [record])
    failures = parse(path)["t::test_all"].findall("failure")
    assert [f.get("type") for f in failures] == [
        "memguard.over_limit",
        "memguard.leak",
        "memguard.regression",
        "memguard.regression",
    ]
    assert failures[3].get("message") == "peak Python heap 4.0 MiB -> 5.0 MiB (+1.0 MiB, +25%; tolerance 128.0 KiB)"
    assert ET.parse(path).getroot().get("failures") == "1"  # one failed test


@pytest.mark.parametrize("nodeid", HOSTILE)
def test_hostile_ids_always_give_a_parsable_file(tmp_path: Path, nodeid: str) -> None:
    path = tmp_path / "memguard.xml"
    records = [regressed(nodeid), over(nodeid + "over"), leaked(nodeid + "leak"), fine(nodeid + "fine")]
    write_junit(path, records, GateResult(environment_note=nodeid), suite_name=nodeid)
    classname, name = junit_names(nodeid)
    expected = f"{xml_safe(classname)}::{xml_safe(name)}"
    cases = parse(path)
    assert expected in cases
    assert len(cases) == 4
    failure = cases[expected].find("failure")
    assert failure is not None
    assert failure.get("message") == "peak RSS 10.0 MiB -> 20.0 MiB (+10.0 MiB, +100%; tolerance 768.0 KiB)"
    assert len(next(iter(junitparser.JUnitXml.fromfile(str(path))))) == 4
    assert path.read_bytes().startswith(b'<?xml version="1.0" encoding="utf-8"?>\n')


@pytest.mark.parametrize("nodeid", HOSTILE)
def test_an_analysis_is_a_property_and_readable_system_out(tmp_path: Path, nodeid: str) -> None:
    path = tmp_path / "memguard.xml"
    record = analysed(nodeid)
    write_junit(path, [record, fine(nodeid + "fine")])
    cases = [case for suite in junitparser.JUnitXml.fromfile(str(path)) for case in suite]
    assert len(cases) == 2
    case = next(c for c in cases if c.name == xml_safe(junit_names(nodeid)[1]))
    text = case.system_out or ""
    assert text.startswith("allocation analysis: retained +4.0 KiB in +30 blocks;")
    assert "held near the peak (snapshot at 30.0 MiB):" in text
    assert f"{xml_safe(nodeid)}.py:4" in text
    properties = case.child(junitparser.Properties)
    found = {p.name: p.value for p in properties.iterchildren(junitparser.Property)}
    # Compact JSON is ASCII, so even a lone surrogate in a path comes back exactly.
    assert AllocationAnalysis.from_json(found["memguard_analysis"]) == record.analysis
    assert not next(c for c in cases if c is not case).system_out


def test_control_characters_are_shown_like_pytest_and_unicode_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "memguard.xml"
    write_junit(path, [fine("t.py::test_x[\x1b\x00é日本\ud800]")])
    assert list(parse(path)) == ["t::test_x[#x1B#x00é日本#xD800]"]


def test_written_atomically_and_only_when_changed(tmp_path: Path) -> None:
    path = tmp_path / "memguard.xml"
    records = [fine("t.py::test_b"), fine("t.py::test_a")]
    write_junit(path, records)
    first = path.read_text(encoding="utf-8")
    assert first == render_junit(records)
    assert first.index('name="test_a"') < first.index('name="test_b"')  # sorted by node id
    write_junit(path, list(reversed(records)))
    assert path.read_text(encoding="utf-8") == first
    assert [p.name for p in tmp_path.iterdir()] == ["memguard.xml"]  # no temporary file left


def test_an_empty_run_is_a_valid_empty_suite(tmp_path: Path) -> None:
    path = tmp_path / "memguard.xml"
    write_junit(path, [])
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("0", "0")


# --- github-action-benchmark export ------------------------------------------------


def test_benchmark_json_is_the_custom_smaller_is_better_format() -> None:
    traced = MemoryRecord("t.py::test_traced", Measurement(3 * MIB, -KIB, 2 * MIB, 512, 4))
    entries = json.loads(render_benchmark_json([traced, regressed("t.py::test_b")]))
    assert entries == [
        {
            "name": "t.py::test_b (peak RSS)",
            "unit": "bytes",
            "value": 20 * MIB,
            "extra": "20.0 MiB\nverdict: regression\nbaseline: 10.0 MiB (tolerance 768.0 KiB)",
        },
        {"name": "t.py::test_b (retained RSS)", "unit": "bytes", "value": 0, "extra": "0 B\nverdict: regression"},
        {"name": "t.py::test_traced (peak RSS)", "unit": "bytes", "value": 3 * MIB, "extra": "3.0 MiB\nverdict: ok"},
        {"name": "t.py::test_traced (retained RSS)", "unit": "bytes", "value": -KIB, "extra": "-1.0 KiB\nverdict: ok"},
        {
            "name": "t.py::test_traced (peak Python heap)",
            "unit": "bytes",
            "value": 2 * MIB,
            "extra": "2.0 MiB\nverdict: ok",
        },
        {
            "name": "t.py::test_traced (retained Python heap)",
            "unit": "bytes",
            "value": 512,
            "extra": "+512 B\nverdict: ok",
        },
    ]
    for entry in entries:  # the action reads exactly these keys; value must be a number
        assert set(entry) == {"name", "unit", "value", "extra"}
        assert isinstance(entry["value"], int)


def test_benchmark_json_survives_any_id() -> None:
    assert json.loads(render_benchmark_json([])) == []
    text = render_benchmark_json([fine(nodeid) for nodeid in HOSTILE])
    text.encode("utf-8")  # lone surrogates are \u-escaped, so this never raises
    names = [entry["name"] for entry in json.loads(text)]
    assert names == [entry["name"] for entry in benchmark_entries([fine(nodeid) for nodeid in HOSTILE])]
    assert "tests/test_x.py::test_unicode[é日本🐍] (peak RSS)" in names


# --- escaping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a|b", "a&#124;b"),
        ("`x`", "&#96;x&#96;"),
        ("<script>", "&lt;script&gt;"),
        ("-->", r"\--&gt;"),
        ("a\nb\r\nc\rd", "a b c d"),
        ("end\\", "end&#92;"),
        ("*b* _i_ [l](u) ~s~ $m$", r"\*b\* \_i\_ \[l\](u) \~s\~ \$m\$"),
        ("#1 heading", r"\#1 heading"),
        ("1. item", r"1\. item"),
        ("+ item", r"\+ item"),
        ("a\x1bb", r"a\#x1Bb"),
    ],
)
def test_escape_markdown(text: str, expected: str) -> None:
    assert escape_markdown(text) == expected


def test_markdown_code_html_and_mermaid() -> None:
    assert markdown_code("a|b`<i>") == "<code>a&#124;b&#96;&lt;i&gt;</code>"
    assert escape_html("<b>\"x\" & 'y'</b>\n-->") == "&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt; --&gt;"
    assert mermaid_label('test_x["a"]\n%%{init}%% `b`') == "test_x a init b"
    assert mermaid_label("test_" + "x" * 40, 12) == "test_…xxxxxx"
    assert mermaid_label("[]") == "?"


def test_shorten_and_xml_safe() -> None:
    assert shorten("abcdefghij", 5) == "ab…ij"
    assert shorten("abc", 3) == "abc"
    assert xml_safe("ok\t\n\r é\x00\x1f\x7f\ud800\ufffe") == "ok\t\n\r é#x00#x1F#x7F#xD800#xFFFE"
