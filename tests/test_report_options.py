"""--memguard-markdown, --memguard-junit, --memguard-benchmark-json and $GITHUB_STEP_SUMMARY, end to end."""

from __future__ import annotations

import json

import junitparser
import pytest

SUITE = """
import pytest

@pytest.mark.memguard(peak="5 MiB")
def test_over():
    block = bytearray(30 * 1024 * 1024)

def test_fine():
    pass
"""


@pytest.mark.parametrize("args", [(), ("-n", "2")])
def test_reports_are_written_from_the_same_records(pytester: pytest.Pytester, args: tuple[str, ...]) -> None:
    if args:
        pytest.importorskip("xdist")
    pytester.makepyfile(test_reports=SUITE)
    result = pytester.runpytest_subprocess(
        "--memguard",
        "--memguard-markdown=out/report.md",
        "--memguard-junit=out/memory.xml",
        "--memguard-benchmark-json=out/bench.json",
        *args,
    )
    result.assert_outcomes(passed=1, failed=1)
    markdown = (pytester.path / "out" / "report.md").read_text()
    assert markdown.startswith("## ❌ pytest-memguard: 1 over limit · 2 tests measured")
    assert "peak RSS" in markdown
    xml = junitparser.JUnitXml.fromfile(str(pytester.path / "out" / "memory.xml"))
    cases = {case.name: case for suite in xml for case in suite}
    assert set(cases) == {"test_over", "test_fine"}
    assert next(r.message for r in cases["test_over"].result).startswith("peak RSS")
    assert not cases["test_fine"].result
    bench = json.loads((pytester.path / "out" / "bench.json").read_text())
    assert {entry["name"] for entry in bench} >= {"test_reports.py::test_over (peak RSS)"}
    assert all(entry["unit"] == "bytes" for entry in bench)


def test_step_summary_is_appended_in_github_actions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_reports=SUITE)
    summary = pytester.path / "summary.md"
    summary.write_text("earlier step\n")
    pytester._monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))  # type: ignore[attr-defined]
    pytester.runpytest_subprocess("--memguard")
    text = summary.read_text()
    assert text.startswith("earlier step\n\n## ❌ pytest-memguard: 1 over limit")
    pytester.runpytest_subprocess("--memguard", "--memguard-step-summary=off")
    assert summary.read_text() == text
    pytester.runpytest_subprocess()  # not measuring: nothing to say
    assert summary.read_text() == text


def test_ini_twins_for_report_paths(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_reports=SUITE)
    pytester.makeini("[pytest]\nmemguard = true\nmemguard_markdown = reports/m.md\nmemguard_junit = reports/j.xml\n")
    pytester.runpytest_subprocess()
    assert (pytester.path / "reports" / "m.md").exists()
    assert (pytester.path / "reports" / "j.xml").exists()
