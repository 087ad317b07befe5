"""pytest-xdist (workers measure, the controller aggregates) and tracemalloc figures."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("xdist")

MIB = 1024**2

SUITE = """
import pytest

@pytest.mark.parametrize("mib", [0, 10, 20, 40])
def test_alloc(mib):
    block = bytearray(mib * 1024 * 1024)
    del block

@pytest.mark.memguard(peak="5 MiB")
def test_over():
    block = bytearray(30 * 1024 * 1024)
"""


def _summary(output: str) -> list[str]:
    """The memguard section with the figures blanked out (they differ between processes), and
    without leak screening's count of suspects: which test's first run crosses a screening
    bar depends on the process it runs in (what earlier tests left in its heap), and with none
    the line is not printed at all."""
    section = output.split("= memguard =", 1)[1].split("short test summary", 1)[0]
    lines = [line for line in section.splitlines()[1:] if not line.startswith("leak screening:")]
    blanked = (re.sub(r"[-+]?\d+(\.\d+)? (B|KiB|MiB|GiB)", "N", line) for line in lines)
    return [" ".join(line.split()).strip(" =") for line in blanked if line.strip(" -")]


def test_xdist_gives_the_same_summary(pytester: pytest.Pytester, run_measured) -> None:
    pytester.makepyfile(test_x=SUITE)
    serial, serial_props = run_measured("--memguard")
    parallel, parallel_props = run_measured("--memguard", "-n", "2")
    serial.assert_outcomes(passed=4, failed=1)
    parallel.assert_outcomes(passed=4, failed=1)
    # Same lines; the retained table may order near-zero figures differently per process.
    assert sorted(_summary(serial.stdout.str())) == sorted(_summary(parallel.stdout.str()))
    peak_table = slice(0, 8)
    assert _summary(serial.stdout.str())[peak_table] == _summary(parallel.stdout.str())[peak_table]
    parallel.stdout.fnmatch_lines(
        ["5 tests measured, 1 over limit; highest peak RSS * (test_x.py::test_alloc[[]40[]])"]
    )
    assert serial_props.keys() == parallel_props.keys()
    assert int(parallel_props["test_alloc[40]"]["memguard_rss_peak"]) >= 35 * MIB
    assert parallel_props["test_over"]["memguard_verdict"] == "over_limit"


def test_trace_adds_heap_figures_in_workers_too(pytester: pytest.Pytester, run_measured) -> None:
    pytester.makepyfile(
        test_heap="""
        KEPT = []

        def test_list_of_objects():
            KEPT.append([object() for _ in range(100_000)])

        def test_tracing_is_on():
            import tracemalloc
            assert tracemalloc.is_tracing()
        """
    )
    for args in ((), ("-n", "2")):
        result, props = run_measured("--memguard", "--memguard-trace", "--memguard-leaks=off", *args)
        result.assert_outcomes(passed=2)
        heap_retained = int(props["test_list_of_objects"]["memguard_heap_retained"])
        assert 100_000 * 16 <= heap_retained <= 100_000 * 64, args
        assert int(props["test_list_of_objects"]["memguard_heap_peak"]) >= heap_retained
        result.stdout.fnmatch_lines(["memguard: peak RSS: *; tracemalloc on", "test * peak heap * retained heap *"])


def test_tracing_started_by_the_user_is_left_as_it_was(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import tracemalloc

        def pytest_configure(config):
            tracemalloc.start(3)
        """
    )
    pytester.makepyfile(
        """
        import tracemalloc

        def test_user_settings_kept():
            assert tracemalloc.is_tracing()
            assert tracemalloc.get_traceback_limit() == 3
        """
    )
    result = pytester.runpytest_subprocess("--memguard", "--memguard-trace", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_junitxml_carries_properties_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=SUITE)
    result = pytester.runpytest_subprocess("--memguard", "-n", "2", "--junitxml=out.xml", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert xml.count('name="memguard_verdict"') == 5
    assert 'name="memguard_verdict" value="over_limit"' in xml
    assert "MemoryLimitExceeded: peak RSS" in xml


def test_a_tests_own_memguard_properties_read_the_same_serial_and_under_xdist(
    pytester: pytest.Pytester, run_measured
) -> None:
    # Serially the session keeps the record it built; under xdist the controller rebuilds it
    # from the report's properties, which include the test's own record_property() values.
    pytester.makepyfile(
        test_p="""
        def test_own(record_property):
            record_property("memguard_baseline_rss_peak", 1)
            record_property("memguard_tolerance_rss_peak", 1)
        """
    )
    run_measured("--memguard", "--memguard-json=serial.json")
    run_measured("--memguard", "-n", "1", "--memguard-json=xdist.json")

    def findings(name: str) -> list[tuple[object, object, object]]:
        tests = json.loads((pytester.path / name).read_text())["tests"]
        (only,) = tests.values()  # the figures themselves differ between processes
        return [(found["figure"], found["baseline"], found["tolerance"]) for found in only.get("findings", [])]

    assert findings("serial.json") == findings("xdist.json") == [("rss_peak", 1, 1)]


STOPS_TRACING = """
import tracemalloc

def test_stops_tracing():
    tracemalloc.stop()

def test_after():
    pass
"""


def test_a_workers_notes_reach_the_controllers_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_stops=STOPS_TRACING)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memguard", "--memguard-trace", "-n", "1")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*a test stopped tracemalloc; memguard restarted it for the next tests*"])
