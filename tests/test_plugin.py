"""End to end: real pytest sessions in temporary directories (pytester)."""

from __future__ import annotations

import pytest

MIB = 1024**2

HEAVY_SUITE = """
import unittest
import pytest

KEPT = []

def test_heavy():
    block = bytearray(80 * 1024 * 1024)
    del block

def test_keeps():
    KEPT.append(bytearray(24 * 1024 * 1024))

def test_light():
    pass

class TestMethods:
    def test_method(self):
        block = bytearray(40 * 1024 * 1024)
        del block

@pytest.mark.parametrize("size", [1, 30])
def test_param(size):
    block = bytearray(size * 1024 * 1024)
    del block

class CaseStyle(unittest.TestCase):
    def test_unittest(self):
        block = bytearray(50 * 1024 * 1024)
        del block
"""


@pytest.fixture
def heavy_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=HEAVY_SUITE)
    return pytester


def test_off_by_default_does_nothing_measurable(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading, tracemalloc

        def test_nothing_running(record_property):
            assert not tracemalloc.is_tracing()
            assert threading.active_count() == 1
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    assert "memguard:" not in result.stdout.str()
    assert "= memguard =" not in result.stdout.str()
    assert "memguard_" not in (pytester.path / "out.xml").read_text()


def test_memguard_measures_every_kind_of_test(heavy_suite: pytest.Pytester, run_measured) -> None:
    result, props = run_measured("--memguard", "--memguard-leaks=off")
    result.assert_outcomes(passed=7)
    assert set(props) == {
        "test_heavy",
        "test_keeps",
        "test_light",
        "test_method",
        "test_param[1]",
        "test_param[30]",
        "test_unittest",
    }
    for name, values in props.items():
        assert values["memguard_verdict"] == "ok", name
        assert int(values["memguard_rss_peak"]) >= 0
        assert "memguard_heap_peak" not in values  # tracing is off by default
    assert int(props["test_heavy"]["memguard_rss_peak"]) >= 75 * MIB
    assert int(props["test_unittest"]["memguard_rss_peak"]) >= 45 * MIB
    assert int(props["test_method"]["memguard_rss_peak"]) >= 35 * MIB
    assert int(props["test_param[30]"]["memguard_rss_peak"]) >= 25 * MIB
    assert int(props["test_keeps"]["memguard_rss_retained"]) >= 20 * MIB


def test_summary_lists_the_heaviest_tests(heavy_suite: pytest.Pytester, run_measured) -> None:
    result, _ = run_measured("--memguard", "--memguard-top", "3", "--memguard-leaks=off")
    result.stdout.fnmatch_lines(
        [
            "memguard: peak RSS: kernel high-water mark, reset per test; tracemalloc off*",
            "*= memguard =*",
            "7 tests measured; highest peak RSS * (test_suite.py::test_heavy)",
            "Top 3 by peak RSS:",
            "test * peak RSS * retained RSS * verdict",
            "test_suite.py::test_heavy *",
            "test_suite.py::CaseStyle::test_unittest *",
            "test_suite.py::TestMethods::test_method *",
            "Top 3 by retained RSS:",
            "*",
            "test_suite.py::test_keeps *+2*.* MiB*",
        ]
    )


def test_quiet_gives_one_line_and_very_quiet_none(heavy_suite: pytest.Pytester) -> None:
    quiet = heavy_suite.runpytest_subprocess("--memguard", "-q", "-p", "no:cacheprovider", "--memguard-leaks=off")
    quiet.stdout.fnmatch_lines(["7 tests measured; highest peak RSS *"])
    assert "Top " not in quiet.stdout.str()
    silent = heavy_suite.runpytest_subprocess("--memguard", "-qq", "-p", "no:cacheprovider", "--memguard-leaks=off")
    assert "tests measured" not in silent.stdout.str()


def test_top_zero_hides_the_tables(heavy_suite: pytest.Pytester) -> None:
    result = heavy_suite.runpytest_subprocess("--memguard", "--memguard-top=0", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["7 tests measured*"])
    assert "Top " not in result.stdout.str()


def test_ini_twins(heavy_suite: pytest.Pytester, run_measured) -> None:
    heavy_suite.makeini(
        """
        [pytest]
        memguard = true
        memguard_trace = true
        memguard_top = 2
        memguard_leaks = off
        memguard_limits =
            peak = 60 MiB
        """
    )
    result, props = run_measured()
    result.assert_outcomes(passed=6, failed=1)  # test_heavy breaks the ini limit
    assert props["test_heavy"]["memguard_verdict"] == "over_limit"
    assert "limit from ini option memguard_limits" in props["test_heavy"]["memguard_message"]
    assert int(props["test_heavy"]["memguard_heap_peak"]) >= 75 * MIB
    result.stdout.fnmatch_lines(["Top 2 by peak RSS:"])


def test_plugin_can_be_disabled(heavy_suite: pytest.Pytester) -> None:
    plain = heavy_suite.runpytest_subprocess("-p", "no:memguard", "-p", "no:cacheprovider")
    plain.assert_outcomes(passed=7)
    assert "memguard" not in plain.stdout.str()
    result = heavy_suite.runpytest_subprocess("--memguard", "-p", "no:memguard", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unrecognized arguments: --memguard*"])


def test_help_documents_every_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(
        [
            "memory measurement and limits (pytest-memguard):",
            "*--memguard *measure peak and retained memory of every test. ini:",
            "*memguard",
            "*--memguard-trace*also measure the Python heap with tracemalloc (slower).",
            "*ini: memguard_trace",
            "*--memguard-top=N*",
            "*(0: none; default 10). ini: memguard_top",
            "*--memguard-limit=KEY=VALUE",
            "*memguard_limits (linelist):*",
        ]
    )


def test_marker_lists_in_markers_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.memguard(peak=None, retained=None, *"])
