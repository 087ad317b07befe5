"""The allocation analysis of flagged tests, end to end (pytester sessions in subprocesses)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import _pytest
import junitparser
import pluggy
import pytest

import pytest_memguard

MIB = 1024 * 1024

SUITE = """
import pytest

def make(mib):
    return bytearray(mib * 1024 * 1024)  # MAKE

def helper(mib):
    return make(mib)  # HELPER

@pytest.mark.memguard(peak="5 MiB")
def test_over():
    block = helper(30)  # CALL
    assert len(block) == 30 * 1024 * 1024

def test_clean():
    pass
"""


def line_of(path: Path, marker: str) -> int:
    """The line number of the only line of ``path`` that ends with ``# marker``."""
    found = [i for i, line in enumerate(path.read_text().splitlines(), 1) if line.endswith(f"# {marker}")]
    assert len(found) == 1, (marker, found)
    return found[0]


def run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, dict[str, Any]]]:
    """pytest --memguard with a JSON report; the result and the JSON entries by test name."""
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memguard", "--memguard-json=r.json", *args)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    return result, {nodeid.split("::", 1)[1]: entry for nodeid, entry in tests.items()}


def junit_properties(case: junitparser.TestCase) -> dict[str, str]:
    """A junitparser test case's properties (its TestCase has no accessor for them)."""
    found = case.child(junitparser.Properties)
    return {prop.name: prop.value for prop in found.iterchildren(junitparser.Property)} if found else {}


def sites(analysis: dict[str, Any], key: str) -> list[str]:
    return [site["where"] for site in analysis[key]]


def test_a_test_over_its_peak_limit_is_explained_in_every_report(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(test_an=SUITE)
    make = f"test_an.py:{line_of(path, 'MAKE')}"
    result, tests = run(pytester, "--memguard-markdown=r.md", "--memguard-junit=r.xml", "--junitxml=pytest.xml")
    result.assert_outcomes(passed=1, failed=1)

    analysis = tests["test_over"]["analysis"]
    assert sites(analysis, "peak_sites")[0] == make
    assert analysis["peak_sites"][0]["size"] >= 30 * MIB
    assert analysis["peak_snapshot_bytes"] >= 30 * MIB
    assert analysis["stack_depth"] == 1
    assert any("temporary objects make the peak" in text for text in analysis["recommendations"])
    assert "analysis" not in tests["test_clean"]

    result.stdout.fnmatch_lines(
        [
            "Over limit:",
            "  test_an.py::test_over: peak RSS * exceeds the limit of 5 MiB*",
            "      allocation analysis: retained *; peak 30.0 MiB; efficiency *",
            "      held near the peak (snapshot at 30.0 MiB):",
            "      peak site * size * blocks * average",
            "      ---*",
            f"      {make} * +30.0 MiB *",
        ]
    )

    markdown = (pytester.path / "r.md").read_text()
    details = markdown.split("<details><summary><code>test_an.py::test_over</code>", 1)[1].split("</details>")[0]
    assert "**Allocation analysis** (one more run under tracemalloc):" in details
    escaped = make.replace("_", "\\_")  # test\_an.py:4, as markdown_code writes it
    assert any(line.startswith(f"| <code>{escaped}</code> ") for line in details.splitlines())
    assert "test_clean</code>" in markdown
    assert markdown.count("**Allocation analysis**") == 1

    cases = {case.name: case for suite in junitparser.JUnitXml.fromfile(str(pytester.path / "r.xml")) for case in suite}
    assert make in (cases["test_over"].system_out or "")
    assert not cases["test_clean"].system_out
    assert json.loads(junit_properties(cases["test_over"])["memguard_analysis"]) == analysis
    # pytest's own --junitxml gets the same property from report.user_properties.
    theirs = junitparser.JUnitXml.fromfile(str(pytester.path / "pytest.xml"))
    properties = {case.name: junit_properties(case) for suite in theirs for case in suite}
    assert json.loads(properties["test_over"]["memguard_analysis"]) == analysis
    assert "memguard_analysis" not in properties["test_clean"]


def test_quiet_keeps_the_analysis_out_of_the_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_an=SUITE)
    result, tests = run(pytester, "-q")
    result.stdout.fnmatch_lines(["Over limit:", "  test_an.py::test_over: peak RSS *"])
    assert "allocation analysis" not in result.stdout.str()
    assert "analysis" in tests["test_over"]  # still in the reports


@pytest.mark.with_hypothesis_plugin
def test_stack_depth_gives_multi_frame_sites_without_pytest_or_memguard_frames(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(test_an=SUITE)
    lines = [line_of(path, marker) for marker in ("MAKE", "HELPER", "CALL")]
    result, tests = run(pytester, "--memguard-stack-depth", "3")
    analysis = tests["test_over"]["analysis"]
    assert analysis["stack_depth"] == 3
    expected = " <- ".join(f"test_an.py:{line}" for line in lines)
    assert sites(analysis, "peak_sites")[0] == expected
    result.stdout.fnmatch_lines([f"      {expected} * +30.0 MiB *"])

    # Deep enough to reach the runner: frames of pytest, pluggy, tracemalloc and this plugin are left out.
    result, tests = run(pytester, "--memguard-stack-depth", "30", "--memguard-leaks=off")
    analysis = tests["test_over"]["analysis"]
    frames = [
        frame
        for key in ("top_by_size", "top_by_count", "peak_sites")
        for where in sites(analysis, key)
        for frame in where.split(" <- ")
    ]
    assert expected in sites(analysis, "peak_sites")
    hidden = [os.path.dirname(module.__file__ or "?") + os.sep for module in (_pytest, pluggy, pytest_memguard, pytest)]
    shown = [site["filename"] for key in ("top_by_size", "top_by_count", "peak_sites") for site in analysis[key]]
    assert not [name for name in shown if name.startswith(tuple(hidden)) or name.endswith("tracemalloc.py")]
    for word in ("_pytest", "pluggy", "pytest_memguard", "tracemalloc.py", "runner.py", "python.py"):
        assert not [frame for frame in frames if word in frame], word
    section = result.stdout.str().split("Over limit:", 1)[1]
    assert not any(word in section for word in ("_pytest", "pluggy", "pytest_memguard", "tracemalloc.py"))


def test_xdist_workers_send_the_analysis_to_the_controller(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    path = pytester.makepyfile(test_an=SUITE)
    make = f"test_an.py:{line_of(path, 'MAKE')}"
    result, tests = run(pytester, "-n", "2", "--memguard-junit=r.xml")
    result.assert_outcomes(passed=1, failed=1)
    assert sites(tests["test_over"]["analysis"], "peak_sites")[0] == make
    assert "analysis" not in tests["test_clean"]
    result.stdout.fnmatch_lines(["      held near the peak (snapshot at 30.0 MiB):", f"      {make} * +30.0 MiB *"])
    cases = {case.name: case for suite in junitparser.JUnitXml.fromfile(str(pytester.path / "r.xml")) for case in suite}
    assert make in (cases["test_over"].system_out or "")


def test_leak_false_is_never_rerun_for_an_analysis(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_once="""
        import pytest

        def count(name):
            with open(name, "a") as counter:
                counter.write("run\\n")

        @pytest.mark.memguard(peak="5 MiB", leak=False)
        def test_side_effects():
            count("side_effects.txt")
            block = bytearray(30 * 1024 * 1024)

        @pytest.mark.memguard(peak="5 MiB")
        def test_repeatable():
            count("repeatable.txt")
            block = bytearray(30 * 1024 * 1024)
        """
    )
    # --memguard-leaks=off turns leak screening off for every test, and does not stop the analysis.
    result, tests = run(pytester, "--memguard-leaks=off")
    result.assert_outcomes(failed=2)
    assert (pytester.path / "side_effects.txt").read_text() == "run\n"
    assert (pytester.path / "repeatable.txt").read_text() == "run\nrun\n"
    assert "analysis" not in tests["test_side_effects"]
    assert "allocation analysis" not in tests["test_side_effects"]["message"]
    assert "analysis" in tests["test_repeatable"]


def test_a_test_that_fails_or_breaks_when_rerun_gets_a_note_not_a_crash(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_once="""
        import tracemalloc
        import pytest

        RUNS = []

        @pytest.mark.memguard(peak="5 MiB")
        def test_only_once():
            RUNS.append(1)
            block = bytearray(30 * 1024 * 1024)
            assert len(RUNS) == 1

        @pytest.mark.memguard(peak="5 MiB")
        def test_stops_tracing():
            block = bytearray(30 * 1024 * 1024)
            tracemalloc.stop()

        @pytest.mark.memguard(peak="5 MiB")
        def test_still_analysed():
            block = bytearray(30 * 1024 * 1024)
        """
    )
    result, tests = run(pytester, "--memguard-leaks=off")
    result.assert_outcomes(failed=3)
    assert "analysis" not in tests["test_only_once"]
    assert "no allocation analysis: the test did not pass when re-run" in tests["test_only_once"]["message"]
    assert "analysis" not in tests["test_stops_tracing"]
    assert "no allocation analysis (RuntimeError: " in tests["test_stops_tracing"]["message"]
    assert tests["test_still_analysed"]["analysis"]["peak_sites"]
    result.stdout.fnmatch_lines(["*test_only_once: peak RSS * no allocation analysis: the test did not pass*"])


def test_a_leak_and_a_regression_are_explained_under_their_lines(pytester: pytest.Pytester) -> None:
    path = pytester.makepyfile(
        test_grow="""
        from pathlib import Path

        KEPT = []

        def test_leaks():
            KEPT.append(bytearray(2 * 1024 * 1024))  # LEAK

        def test_grows():
            mib = int(Path("size.txt").read_text())
            block = bytearray(mib * 1024 * 1024)  # GROW
        """
    )
    (pytester.path / "size.txt").write_text("1")
    run(pytester, "--memguard-update-baseline", "--memguard-leaks=off")
    (pytester.path / "size.txt").write_text("30")
    result, tests = run(pytester)
    assert tests["test_leaks"]["verdict"] == "leak"
    assert sites(tests["test_leaks"]["analysis"], "top_by_size")[0] == f"test_grow.py:{line_of(path, 'LEAK')}"
    assert tests["test_grows"]["verdict"] == "regression"
    grow = f"test_grow.py:{line_of(path, 'GROW')}"
    assert sites(tests["test_grows"]["analysis"], "peak_sites")[0] == grow
    result.stdout.fnmatch_lines(
        [
            "Leaks (confirmed by re-running the test):",
            "  test_grow.py::test_leaks: leaks 2.0 MiB/run*",
            "      allocation analysis: retained +2.0 MiB*",
            f"      test_grow.py:{line_of(path, 'LEAK')} * +2.0 MiB *",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "Regressions (re-measured before they count):",
            "*",
            "test_grow.py::test_grows * peak RSS *",
            "  test_grow.py::test_grows:",
            "      allocation analysis: *peak 30.0 MiB*",
            "      held near the peak (snapshot at 30.0 MiB):",
            "*",
            "*",
            f"      {grow} * +30.0 MiB *",
        ]
    )


def test_a_test_function_compiled_from_a_string_keeps_its_sites(pytester: pytest.Pytester) -> None:
    """Its frames are ``<string>``, as a namedtuple's generated ``__new__`` is, but pytest calls
    it itself: what it allocates is the test's, not pytest's."""
    pytester.makepyfile(
        test_made="""
        KEPT = []
        SOURCE = "def test_made():\\n    KEPT.append([str(i) * 3 for i in range(20000)])\\n"
        exec(compile(SOURCE, "<string>", "exec"), globals())
        """
    )
    _, tests = run(pytester, "--memguard-leaks=warn")
    assert tests["test_made"]["verdict"] == "leak"
    analysis = tests["test_made"]["analysis"]
    assert sites(analysis, "top_by_size")[0] == "<string>:2"
    assert analysis["retained_bytes"] > 1024 * 1024


# A library the test and its fixture call: sites are in it, operations are its callers.
HELPERS = """
def build(mib):
    return bytearray(mib * 1024 * 1024)  # BUILD
"""

OPERATIONS = """
import functools

import pytest
from helpers import build

CACHE = []  # what each operation keeps after teardown


@pytest.fixture
def big():
    data = build(24)
    CACHE.append(build(2))
    yield data


@pytest.mark.memguard(peak="5 MiB")
def test_uses_big(big):
    block = build(8)
    CACHE.append(build(1))
    assert len(big) + len(block) == 32 * 1024 * 1024


class TestGroup:
    @pytest.mark.memguard(peak="5 MiB")
    def test_in_class(self):
        assert len(build(12)) == 12 * 1024 * 1024


def logged(function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)
    return wrapper


@pytest.mark.memguard(peak="5 MiB")
@logged
def test_decorated():
    assert len(build(12)) == 12 * 1024 * 1024
"""


def operation_totals(analysis: dict[str, Any], key: str) -> dict[str, int]:
    return {group["name"]: group["size"] for group in analysis[key]}


def test_bytes_are_totalled_per_test_function_and_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(helpers=HELPERS)
    path = pytester.makepyfile(test_ops=OPERATIONS)
    build = f"helpers.py:{line_of(path.parent / 'helpers.py', 'BUILD')}"
    result, tests = run(pytester, "--memguard-leaks=off", "--memguard-markdown=r.md")
    result.assert_outcomes(failed=3)

    analysis = tests["test_uses_big"]["analysis"]
    assert analysis["operations_labelled"]
    assert sites(analysis, "peak_sites")[0] == build  # one frame per site: the library line
    # Near the peak: the fixture's 24 + 2 MiB before the test body's 8 MiB (and its 1 MiB, maybe).
    peak = operation_totals(analysis, "peak_by_operation")
    assert [group["name"] for group in analysis["peak_by_operation"]][:2] == ["fixture big", "test_uses_big"]
    assert peak["fixture big"] >= 26 * MIB
    assert 8 * MIB <= peak["test_uses_big"] < 10 * MIB
    # Kept after teardown: the fixture's 2 MiB, the test body's 1 MiB, the rest is small.
    kept = operation_totals(analysis, "by_operation")
    assert [group["name"] for group in analysis["by_operation"]][:2] == ["fixture big", "test_uses_big"]
    assert 2 * MIB <= kept["fixture big"] < 2 * MIB + 64 * 1024
    assert MIB <= kept["test_uses_big"] < MIB + 64 * 1024
    assert kept.get("<other>", 0) < 64 * 1024

    for name, label in (("TestGroup::test_in_class", "TestGroup.test_in_class"), ("test_decorated", "test_decorated")):
        first = tests[name]["analysis"]["peak_by_operation"][0]
        assert (first["name"], first["size"] >= 12 * MIB) == (label, True)

    result.stdout.fnmatch_lines(
        [
            "  test_ops.py::test_uses_big: peak RSS * exceeds the limit of 5 MiB*",
            "      by operation near the peak: fixture big +2?.? MiB, test_uses_big +?.? MiB*",
            "      by operation: fixture big +2.0 MiB, test_uses_big +1.0 MiB*",
        ]
    )
    markdown = (pytester.path / "r.md").read_text()
    details = markdown.split("<details><summary><code>test_ops.py::test_uses_big</code>", 1)[1].split("</details>")[0]
    assert "By operation near the peak: <code>fixture big</code> +2" in details
    assert "By operation: <code>fixture big</code> +2.0 MiB, <code>test\\_uses\\_big</code> +1.0 MiB" in details


def test_a_custom_item_is_analysed_without_operation_labels(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        class BlockItem(pytest.Item):
            def runtest(self):
                assert len(bytearray(30 * 1024 * 1024)) == 30 * 1024 * 1024  # BLOCK

        class BlockFile(pytest.File):
            def collect(self):
                yield BlockItem.from_parent(self, name="block")

        def pytest_collect_file(parent, file_path):
            if file_path.suffix == ".blocks":
                return BlockFile.from_parent(parent, path=file_path)
        """
    )
    (pytester.path / "x.blocks").write_text("")
    block = f"conftest.py:{line_of(pytester.path / 'conftest.py', 'BLOCK')}"
    result, tests = run(pytester, "--memguard-leaks=off", "--memguard-limit", "peak=5 MiB")
    result.assert_outcomes(failed=1)
    # No function and no fixtures to name: analysed as before, per-file totals, no operation lines.
    analysis = tests["block"]["analysis"]
    assert sites(analysis, "peak_sites")[0] == block
    assert (analysis["operations_labelled"], analysis["peak_by_operation"]) == (False, [])
    assert "by operation" not in result.stdout.str()


def test_a_test_without_a_flag_pays_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_fine="""
        import sys, tracemalloc

        def test_heavy_but_fine():
            block = bytearray(30 * 1024 * 1024)
            with open("runs.txt", "a") as counter:
                counter.write("run\\n")
            assert not tracemalloc.is_tracing()
            assert sys.getprofile() is None
        """
    )
    result, tests = run(pytester, "--memguard-leaks=off", "--memguard-limit", "peak=100 MiB")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "runs.txt").read_text() == "run\n"
    assert "analysis" not in tests["test_heavy_but_fine"]


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (["--memguard-stack-depth", "0"], "", "memguard: memguard_stack_depth must be at least 1, got 0"),
        (["--memguard-stack-depth", "deep"], "", "*argument --memguard-stack-depth: expected a whole number*"),
        ([], "memguard_stack_depth = 0", "memguard: memguard_stack_depth must be at least 1, got 0"),
        ([], "memguard_stack_depth = deep", "memguard: memguard_stack_depth must be a whole number >= 0, got 'deep'"),
    ],
)
def test_a_bad_stack_depth_is_a_usage_error(pytester: pytest.Pytester, args: list[str], ini: str, message: str) -> None:
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_stack_depth_is_the_traceback_limit_of_memguard_trace(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmemguard_stack_depth = 4\n")
    pytester.makepyfile(
        test_limit="""
        import tracemalloc

        def test_limit():
            assert tracemalloc.get_traceback_limit() == 4
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memguard", "--memguard-trace")
    result.assert_outcomes(passed=1)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--memguard", "--memguard-trace", "--memguard-stack-depth=2"
    )
    result.assert_outcomes(failed=1)  # the command line beats the ini value
    result.stdout.fnmatch_lines(["*assert 2 == 4*"])


def test_no_bookkeeping_sites_and_no_rss_ratio_for_a_heap_traced_from_the_first_test(
    pytester: pytest.Pytester,
) -> None:
    # What the standard library allocates for pytest (capture) or for memguard (warnings) is
    # not the test's (told apart by the caller's frame: tracing that records one frame, as
    # --memguard-trace does by default, cannot); RSS against a heap traced only since the
    # first test means nothing.
    pytester.makepyfile(test_suite=SUITE)
    for args in ((), ("--memguard-trace", "--memguard-stack-depth=16")):
        _, tests = run(pytester, "-p", "no:randomly", *args)
        analysis = tests["test_over"]["analysis"]
        kept = sites(analysis, "top_by_size") + sites(analysis, "top_by_count")
        assert not [where for where in kept if "contextlib.py" in where or "warnings.py" in where], kept
        assert analysis["fragmentation"] is None


def test_unittest_set_up_is_an_operation_of_its_own(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_case="""
        import unittest
        import pytest

        @pytest.mark.memguard(peak="4 MiB")
        class TestLoad(unittest.TestCase):
            def setUp(self):
                self.data = bytearray(24 * 1024 * 1024)

            def test_uses_data(self):
                copy = bytes(self.data[: 8 * 1024 * 1024])
                assert len(copy) == 8 * 1024 * 1024
        """
    )
    _, tests = run(pytester, "-p", "no:randomly")
    analysis = tests["TestLoad::test_uses_data"]["analysis"]
    held = [group["name"] for group in analysis["peak_by_operation"]]
    assert held[:2] == ["TestLoad.setUp", "TestLoad.test_uses_data"], held
