"""Cases an independent review found: the plugin must degrade, never crash or mislead."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from pytest_memguard.baseline import Baseline, dump_baseline, load_baseline, write_atomic


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_a_suspect_that_stops_tracemalloc_does_not_end_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import tracemalloc
        KEEP = []

        def test_uses_tracemalloc():
            tracemalloc.start()
            KEEP.append(bytearray(2 * 1024 * 1024))
            tracemalloc.stop()

        def test_after():
            pass
        """
    )
    for args in ((), ("--memguard-trace",)):
        result = run(pytester, "--memguard", "--memguard-leaks=warn", *args)
        assert result.ret == pytest.ExitCode.OK, result.stdout.str()
        result.assert_outcomes(passed=2)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def test_heap_limits_still_hold_after_a_test_stopped_tracemalloc(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import tracemalloc
        import pytest

        def test_a():
            tracemalloc.start()
            tracemalloc.stop()

        @pytest.mark.memguard(heap_peak="1 KiB")
        def test_b():
            objects = [object() for _ in range(100_000)]
        """
    )
    result = run(pytester, "--memguard", "--memguard-leaks=off")
    result.assert_outcomes(passed=1, failed=1)


# pytest 8.0.2 to 8.2 end such a run with a traceback of their own, memguard or not (pytest #11706)
@pytest.mark.skipif(pytest.version_tuple < (8, 3), reason="pytest reports these errors after -x from 8.3 on")
def test_stopping_early_still_reports_fixture_teardown_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="module")
        def resource():
            yield
            raise RuntimeError("module teardown boom")

        def test_one(resource):
            assert False

        def test_two(resource):
            pass
        """
    )
    result = run(pytester, "--memguard", "-x")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_one*", "*1 failed, 1 error*"])
    assert "Traceback (most recent call last)" not in result.stderr.str()


def test_xpass_over_its_limit_fails_in_junit_too(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.xfail(reason="known")
        @pytest.mark.memguard(peak="1 MiB")
        def test_xpass():
            block = bytearray(8 * 1024 * 1024)
        """
    )
    result = run(pytester, "--junitxml=out.xml")
    result.assert_outcomes(failed=1)
    xml = (pytester.path / "out.xml").read_text()
    assert "<failure" in xml
    assert "<skipped" not in xml


def test_an_unwritable_report_is_an_error_line_not_a_crash(pytester: pytest.Pytester) -> None:
    """And the other reports are still written (one failure stopped every report after it)."""
    pytester.makepyfile("def test_a(): pass")
    result = run(pytester, "--memguard", f"--memguard-json={pytester.path}", "--memguard-markdown=ok.md")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"memguard: could not write a report to {pytester.path}: *"])
    assert result.ret == pytest.ExitCode.OK
    assert "test_a" in (pytester.path / "ok.md").read_text()


def test_a_baseline_update_that_cannot_be_written_fails_the_run_with_a_line(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    # a name the file system takes (255 bytes), but not the temporary file's beside it (longer)
    name = "b" * 250 + ".yaml"
    result = run(pytester, "--memguard", "--memguard-update-baseline", f"--memguard-baseline={name}")
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines([f"memguard baseline *{name}: not written (could not write it: *)"])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("debugger", ["--pdb", "--trace"])
def test_debugger_runs_never_rerun_tests(pytester: pytest.Pytester, debugger: str) -> None:
    pytester.makepyfile("KEPT = []\ndef test_leaks():\n    KEPT.append(bytearray(2 * 1024 * 1024))\n")
    result = pytester.run(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--memguard", debugger, "--memguard-json=r.json",
        stdin=b"c\nc\nc\nc\n",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    assert result.stdout.str().count("(Pdb)") <= 1
    assert '"leak"' not in (pytester.path / "r.json").read_text()


def test_marker_alone_measures_without_leak_screening(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import pytest\nKEPT = []\n@pytest.mark.memguard(peak='1 GB')\n"
        "def test_marked():\n    KEPT.append(bytearray(2 * 1024 * 1024))\n"
    )
    run(pytester).assert_outcomes(passed=1)


def test_quiet_quiet_still_says_why_the_gate_failed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        "import os\ndef test_grows():\n    block = bytearray(int(os.environ.get('SIZE', '4')) * 1024 * 1024)\n"
    )
    run(pytester, "--memguard", "--memguard-update-baseline")
    pytester._monkeypatch.setenv("SIZE", "40")  # type: ignore[attr-defined]
    result = run(pytester, "--memguard", "-qq")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["memguard gate: FAILED, 1 regression(s)"])


def test_collect_only_writes_no_baseline(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = run(pytester, "--memguard", "--memguard-update-baseline", "--collect-only")
    assert not (pytester.path / "memguard-baseline.yaml").exists()
    assert "tests measured" not in result.stdout.str()  # nothing ran: no empty summary either


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_atomic_write_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "baseline.yaml"
    write_atomic(path, "a\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~_umask()
    path.chmod(0o644)
    write_atomic(path, "b\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def test_leading_zeros_are_read_as_yaml_reads_them(tmp_path: Path) -> None:
    path = tmp_path / "baseline.yaml"
    text = dump_baseline(Baseline(tests={"t::a": {"rss_peak": 100}}, environment={}))
    path.write_text(text.replace("rss_peak: 100", "rss_peak: 0100"))
    loaded = load_baseline(path)
    assert loaded is not None
    assert loaded.tests["t::a"]["rss_peak"] == 64  # YAML 1.1 octal, whichever path reads it


def test_leaks_the_quick_look_must_not_clear(pytester: pytest.Pytester) -> None:
    # Memory glibc does not count (mmap) and a few small objects per run: one re-run that
    # moves them is a suspect that moved, not a quiet one.
    pytester.makepyfile(
        """
        import mmap
        KEPT, WARM = [], []

        def test_native_leak():
            block = mmap.mmap(-1, 2 * 1024 * 1024)
            block.write(b"x" * len(block))
            KEPT.append(block)

        def test_small_objects_leak():
            if not WARM:
                WARM.extend(object() for _ in range(3000))  # a first-call cache makes it a suspect
            KEPT.extend(bytes(450) for _ in range(12))
        """
    )
    result = run(pytester, "--memguard", "--memguard-leaks=warn", "--memguard-json=r.json", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    assert {nodeid.split("::")[1]: entry["verdict"] for nodeid, entry in tests.items()} == {
        "test_native_leak": "leak",
        "test_small_objects_leak": "leak",
    }


def test_a_collection_that_frees_older_garbage_does_not_clear_a_slow_leak(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import gc, time

        class Node:
            def __init__(self):
                self.me = self

        GRAPH = [Node() for _ in range(20000)]
        gc.collect()
        HEAD = None

        def test_drops_the_graph():
            GRAPH.clear()  # older cyclic garbage, waiting for a full collection

        def test_slow_leak():
            global HEAD
            time.sleep(0.03)
            for _ in range(300):
                HEAD = (HEAD, object())  # 600 blocks per run
        """
    )
    result = run(pytester, "--memguard", "-p", "no:randomly", "-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["leak: leaks */run, * objects/run over * runs", "FAILED *::test_slow_leak*"])


def test_objects_the_user_froze_stay_frozen(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("import gc\ngc.freeze()\n")
    pytester.makepyfile(
        """
        import gc
        CACHE = []

        def test_suspect():
            if not CACHE:
                CACHE.extend(object() for _ in range(2000))

        def test_after():
            assert gc.get_freeze_count() > 0
        """
    )
    run(pytester, "--memguard", "-p", "no:randomly").assert_outcomes(passed=2)


def test_an_unreadable_analysis_property_is_dropped_not_a_crash(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import json

        def test_hand_made(record_property):
            record_property("memguard_analysis", json.dumps({"efficiency": 10**400}))
        """
    )
    for args in ((), ("-n", "2")):
        result = run(pytester, "--memguard", "--memguard-json=r.json", *args)
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
        result.assert_outcomes(passed=1)


def test_counts_out_of_range_are_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_a(): pass")
    for option, words in (
        ("--memguard-stack-depth=70000", "*memguard_stack_depth must be at most 65535, got 70000*"),
        ("--memguard-leak-runs=2", "*memguard_leak_runs must be at least 3, got 2*"),
    ):
        result = run(pytester, "--memguard", option)
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([words])


@pytest.mark.parametrize("stop", ["raise KeyboardInterrupt", "pytest.exit('stop now')"])
def test_stopping_during_a_hidden_rerun_keeps_the_first_runs_result(pytester: pytest.Pytester, stop: str) -> None:
    pytester.makepyfile(
        f"""
        import pytest
        RUNS, KEPT = [], []

        @pytest.mark.memguard(peak="1 MB")
        def test_big():
            RUNS.append(1)
            if len(RUNS) > 1:
                {stop}
            KEPT.append(bytearray(8 * 1024 * 1024))

        def test_next():
            pass
        """
    )
    result = run(pytester, "--memguard", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["*.py F*", "peak RSS * exceeds the limit of 1 MB*", "*::test_big * over_limit"])
    assert "previous item was not torn down" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_maxfail_stops_after_that_many_failures(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_one():
            assert False

        def test_two():
            assert False

        def test_three():
            assert False
        """
    )
    result = run(pytester, "--memguard", "--maxfail=2")
    result.assert_outcomes(failed=2)


def test_a_run_leaves_no_gc_callback_behind(pytester: pytest.Pytester) -> None:
    import gc

    from pytest_memguard.session import _Collections

    def ours() -> list[object]:  # this very run (pytest's own, measuring us) has one too
        return [callback for callback in gc.callbacks if isinstance(callback, _Collections)]

    before = ours()
    pytester.makepyfile("def test_ok():\n    pass\n")
    for args in (("--memguard",), ("--memguard", "-x"), ("--memguard", "--collect-only")):
        pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
        assert ours() == before, args
