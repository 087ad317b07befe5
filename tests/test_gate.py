"""The baseline gate end to end: record, compare, fail or warn, update partially, bad files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pytest_memguard.baseline import Finding
from pytest_memguard.gate import GateResult
from pytest_memguard.record import MemoryRecord, Verdict
from pytest_memguard.reporting.terminal import render_gate
from pytest_memguard.tracker import Measurement

SUITE = """
import os

SIZE = int(os.environ.get("MEMGUARD_TEST_SIZE", "8"))
KEPT = []

def test_peak():
    block = bytearray(SIZE * 1024 * 1024)
    del block

def test_keeps():
    KEPT.append(bytearray(SIZE * 1024 * 1024))

def test_steady():
    block = bytearray(8 * 1024 * 1024)
    del block
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def run(pytester: pytest.Pytester, *args: str, size: int = 8) -> pytest.RunResult:
    pytester._monkeypatch.setenv("MEMGUARD_TEST_SIZE", str(size))  # type: ignore[attr-defined]
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memguard", "--memguard-leaks=off", *args)


def baseline_of(pytester: pytest.Pytester) -> dict[str, dict[str, int]]:
    data = yaml.safe_load((pytester.path / "memguard-baseline.yaml").read_text())
    return data["tests"]


def test_the_regressions_table_lists_only_what_went_up() -> None:
    """A regressed test's other figures that went down are not regressions (nor listed as such)."""
    findings = (
        Finding("t.py::a", "rss_peak", 1 << 20, 9 << 20, 1024),
        Finding("t.py::a", "rss_retained", 8 << 20, 0, 1024),
    )
    record = MemoryRecord("t.py::a", Measurement(9 << 20, 0, None, None, 0), Verdict.REGRESSION, "", findings)
    text = render_gate(
        GateResult(regressions=[record]), baseline=Path("b.yaml"), gate="fail", update=False, brief=False
    )
    assert "peak RSS" in text
    assert "retained RSS" not in text


@pytest.mark.with_hypothesis_plugin
def test_record_then_pass_then_catch_a_regression(suite: pytest.Pytester) -> None:
    recorded = run(suite, "--memguard-update-baseline")
    assert recorded.ret == pytest.ExitCode.OK
    recorded.stdout.fnmatch_lines(["memguard baseline */memguard-baseline.yaml: written (3 entries changed)"])
    tests = baseline_of(suite)
    assert set(tests) == {"test_suite.py::test_peak", "test_suite.py::test_keeps", "test_suite.py::test_steady"}
    assert tests["test_suite.py::test_keeps"]["rss_retained"] >= 7 * 1024 * 1024

    same = run(suite)
    assert same.ret == pytest.ExitCode.OK
    same.stdout.fnmatch_lines(["memguard gate: passed, no regression against */memguard-baseline.yaml"])

    worse = run(suite, size=16)
    assert worse.ret == pytest.ExitCode.TESTS_FAILED
    worse.stdout.fnmatch_lines(
        [
            "memguard gate: FAILED, 2 regressions against */memguard-baseline.yaml",
            "Regressions (re-measured before they count):",
            "test * figure * baseline * now * change * tolerance",
            "test_suite.py::test_keeps * peak RSS * 8.0 MiB * 16.0 MiB * +8.0 MiB, +100% *",
            "test_suite.py::test_keeps * retained RSS *",
            "test_suite.py::test_peak * peak RSS *",
            "*3 passed, 2 memguard regressions in *",
        ]
    )


def test_regression_verdict_reaches_junitxml_and_xdist(suite: pytest.Pytester) -> None:
    run(suite, "--memguard-update-baseline")
    result = run(suite, "-n", "2", "--junitxml=out.xml", size=16)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    xml = (suite.path / "out.xml").read_text()
    assert xml.count('name="memguard_verdict" value="regression"') == 2
    assert xml.count('name="memguard_verdict" value="ok"') == 1
    assert 'name="memguard_baseline_rss_peak"' in xml
    result.stdout.fnmatch_lines(["memguard gate: FAILED, 2 regressions *"])


def test_a_run_stopped_on_a_failure_still_counts_its_regressions(suite: pytest.Pytester) -> None:
    """-x stops the run with tests left; pytest's closing line is then built from a list of
    kinds it kept from before the gate, which would leave the regressions out."""
    run(suite, "--memguard-update-baseline")
    suite.makepyfile(test_zfail="def test_fails():\n    assert False\n\ndef test_never_runs():\n    pass\n")
    before = (suite.path / "memguard-baseline.yaml").read_text()
    result = run(suite, "-x", size=16)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["memguard gate: FAILED, 2 regressions *", "*1 failed, 3 passed, 2 memguard regressions in *"]
    )
    stopped = run(suite, "-x", "--memguard-update-baseline", size=16)  # a partial run records nothing
    assert stopped.ret == pytest.ExitCode.TESTS_FAILED
    stopped.stdout.fnmatch_lines(["memguard baseline *: not written (the run stopped before its last test; *)"])
    assert (suite.path / "memguard-baseline.yaml").read_text() == before


def test_an_xdist_run_stopped_on_a_failure_counts_its_regressions_too(suite: pytest.Pytester) -> None:
    """xdist's controller stops on -x/--maxfail with its own Interrupted (a KeyboardInterrupt),
    not pytest's Session.Failed: that is still a stop on failures, not a Ctrl-C."""
    pytest.importorskip("xdist")
    run(suite, "--memguard-update-baseline")
    suite.makepyfile(
        test_zfail="import time\n\ndef test_fails():\n    time.sleep(1)\n    assert False\n\n"
        "def test_never_runs():\n    pass\n"
    )
    before = (suite.path / "memguard-baseline.yaml").read_text()
    xdist = ("-n", "2", "--dist", "loadfile", "-x")  # the suite on one worker, the failure after it on the other
    result = run(suite, *xdist, size=16)
    result.stdout.fnmatch_lines(
        ["memguard gate: FAILED, 2 regressions *", "*1 failed, 3 passed, 2 memguard regressions in *"]
    )
    stopped = run(suite, *xdist, "--memguard-update-baseline", size=16)
    stopped.stdout.fnmatch_lines(["memguard baseline *: not written (the run stopped before its last test; *)"])
    assert (suite.path / "memguard-baseline.yaml").read_text() == before
    (suite.path / "test_zfail.py").write_text("def test_fails():\n    assert False\n")  # every test runs
    whole = run(suite, *xdist, "--memguard-update-baseline", size=16)
    whole.stdout.fnmatch_lines(["memguard baseline *: written (2 entries changed)"])


def test_x_on_the_last_test_is_a_whole_run(pytester: pytest.Pytester) -> None:
    """pytest stops with -x after a failing last test too: every test ran, so the baseline
    update asked for is made (also when that last test has a bad marker: it fails in setup)."""
    pytester.makepyfile(test_a="def test_ok():\n    pass\n\ndef test_zz_fails():\n    assert False\n")
    result = run(pytester, "-x", "--memguard-update-baseline")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "memguard baseline *: written (1 entries changed)",
            "1 test that did not pass on its own not recorded (failed, *): test_a.py::test_zz_fails",
        ]
    )
    assert set(baseline_of(pytester)) == {"test_a.py::test_ok"}
    pytester.makepyfile(
        test_a="def test_ok():\n    pass\n",
        test_b="import pytest\n@pytest.mark.memguard(peak='lots')\ndef test_zzz():\n    pass\n",
    )
    result = run(pytester, "-x", "--memguard-update-baseline")
    result.stdout.fnmatch_lines(["*invalid marker*", "memguard baseline *: unchanged"])  # not "not written"


PARTIAL_RUNS = """
import os, pytest
BROKEN = os.environ.get("BROKEN") == "1"
SIZE = (8 if BROKEN else 32) * 1024 * 1024

@pytest.fixture
def resource():
    if BROKEN:
        raise RuntimeError("fixture trouble")

def test_fails_early():
    block = bytearray(SIZE)  # broken, it fails before it gets to its full size
    assert not BROKEN
    del block

def test_breaks_in_setup(resource):
    pass

@pytest.mark.xfail(condition=BROKEN, reason="a known bug")
def test_xfails():
    block = bytearray(SIZE)
    assert not BROKEN
    del block

@pytest.mark.memguard(peak="1 KiB")
def test_over_its_limit():  # failed by memguard only: that is what it uses, recorded
    block = bytearray(8 * 1024 * 1024)
    del block

@pytest.mark.memguard(peak="1 KiB")
def test_over_its_limit_and_failing():
    block = bytearray(SIZE)
    assert not BROKEN
    del block
"""


@pytest.mark.parametrize("workers", [(), ("-n", "2")], ids=["serial", "xdist"])
def test_runs_that_did_not_pass_on_their_own_are_neither_recorded_nor_compared(
    pytester: pytest.Pytester, workers: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_b=PARTIAL_RUNS)
    run(pytester, "--memguard-update-baseline", *workers)
    before = baseline_of(pytester)
    assert set(before) == {f"test_b.py::{name}" for name in ("test_fails_early", "test_breaks_in_setup",
        "test_xfails", "test_over_its_limit", "test_over_its_limit_and_failing")}  # fmt: skip
    pytester._monkeypatch.setenv("BROKEN", "1")  # type: ignore[attr-defined]
    result = run(pytester, "--memguard-update-baseline", "--junitxml=out.xml", *workers)
    assert (pytester.path / "out.xml").read_text().count('name="memguard_partial_run" value="True"') == 3
    # a test that errors in setup has no call, so no figures: nothing to leave out, its entry stays
    result.stdout.fnmatch_lines(
        [
            "3 tests that did not pass on their own not recorded (*): test_b.py::test_fails_early, "
            "test_b.py::test_over_its_limit_and_failing, test_b.py::test_xfails"
        ]
    )
    after = baseline_of(pytester)
    assert after == before
    # compared, the cut-short runs (24 MiB less) are no improvement, and nothing is a regression
    compared = run(pytester, *workers)
    compared.stdout.fnmatch_lines(["memguard gate: passed, no regression against *"])
    compared.stdout.no_fnmatch_line("*Improvements*")
    compared.stdout.no_fnmatch_line("*memguard regression*")


def test_warn_mode_reports_without_failing(suite: pytest.Pytester) -> None:
    run(suite, "--memguard-update-baseline")
    result = run(suite, "--memguard-gate=warn", size=16)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["memguard gate: 2 regressions against * (--memguard-gate=warn: not failing)"])


def test_improvements_and_new_tests_are_reported_not_failed(suite: pytest.Pytester) -> None:
    run(suite, "--memguard-update-baseline", size=16)
    suite.makepyfile(test_extra="def test_new(): pass")
    result = run(suite)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        [
            "memguard gate: passed, no regression against *",
            "Improvements (refresh with --memguard-update-baseline):",
            "*test_suite.py::test_keeps * peak RSS * 16.0 MiB * 8.0 MiB * -8.0 MiB, -50% *",
            "1 test(s) not in the baseline yet; --memguard-update-baseline records them",
        ]
    )


def test_update_of_a_subset_keeps_other_entries(suite: pytest.Pytester) -> None:
    run(suite, "--memguard-update-baseline")
    before = baseline_of(suite)
    run(suite, "--memguard-update-baseline", "-k", "test_keeps", size=32)
    after = baseline_of(suite)
    assert after["test_suite.py::test_peak"] == before["test_suite.py::test_peak"]
    assert after["test_suite.py::test_steady"] == before["test_suite.py::test_steady"]
    assert after["test_suite.py::test_keeps"]["rss_peak"] >= 31 * 1024 * 1024
    subset = run(suite, "-k", "test_peak")
    subset.stdout.fnmatch_lines(["2 test(s) in the baseline did not run here (deselected, skipped or removed)"])


def test_rerunning_unchanged_rewrites_nothing(suite: pytest.Pytester) -> None:
    run(suite, "--memguard-update-baseline")
    path = suite.path / "memguard-baseline.yaml"
    text, mtime = path.read_text(), path.stat().st_mtime_ns
    again = run(suite, "--memguard-update-baseline")
    again.stdout.fnmatch_lines(["memguard baseline *: unchanged"])
    assert path.read_text() == text
    assert path.stat().st_mtime_ns == mtime


def test_a_noisy_first_sample_is_re_measured_away(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_warm="""
        import os
        STATE = {"first": True}

        def test_cache_on_first_call():
            # the first call pays 24 MiB once (like an import or a warm-up), re-runs do not
            if STATE.pop("first", False) and os.environ.get("MEMGUARD_TEST_SIZE") == "16":
                block = bytearray(24 * 1024 * 1024)
                del block
            block = bytearray(4 * 1024 * 1024)
            del block
        """
    )
    run(pytester, "--memguard-update-baseline")
    noisy = run(pytester, size=16)
    assert noisy.ret == pytest.ExitCode.OK
    noisy.stdout.fnmatch_lines(["memguard gate: passed, no regression *"])
    no_reruns = run(pytester, "--memguard-reruns=0", size=16)
    assert no_reruns.ret == pytest.ExitCode.TESTS_FAILED


def test_marker_tolerance_and_config_file(suite: pytest.Pytester) -> None:
    run(suite, "--memguard-update-baseline")
    (suite.path / "memguard.yaml").write_text(
        "rules:\n  - match: '*::test_keeps'\n    tolerance:\n      rss: 200% absolute=1GiB\n"
    )
    result = run(suite, "--memguard-config", "memguard.yaml", size=16)
    result.stdout.fnmatch_lines(["memguard gate: FAILED, 1 regression against *"])
    suite.makepyfile(
        test_suite=SUITE.replace(
            "def test_peak", "import pytest\n@pytest.mark.memguard(tolerance='500%')\ndef test_peak"
        )
    )
    result = run(suite, "--memguard-config", "memguard.yaml", size=16)
    assert result.ret == pytest.ExitCode.OK


def test_environment_change_is_a_note(suite: pytest.Pytester) -> None:
    run(suite, "--memguard-update-baseline")
    path = suite.path / "memguard-baseline.yaml"
    path.write_text(path.read_text().replace("python: '3.", "python: '2."))
    result = run(suite)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["note: the baseline was recorded on * python=2.*, this run is * python=3.*"])
    # a key only a hand-edited file has is no difference (shown side by side it read as none)
    path.write_text(
        path.read_text().replace("python: '2.", "python: '3.").replace("environment:", "environment:\n  ci: github")
    )
    result = run(suite)
    assert "the baseline was recorded on" not in result.stdout.str()


def test_a_report_cannot_overwrite_the_baseline(suite: pytest.Pytester) -> None:
    result = run(suite, "--memguard-json=memguard-baseline.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: memguard: --memguard-json * is the baseline; the report would overwrite it"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("schema: 1\ntests:\n  t::a: {rss_peak: [\n", "not valid YAML at line 4"),
        ("schema: 1\ntests:\n  t::a: {rss_peak: -1}\n", "test 't::a': rss_peak cannot be negative"),
        ("schema: 7\ntests: {}\n", "newer pytest-memguard"),
        ("schema: 1\ntests:\n  t::a: {rss_peak: 1}\n  t::a: {rss_peak: 1}\n", "duplicate entry 't::a'"),
    ],
)
def test_bad_baseline_is_a_clear_error_and_is_never_overwritten(
    suite: pytest.Pytester, content: str, message: str
) -> None:
    path: Path = suite.path / "memguard-baseline.yaml"
    path.write_text(content)
    for args in ((), ("--memguard-update-baseline",)):
        result = run(suite, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: memguard: {path}: *{message}*"])
        assert "Traceback" not in result.stderr.str()
        assert path.read_text() == content


def test_custom_baseline_path_from_ini(suite: pytest.Pytester) -> None:
    suite.makeini("[pytest]\nmemguard_baseline = ci/memory.yaml\n")
    before = run(suite)  # not recorded yet: said, not an error
    assert before.ret == pytest.ExitCode.OK
    before.stdout.fnmatch_lines(["note: baseline */ci/memory.yaml does not exist, so nothing is compared; *"])
    run(suite, "--memguard-update-baseline")
    assert (suite.path / "ci" / "memory.yaml").exists()
    assert not (suite.path / "memguard-baseline.yaml").exists()


def test_a_baseline_named_on_the_command_line_must_exist(suite: pytest.Pytester) -> None:
    """A typo there would let every run pass without a gate."""
    result = run(suite, "--memguard-baseline=memguard-basline.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: memguard: baseline */memguard-basline.yaml does not exist, *"])


def test_updating_the_baseline_needs_memguard(suite: pytest.Pytester) -> None:
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--memguard-update-baseline")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: memguard: --memguard-update-baseline records what --memguard measures: *"])
    assert not (suite.path / "memguard-baseline.yaml").exists()
