"""Leak screening and confirmation end to end (pytester sessions in subprocesses)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_memguard.glibc_heap import malloc_in_use_reader

CORPUS = Path(__file__).parent / "corpus" / "leak_suite.py"
#: glibc 2.33+ (mallinfo2): the C heap's bytes in use, which sees a leak of 1 KiB per run
C_HEAP_READABLE = malloc_in_use_reader() is not None
needs_c_heap = pytest.mark.skipif(not C_HEAP_READABLE, reason="needs glibc's mallinfo2 (Linux, glibc 2.33+)")
#: the ``subtests`` fixture came with pytest 9.0 (before, from the pytest-subtests plugin)
SUBTESTS = pytest.version_tuple >= (9,)

LEAKY = """
import pytest

KEPT = []

def test_leaks():
    KEPT.append(bytearray(2 * 1024 * 1024))

def test_clean():
    block = bytearray(2 * 1024 * 1024)
    del block
"""


def verdicts(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict[str, dict[str, object]]]:
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--memguard", "--memguard-json=r.json", *args)
    tests = json.loads((pytester.path / "r.json").read_text())["tests"]
    return result, {nodeid.split("::", 1)[1]: entry for nodeid, entry in tests.items()}


def test_corpus_leaks_caught_and_false_alarms_not_raised(pytester: pytest.Pytester) -> None:
    shutil.copy(CORPUS, pytester.path / "leak_suite.py")
    _, tests = verdicts(pytester, "leak_suite.py")
    leaks = {name for name, entry in tests.items() if entry["verdict"] == "leak"}
    expected = {name for name in tests if name.startswith("test_leak_")}
    if not C_HEAP_READABLE:  # without glibc's count, 1 KiB per run is below every other bar
        expected.discard("test_leak_list_1kib_per_run_slow")
    assert leaks == expected
    assert not {name for name in leaks if "clean" in name}


def test_confirmed_leak_fails_with_one_line_and_names_the_site(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    result, tests = verdicts(pytester, "-rf")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "leaks 2.0 MiB/run, 1 objects/run over * runs",  # the bytearray
            "*- memguard -*",
            "leak: leaks 2.0 MiB/run* over * runs",
            "  2.0 MiB/run, */run at *test_leaky.py:6",
            "Leaks (confirmed by re-running the test):",
            "  test_leaky.py::test_leaks: leaks 2.0 MiB/run* over * runs",
            "leak screening: 1 suspect(s) re-run to confirm, 1 confirmed; session memory pressure *",
            "FAILED test_leaky.py::test_leaks - MemoryLimitExceeded: leaks 2.0 MiB/run*",
        ]
    )
    leak = tests["test_leaks"]["leak"]
    assert isinstance(leak, dict)
    assert leak["confirmed"] is True
    assert tests["test_clean"]["verdict"] == "ok"


def test_warn_and_off(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaky=LEAKY)
    warned, tests = verdicts(pytester, "--memguard-leaks=warn")
    warned.assert_outcomes(passed=2)
    assert tests["test_leaks"]["verdict"] == "leak"
    off, tests = verdicts(pytester, "--memguard-leaks=off")
    off.assert_outcomes(passed=2)
    assert "leak" not in tests["test_leaks"]


def test_marker_leak_false_never_reruns_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_once="""
        import pytest
        RUNS = []

        @pytest.mark.memguard(leak=False)
        def test_side_effects():
            RUNS.append(bytearray(2 * 1024 * 1024))
            assert len(RUNS) == 1

        @pytest.mark.memguard(leak="sometimes")
        def test_bad_value():
            pass
        """
    )
    result, tests = verdicts(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "leak" not in tests["test_side_effects"]
    result.stdout.fnmatch_lines(["*leak='sometimes': use True, False, 'fail', 'warn' or 'off'*"])


def test_a_test_that_cannot_be_repeated_is_reported_not_rerun_silently(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_once="""
        RUNS = []

        def test_only_once():
            RUNS.append(bytearray(2 * 1024 * 1024))
            assert len(RUNS) == 1
        """
    )
    result, tests = verdicts(pytester)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["not checked for leaks: test_once.py::test_only_once: did not pass when re-run*"])
    assert tests["test_only_once"]["verdict"] == "ok"


GARBAGE = """
import gc, time

class Node:
    def __init__(self):
        self.me = self

def make_garbage():
    nodes = [Node() for _ in range(5000)]
    gc.collect()  # they survive a collection: now in the oldest generation, as in a long test
    del nodes  # unreachable cycles that only a full collection frees

def test_slow_garbage():
    make_garbage()
    time.sleep(0.05)  # re-running costs more than one collection

def test_fast_garbage():
    make_garbage()
"""


def test_garbage_waiting_for_the_collector_is_no_leak(pytester: pytest.Pytester) -> None:
    # Thousands of objects in reference cycles, unreachable when the test ends: the block count
    # says "suspect" until the cycle collector runs. A suspect is re-run once with the collector
    # frozen, which collects what the re-run left and clears it.
    pytester.makepyfile(test_cycles=GARBAGE)
    result, tests = verdicts(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert tests["test_slow_garbage"]["verdict"] == tests["test_fast_garbage"]["verdict"] == "ok"
    # Which of them the block count makes a suspect depends on what the other left: the
    # collection inside make_garbage() also empties the interpreter's free lists.
    checked = [tests[name]["leak"] for name in ("test_slow_garbage", "test_fast_garbage") if "leak" in tests[name]]
    assert checked
    assert all(isinstance(leak, dict) and not leak["confirmed"] and leak["runs"] >= 2 for leak in checked)


@needs_c_heap
def test_a_one_kib_leak_in_a_test_body_is_caught_in_unittest_classes_too(pytester: pytest.Pytester) -> None:
    # pytest keeps ~1 KiB of C heap of its own per test (a unittest item's attributes, its
    # reports): the test body's share, read around the call phase, is what shows a small leak
    pytester.makepyfile(
        test_small="""
        import os, unittest
        KEPT = []

        class Small(unittest.TestCase):
            def test_keeps_one_kib(self):
                KEPT.append(os.urandom(1024))

            def test_clean(self):
                self.assertEqual(len(os.urandom(1024)), 1024)

        def test_function_keeps_one_kib():
            KEPT.append(os.urandom(1024))
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leaks=warn")
    result.assert_outcomes(passed=3)
    assert tests["Small::test_keeps_one_kib"]["verdict"] == "leak"
    assert tests["test_function_keeps_one_kib"]["verdict"] == "leak"
    assert tests["Small::test_clean"]["verdict"] == "ok"


def test_growth_that_stops_after_two_runs_is_cleared_without_tracing(pytester: pytest.Pytester) -> None:
    # a cache that takes two runs to fill: the quick look's second re-run sees it stop
    pytester.makepyfile(
        test_two="""
        class Link:
            __slots__ = ("next",)

            def __init__(self, next):
                self.next = next

        CACHE, FILLS = None, []

        def test_fills_in_two_runs():
            global CACHE
            if len(FILLS) < 2:
                FILLS.append(None)
                for _ in range(3000):  # objects only: no container that grows, no C heap
                    CACHE = Link(CACHE)
        """
    )
    _, tests = verdicts(pytester)
    leak = tests["test_fills_in_two_runs"]["leak"]
    assert isinstance(leak, dict)
    assert (leak["confirmed"], leak["runs"]) == (False, 3)


def test_a_c_heap_cache_that_fills_in_two_runs_is_no_leak(pytester: pytest.Pytester) -> None:
    # The same with C heap: a suspect whose call phase kept 1 KiB or more has its re-runs
    # watched with a 1 KiB bar, and a clean re-run moves glibc's count by up to ~1.1 KiB on
    # its own (1,088 B seen in a pytester session), so the quick look may pass it on to
    # traced re-runs; they clear it.
    pytester.makepyfile(
        test_two="""
        CACHE = []

        def test_fills_in_two_runs():
            if len(CACHE) < 2:
                CACHE.append(bytearray(256 * 1024))
        """
    )
    _, tests = verdicts(pytester)
    leak = tests["test_fills_in_two_runs"]["leak"]
    assert isinstance(leak, dict)
    assert leak["confirmed"] is False
    assert not leak["note"]  # checked, not skipped
    assert tests["test_fills_in_two_runs"]["verdict"] == "ok"


def test_doctests_are_checked_too(pytester: pytest.Pytester) -> None:
    # doctest empties a test's namespace after each run: a re-run must get it back
    pytester.makepyfile(
        leaky_module="""
        KEPT = []

        def grow():
            \"\"\"
            >>> grow()
            >>> len(KEPT) > 0
            True
            \"\"\"
            KEPT.append(bytearray(2 * 1024 * 1024))

        def clean():
            \"\"\"
            >>> data = bytearray(2 * 1024 * 1024)
            >>> len(data)
            2097152
            \"\"\"
        """
    )
    result, tests = verdicts(pytester, "--doctest-modules", "--memguard-leaks=warn", "leaky_module.py")
    result.assert_outcomes(passed=2)
    assert tests["leaky_module.grow"]["verdict"] == "leak"
    assert tests["leaky_module.clean"]["verdict"] == "ok"
    result.stdout.no_fnmatch_line("*not checked for leaks*")


def test_reruns_leave_the_cycle_collector_as_they_found_it(pytester: pytest.Pytester) -> None:
    # Confirmation re-runs freeze the objects alive before them out of the collector (cheap
    # samples); the next test must find nothing frozen, and cycles must be collectable again.
    pytester.makepyfile(
        test_frozen="""
        import gc, weakref
        KEPT = []

        class Node:
            def __init__(self):
                self.me = self

        def test_leaks():
            KEPT.append(bytearray(2 * 1024 * 1024))

        def test_collector_back_to_normal():
            assert gc.get_freeze_count() == 0
            node = Node()
            ref = weakref.ref(node)
            del node
            gc.collect()
            assert ref() is None
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leaks=warn")
    result.assert_outcomes(passed=2)
    assert tests["test_leaks"]["verdict"] == "leak"


def test_reruns_add_no_reports_warnings_or_subtests(pytester: pytest.Pytester) -> None:
    source = """
        import warnings
        KEPT = []

        def test_warns_and_leaks(record_property):
            warnings.warn("careful", UserWarning)
            record_property("mine", 1)
            print("hello from the test")
            KEPT.append(bytearray(2 * 1024 * 1024))
        """
    if SUBTESTS:
        source += """
        def test_subtests_leak(subtests):
            for i in range(3):
                with subtests.test(i=i):
                    KEPT.append(bytearray(2 * 1024 * 1024))
        """
    pytester.makepyfile(test_noisy=source)
    junit = ("--junitxml=out.xml", "-o", "junit_family=xunit1", "-o", "junit_logging=system-out")
    result, tests = verdicts(pytester, "-q", *junit, "--memguard-leaks=warn")
    result.stdout.fnmatch_lines(
        ["*2 passed, 1 warning, 3 subtests passed*" if SUBTESTS else "*1 passed, 1 warning in*"]
    )
    assert tests["test_warns_and_leaks"]["verdict"] == "leak"
    if SUBTESTS:
        assert "leak" not in tests["test_subtests_leak"]  # it reports itself, so it is not re-run
    xml = (pytester.path / "out.xml").read_text()
    assert xml.count("<testcase ") == len(tests)
    assert xml.count('<property name="mine" value="1" />') == 1
    assert xml.count("hello from the test") == 1


def test_reruns_leave_no_finalizers_on_wider_fixtures(pytester: pytest.Pytester) -> None:
    """pytest adds a finalizer of each function-scoped fixture to the wider fixtures it requests,
    at every run, and keeps it until they are torn down: a clean suspect with a session-scoped
    fixture under an autouse one (or tmp_path) was confirmed as leaking ~800 B a run."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def settings():
            return {"env": "test"}

        @pytest.fixture(autouse=True)
        def per_test_settings(settings):
            yield dict(settings)
        """
    )
    pytester.makepyfile(
        test_chain="""
        def test_first_import(tmp_path):
            import plistlib
            (tmp_path / "a.plist").write_bytes(plistlib.dumps({"a": 1}))

        def test_after():
            pass
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert tests["test_first_import"]["verdict"] == "ok"
    assert tests["test_first_import"]["leak"]["runs"] >= 2  # it was a suspect, and re-run


def test_reruns_leave_no_finish_registrations_on_the_nodes_above_the_test(pytester: pytest.Pytester) -> None:
    """pytest 8.0 and 8.1 add ``partial(finish, request=…)`` of each wider fixture a test requests
    to that fixture's scope node, at every run: 9 of 9 clean suspects of an 11-test fixture
    suite were confirmed as leaking there. CI runs a newer pytest, so a conftest does the same."""
    pytester.makeconftest(
        """
        import functools, pytest

        class WiderFixtureDef:  # stands for pytest's FixtureDef of a session-scoped fixture
            def finish(self, request):
                pass

        SESSION_FIXTURE = WiderFixtureDef()

        @pytest.fixture(autouse=True)
        def registers_like_pytest_8_1(request):
            finish = functools.partial(SESSION_FIXTURE.finish, request=request)
            request.session._setupstate.addfinalizer(finish, request.session)
        """
    )
    pytester.makepyfile(
        test_nodes="""
        WARM = {}

        def test_first_call_cache():
            WARM.setdefault("cache", [object() for _ in range(400)])  # a suspect on its first run only

        def test_after():
            pass
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    assert tests["test_first_call_cache"]["verdict"] == "ok"
    assert tests["test_first_call_cache"]["leak"]["runs"] >= 2  # it was a suspect, and re-run


def test_a_leak_in_a_test_that_stops_tracemalloc_is_not_called_native(pytester: pytest.Pytester) -> None:
    """The re-runs watch the Python heap with tracemalloc; a test that stops it (or clears its
    traces) leaves that unwatched, and its leak was reported as native memory."""
    pytester.makepyfile(
        test_tm="""
        import os, tracemalloc
        KEPT = []

        def test_stops_tracing():
            KEPT.append(os.urandom(64 * 1024))
            tracemalloc.stop()

        def test_clears_traces():
            KEPT.append(os.urandom(64 * 1024))
            tracemalloc.clear_traces()

        def test_last():
            pass
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leaks=warn")
    result.assert_outcomes(passed=3)
    for name in ("test_stops_tracing", "test_clears_traces"):
        assert tests[name]["verdict"] == "leak"
        note = tests[name]["leak"]["note"]
        assert "stops tracemalloc or clears its traces" in note
        assert "native" not in note


@pytest.mark.with_hypothesis_plugin
def test_a_clean_hypothesis_suspect_is_cleared_by_one_rerun(pytester: pytest.Pytester) -> None:
    """hypothesis walks the stack at every @given call, which gives our own frames running the
    check frame objects they had not had at the warm-up sample (~9 blocks in the first step,
    over the quick look's bar of 8): each such test needed a second re-run (53 on attrs')."""
    pytest.importorskip("hypothesis")
    pytester.makepyfile(
        test_h="""
        from hypothesis import given, settings, strategies

        @settings(database=None, derandomize=True)
        @given(strategies.booleans())
        def test_draws(flag):
            import plistlib  # first call: a suspect
            assert plistlib.loads(plistlib.dumps({"a": flag})) == {"a": flag}

        def test_last():
            pass
        """
    )
    # checked even when a busy machine makes it slower than the slow-test rule's 50 ms
    result, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leak-slow=check")
    result.assert_outcomes(passed=2)
    assert tests["test_draws"]["verdict"] == "ok"
    assert tests["test_draws"]["leak"]["runs"] == 2  # the first run and one quick re-run


def test_a_hypothesis_test_meeting_new_bounds_each_run_is_no_leak(pytester: pytest.Pytester) -> None:
    """hypothesis keeps the constants each set of constraints permits in an LRU of 1,024; a test
    drawing between bounds no run met before adds entries at every run, steadily over a leak
    check's re-runs (python-dateutil's test_rrule_roundtrip[pickle-disabled]: st.datetimes'
    bounds change with each example; confirmed at ~600 B a run)."""
    pytest.importorskip("hypothesis")
    pytester.makepyfile(
        test_h="""
        import itertools
        from hypothesis import given, settings, strategies

        RUNS = itertools.count()

        @settings(database=None, derandomize=True, max_examples=50, deadline=None)
        @given(data=strategies.data())
        def draws(start, data):
            for k in range(20):
                data.draw(strategies.integers(start + k, start + 10**6))

        def test_new_bounds_each_run():
            import plistlib  # first call: a suspect
            draws(1000 * next(RUNS))

        def test_last():
            pass
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leak-slow=check", "--memguard-leaks=warn")
    result.assert_outcomes(passed=2)
    assert tests["test_new_bounds_each_run"]["leak"]["runs"] >= 2  # it was a suspect, and re-run
    assert tests["test_new_bounds_each_run"]["verdict"] == "ok"


def test_xdist_workers_confirm_leaks_too(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_leaky=LEAKY)
    result, tests = verdicts(pytester, "-n", "2")
    result.assert_outcomes(passed=1, failed=1)
    assert tests["test_leaks"]["verdict"] == "leak"
    result.stdout.fnmatch_lines(["leak screening: 1 suspect(s) re-run to confirm, 1 confirmed*"])


def test_hooks_asked_for_the_first_time_make_no_suspect(pytester: pytest.Pytester) -> None:
    """pytest 8's ``config.hook`` keeps each hook in its ``__dict__`` the first time it is asked
    for; in each xdist worker's first test the dict grew by 1.5 KiB of C heap in the call phase,
    and the clean test was a suspect. CI runs a newer pytest, so a conftest does the same."""
    pytester.makeconftest(
        """
        import pytest

        class KeepsOnFirstAsk:  # stands for pytest 8's PathAwareHookProxy
            def __init__(self, relay):
                self._relay, self._grown = relay, []

            def __getattr__(self, name):
                hook = getattr(self._relay, name)
                self.__dict__[name] = hook
                self._grown.append(bytearray(2048))  # its dict's growth, as C heap
                return hook

        @pytest.hookimpl(trylast=True)
        def pytest_configure(config):
            config.hook = KeepsOnFirstAsk(config.hook)
        """
    )
    pytester.makepyfile(
        test_first="""
        def test_clean():
            block = bytearray(2 * 1024 * 1024)
            del block
        """
    )
    result, tests = verdicts(pytester)
    result.assert_outcomes(passed=1)
    assert tests["test_clean"]["verdict"] == "ok"
    assert "leak" not in tests["test_clean"]  # not a suspect, so not re-run


SLOW_SMALL = """
import time
RUNS, CACHE = [], {}

def test_slow_first_call_cache():
    RUNS.append(1)
    time.sleep(0.2)
    CACHE.setdefault("table", bytes(8 * 1024))  # a little memory, kept once

def test_ran():
    assert {ran}
"""


@pytest.mark.parametrize(
    ("args", "expected"),
    [((), 1), (("--memguard-leak-slow=check",), 2), (("-o", "memguard_leak_slow=check"), 2)],
)
def test_a_slow_test_that_kept_a_little_is_not_rerun_unless_asked(
    pytester: pytest.Pytester, args: tuple[str, ...], expected: int
) -> None:
    # checked: re-run at least once (a busy machine can move a clean re-run's C heap enough
    # for a second quick one); spared: never
    ran = "len(RUNS) == 1" if expected == 1 else f"len(RUNS) >= {expected}"
    pytester.makepyfile(test_slow=SLOW_SMALL.replace("{ran}", ran))
    result, tests = verdicts(pytester, "-p", "no:randomly", *args)
    result.assert_outcomes(passed=2)
    leak = tests["test_slow_first_call_cache"]["leak"]
    assert isinstance(leak, dict)
    assert leak["confirmed"] is False
    if expected == 1:
        result.stdout.fnmatch_lines(
            ["not checked for leaks: test_slow.py::test_slow_first_call_cache: a slow test (0.2* s)*leak-slow=check*"]
        )
        result.stdout.no_fnmatch_line("*re-run to confirm*")


def test_a_slow_test_that_keeps_a_lot_is_still_checked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_slow="""
        import time
        KEPT = []

        def test_slow_leak():
            time.sleep(0.1)
            KEPT.append(bytearray(2 * 1024 * 1024))
        """
    )
    _, tests = verdicts(pytester, "--memguard-leaks=warn")
    assert tests["test_slow_leak"]["verdict"] == "leak"


CARRY = """
class Link:
    __slots__ = ("next",)

    def __init__(self, next):
        self.next = next

CHAIN = None

def test_before():
    pass

def test_leaks_blocks_only():
    global CHAIN
    for _ in range(3000):  # 3,000 objects a run, no container that grows: only blocks see it
        CHAIN = Link(CHAIN)
"""


def test_a_collection_between_tests_makes_the_next_test_read_its_own_start(pytester: pytest.Pytester) -> None:
    # Garbage made before the first test starts and freed by a collection after it ends is in
    # the block count read after that test, not in a count read before the next one: started
    # from the carried count, the next test would read as having freed more than it kept, and
    # its leak would pass unseen.
    pytester.makeconftest(
        """
        import gc

        class Cycle:
            def __init__(self):
                self.me = self

        def pytest_runtest_logstart(nodeid, location):
            if nodeid.endswith("test_before"):
                garbage = [Cycle() for _ in range(5000)]
                gc.collect()  # now in the oldest generation: only a full collection frees it
                del garbage

        def pytest_runtest_logfinish(nodeid, location):
            if nodeid.endswith("test_before"):
                gc.collect()
        """
    )
    pytester.makepyfile(test_carry=CARRY)
    _, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leaks=warn")
    assert tests["test_before"]["verdict"] == "ok"
    assert "leak" not in tests["test_before"]  # not a suspect: no re-run came between
    assert tests["test_leaks_blocks_only"]["verdict"] == "leak"


SLOW_LEAKY = """
import time

KEPT = []

def test_slow_leak():
    time.sleep(0.08)
    KEPT.append(bytearray(2 * 1024 * 1024))
"""


@pytest.mark.parametrize("slow", ["skip", "check"])
def test_a_slow_leaking_test_is_analysed_only_when_asked(pytester: pytest.Pytester, slow: str) -> None:
    pytester.makepyfile(test_slow_leaky=SLOW_LEAKY)
    result, tests = verdicts(pytester, f"--memguard-leak-slow={slow}")
    entry = tests["test_slow_leak"]
    assert entry["verdict"] == "leak"
    skipped = "no allocation analysis of this slow test" in str(entry["message"])
    assert skipped == (slow == "skip")
    shown = "*test_slow_leak: leaks * over * runs; no allocation analysis of this slow test (*"
    if slow == "skip":  # in the summary's Leaks section too, not only in the record
        result.stdout.fnmatch_lines(["Leaks (confirmed by re-running the test):", shown])
    assert ("analysis" in entry) == (slow == "check")


@needs_c_heap
def test_a_pattern_compiled_first_is_no_suspect_and_one_kept_per_run_still_leaks(pytester: pytest.Pytester) -> None:
    # pytest.raises(match=...) compiles its pattern once into re's cache (1-2.5 KiB of C heap, over
    # the 1 KiB bar): taken back out of the cache before judging, it makes no suspect, and no
    # re-run. A test that keeps a new compiled pattern per run still leaks: its list holds them.
    pytester.makepyfile(
        test_patterns="""
        import itertools, re
        import pytest

        KEPT, COUNTER = [], itertools.count()

        def fail():
            raise ValueError("expected exactly one item in the iterable, but got 0, 1 and perhaps more")

        def test_warms_up_pytest_raises():  # pytest's own first-use costs (pytest 8.1: a suspect)
            with pytest.raises(ValueError, match="expected"):
                fail()

        def test_raises_with_a_new_pattern():
            with pytest.raises(ValueError, match=r"expected exactly one item in the iterable, but got \\d+, \\d+"):
                fail()

        def test_keeps_a_new_pattern_per_run():
            # ~12 KiB of compiled code per pattern, over every bar, kept by the list
            KEPT.append(re.compile("memguard-kept-%d-" % next(COUNTER) + "(?:ab|cd)[e-z]{2,9}" * 150))
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leaks=warn")
    result.assert_outcomes(passed=3)
    assert tests["test_raises_with_a_new_pattern"]["verdict"] == "ok"
    assert "leak" not in tests["test_raises_with_a_new_pattern"]  # not even a suspect
    assert tests["test_keeps_a_new_pattern_per_run"]["verdict"] == "leak"


def test_leaks_at_a_site_analysed_already_are_not_analysed_again(pytester: pytest.Pytester) -> None:
    # A suite whose tests all leak through one holder (click's stream cache: 217 tests) paid an
    # allocation analysis (one more traced run) for each, to name the same site again.
    pytester.makepyfile(
        test_shared="""
        import pytest

        HELD = []

        def keep():
            HELD.append(bytearray(64 * 1024))

        @pytest.mark.parametrize("n", range(3))
        def test_through_one_holder(n):
            keep()

        def test_elsewhere():
            HELD.append(bytes(96 * 1024))
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly", "--memguard-leaks=warn")
    result.assert_outcomes(passed=4)
    first, *later = (tests[f"test_through_one_holder[{n}]"] for n in range(3))
    assert all(entry["verdict"] == "leak" for entry in (first, *later, tests["test_elsewhere"]))
    assert "analysis" in first
    assert "analysis" in tests["test_elsewhere"]  # another site: analysed
    for entry in later:
        assert "analysis" not in entry
        leak = entry["leak"]
        assert isinstance(leak, dict)
        assert (
            "no allocation analysis: it leaks at the site analysed for test_shared.py::test_through_one_holder[0]"
            in leak["note"]
        )
    result.stdout.fnmatch_lines(
        ["*test_through_one_holder[[]1[]]: leaks *; no allocation analysis: it leaks at the site*"]
    )


def test_a_bounded_buffer_of_objects_in_cycles_is_no_leak(pytester: pytest.Pytester) -> None:
    # Each run pushes the oldest entry out of a full buffer: garbage only the collector frees.
    # The re-runs' samples collect with everything older frozen (cheap), where such an entry,
    # orphaned, stays and reads as growth at every step; a leak found so is read again after a
    # full collection, which takes that growth back, and the re-runs start over unfrozen.
    pytester.makepyfile(
        test_buffer="""
        import collections

        class Entry:
            def __init__(self):
                self.me = self  # a cycle: only the collector frees it
                self.payload = bytearray(16 * 1024)

        RECENT = collections.deque([Entry() for _ in range(60)], maxlen=60)

        def test_pushes_the_oldest_out():
            RECENT.append(Entry())
        """
    )
    result, tests = verdicts(pytester, "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    assert tests["test_pushes_the_oldest_out"]["verdict"] == "ok"


def test_a_node_keeps_the_finish_registrations_of_fixtures_a_rerun_set_up_anew() -> None:
    import functools

    from pytest_memguard.leak_check import _drop_finish_registrations

    class Fixture:  # stands for pytest's FixtureDef
        def __init__(self) -> None:
            self.cached_result: object = ("value", None, None)

        def finish(self, request: object) -> None:
            pass

    cached, other, renewed = Fixture(), Fixture(), Fixture()
    before = [functools.partial(cached.finish, request=1), functools.partial(renewed.finish, request=1)]
    held = {id(cached): cached.cached_result, id(renewed): renewed.cached_result}
    node = [*before, print]
    renewed.cached_result = ("new value", None, None)  # the re-run set it up anew
    added = [
        functools.partial(cached.finish, request=2),  # pytest 8.0/8.1 at every request: dropped
        functools.partial(renewed.finish, request=2),  # must finish it when the node goes
        functools.partial(other.finish, request=2),  # not registered there before
        len,  # anything else stays
    ]
    node += added
    _drop_finish_registrations(node, len(before) + 1, held)
    assert node == [*before, print, *added[1:]]
