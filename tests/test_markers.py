"""``@pytest.mark.memguard`` limits at every level, and what a breach or a bad value looks like."""

from __future__ import annotations

import pytest

LEVELS = """
import pytest

pytestmark = pytest.mark.memguard(peak="200 MiB", retained="64 MiB")

def alloc(mib):
    block = bytearray(mib * 1024 * 1024)
    del block

def test_module_level():
    alloc(30)

@pytest.mark.memguard(peak="10 MiB")
def test_function_level():
    alloc(30)

@pytest.mark.memguard(peak="10 MiB")
class TestClassLevel:
    def test_inherits_class(self):
        alloc(30)

    @pytest.mark.memguard(peak="100 MiB")
    def test_function_beats_class(self):
        alloc(30)

    @pytest.mark.memguard(peak=None)
    def test_none_removes_limit(self):
        alloc(30)

@pytest.mark.parametrize("mib", [1, pytest.param(30, marks=pytest.mark.memguard(peak="10 MiB"))])
def test_param(mib):
    alloc(mib)

@pytest.mark.memguard(peak="10 MiB")
@pytest.mark.parametrize("mib", [pytest.param(30, marks=pytest.mark.memguard(peak="100 MiB"), id="relaxed")])
def test_param_beats_function(mib):
    alloc(mib)

@pytest.mark.parametrize("mib", [pytest.param(30, marks=pytest.mark.memguard(peak="10 MiB"), id="tightened")])
@pytest.mark.memguard(peak="100 MiB")
def test_param_tightens_function(mib):
    alloc(mib)
"""


def test_nearest_marker_wins_at_each_level(pytester: pytest.Pytester, run_measured) -> None:
    pytester.makepyfile(test_levels=LEVELS)
    result, props = run_measured("--memguard")
    verdicts = {name: values["memguard_verdict"] for name, values in props.items()}
    assert verdicts == {
        "test_module_level": "ok",
        "test_function_level": "over_limit",
        "test_inherits_class": "over_limit",
        "test_function_beats_class": "ok",
        "test_none_removes_limit": "ok",
        "test_param[1]": "ok",
        "test_param[30]": "over_limit",
        # a parametrization's own marker is nearer than its function's, in either decorator order
        "test_param_beats_function[relaxed]": "ok",
        "test_param_tightens_function[tightened]": "over_limit",
    }
    result.assert_outcomes(passed=5, failed=4)
    assert "on class TestClassLevel" in props["test_inherits_class"]["memguard_message"]
    assert "on test_function_level" in props["test_function_level"]["memguard_message"]
    assert "of parametrization test_param[30]" in props["test_param[30]"]["memguard_message"]


def test_marked_test_is_measured_without_the_flag(pytester: pytest.Pytester, run_measured) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.memguard(peak="10 MiB")
        def test_marked():
            block = bytearray(30 * 1024 * 1024)

        def test_unmarked():
            pass
        """
    )
    result, props = run_measured()
    result.assert_outcomes(passed=1, failed=1)
    assert props["test_marked"]["memguard_verdict"] == "over_limit"
    assert props["test_unmarked"] == {}


def test_breach_reads_in_one_line_with_a_details_section(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_big="""
        import pytest

        @pytest.mark.memguard(peak="20 MB")
        def test_big():
            block = bytearray(60 * 1024 * 1024)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rf")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*_ test_big _*",
            "peak RSS * MiB exceeds the limit of 20 MB (19.1 MiB) by * MiB "
            "(limit from @pytest.mark.memguard on test_big)",
            "*- memguard -*",
            "figure * measured * limit * limit from * status",
            "peak RSS * MiB * 20 MB (19.1 MiB) * @pytest.mark.memguard on test_big * OVER",
            "FAILED test_big.py::test_big - MemoryLimitExceeded: peak RSS*",
        ]
    )


def test_global_limit_from_the_command_line(pytester: pytest.Pytester, run_measured) -> None:
    pytester.makepyfile(
        """
        def test_opens_a_file(tmp_path):
            test_opens_a_file.handle = open(tmp_path / "x", "w")

        def test_tidy(tmp_path):
            with open(tmp_path / "x", "w"):
                pass
        """
    )
    result, props = run_measured("--memguard-limit", "fds=0", "--memguard-leaks=off")
    result.assert_outcomes(passed=1, failed=1)
    assert props["test_opens_a_file"]["memguard_fds_gained"] == "1"
    assert props["test_opens_a_file"]["memguard_message"] == (
        "file descriptors gained 1 exceeds the limit of 0 by 1 (limit from --memguard-limit)"
    )
    assert props["test_tidy"]["memguard_verdict"] == "ok"


def test_retained_limit_ignores_garbage_the_collector_frees(pytester: pytest.Pytester, run_measured) -> None:
    pytester.makepyfile(
        """
        import gc
        import pytest

        KEPT = []

        @pytest.mark.memguard(heap_retained="1 MiB")
        def test_cyclic_garbage():
            gc.disable()
            try:
                for _ in range(2000):
                    node = {"payload": "x" * 4096}
                    node["self"] = node
            finally:
                gc.enable()

        @pytest.mark.memguard(heap_retained="1 MiB")
        def test_really_keeps():
            KEPT.append(bytearray(4 * 1024 * 1024))
        """
    )
    result, props = run_measured()
    result.assert_outcomes(passed=1, failed=1)
    assert props["test_cyclic_garbage"]["memguard_verdict"] == "ok"
    assert int(props["test_cyclic_garbage"]["memguard_heap_retained"]) < 1024 * 1024
    assert props["test_really_keeps"]["memguard_verdict"] == "over_limit"
    assert "retained Python heap 4.0 MiB exceeds the limit of 1 MiB" in props["test_really_keeps"]["memguard_message"]


def test_failing_and_xfailing_tests_keep_their_own_outcome(pytester: pytest.Pytester, run_measured) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.memguard(peak="1 MiB")
        def test_crashes():
            block = bytearray(30 * 1024 * 1024)
            raise RuntimeError("the test's own failure")

        @pytest.mark.xfail(reason="known")
        @pytest.mark.memguard(peak="1 MiB")
        def test_xfails():
            block = bytearray(30 * 1024 * 1024)
            assert False

        @pytest.fixture
        def broken():
            raise OSError("setup broke")

        @pytest.mark.memguard(peak="1 MiB")
        def test_setup_error(broken):
            pass

        @pytest.mark.memguard(peak="1 MiB")
        def test_skipped():
            pytest.skip("not today")
        """
    )
    result, props = run_measured("-rA")
    result.assert_outcomes(failed=1, xfailed=1, errors=1, skipped=1)
    result.stdout.fnmatch_lines(["*RuntimeError: the test's own failure*"])
    assert props["test_crashes"]["memguard_verdict"] == "over_limit"


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ('peak="fifty"', "peak='fifty': 'fifty' is not a size"),
        ('retained="10 parsecs"', "unknown unit 'parsecs'"),
        ('peak="-5 MB"', "a size cannot be negative"),
        ('peek="5 MB"', "unknown keyword peek; known: peak, retained, heap_peak, heap_retained, fds, leak, tolerance"),
        ('"5 MB"', "takes keywords only"),
        ("fds=1.5", "fds=1.5 is not a whole number"),
    ],
)
def test_bad_marker_is_a_clear_error_naming_the_test(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.memguard({marker})
        def test_bad():
            pass

        def test_fine():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [f"memguard: invalid marker on test_bad_marker_is_a_clear_error_naming_the_test.py::test_bad: *{message}*"]
    )
    assert "Traceback" not in result.stdout.str()
    assert "pytest_memguard" not in result.stdout.str()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--memguard-top", "-1"], "argument --memguard-top: expected a whole number >= 0, got '-1'"),
        (["--memguard-top", "many"], "argument --memguard-top: expected a whole number >= 0, got 'many'"),
        (["--memguard-limit", "peak=lots"], "memguard: peak='lots': 'lots' is not a size*"),
        (["--memguard-limit", "peak"], "memguard: 'peak' is not KEY=VALUE, e.g. 'peak=50 MB'"),
        (["--memguard-limit", "rss=5MB"], "memguard: unknown keyword rss*"),
    ],
)
def test_bad_option_is_a_usage_error(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmemguard_top = lots\nmemguard = true\n")
    pytester.makepyfile("def test_a(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*memguard: memguard_top must be a whole number >= 0, got 'lots'"])
