"""The allocation analyzer, on known allocation patterns in this process (restoring tracemalloc's state)."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import re
import sys
import tracemalloc
from pathlib import Path
from typing import Any, Iterator

import pluggy
import pytest

import pytest_memguard
from pytest_memguard import allocation_analyzer
from pytest_memguard.allocation_analyzer import (
    OTHER,
    STDLIB,
    UNKNOWN,
    AllocationAnalysis,
    analyze,
    analyze_snapshots,
    component_of,
    efficiency_score,
    exclude_filters,
    memory_analysis,
)

KIB = 1024
MIB = 1024**2
HERE = os.path.basename(__file__)
# How sites name this file: relative to the longest sys.path entry holding it (tests/ under pytest's prepend mode).
SHORT = HERE if component_of(__file__) == "test_allocation_analyzer" else os.path.join("tests", HERE)


@pytest.fixture(autouse=True)
def tracemalloc_restored() -> Iterator[None]:
    """Every test must leave tracemalloc as it found it: tracing or not, same traceback limit."""
    found = (tracemalloc.is_tracing(), tracemalloc.get_traceback_limit())
    yield
    left = (tracemalloc.is_tracing(), tracemalloc.get_traceback_limit())
    if left[0] and not found[0]:
        tracemalloc.stop()  # do not let one broken test spoil the rest
    assert left == found, f"tracemalloc was (tracing, limit) {found}, the test left {left}"


@contextlib.contextmanager
def tracing(limit: int) -> Iterator[None]:
    """Trace with at least ``limit`` frames for the block, then put tracemalloc back as it was."""
    if tracemalloc.is_tracing():
        if tracemalloc.get_traceback_limit() < limit:
            pytest.skip(f"tracemalloc already runs with fewer than {limit} frames")
        yield
        return
    previous = tracemalloc.get_traceback_limit()
    tracemalloc.start(limit)
    try:
        yield
    finally:
        tracemalloc.stop()
        if previous != limit:
            tracemalloc.start(previous)
            tracemalloc.stop()


@pytest.fixture
def tracing_off() -> None:
    if tracemalloc.is_tracing():
        pytest.skip("needs a process without tracemalloc running")


def keep_small_blocks(n: int, size: int) -> list[bytes]:
    return [bytes(size) for _ in range(n)]  # SMALL_LINE: n distinct objects of 33 + size bytes


SMALL_LINE = keep_small_blocks.__code__.co_firstlineno + 1


def keep_huge_block() -> bytearray:
    return bytearray(50 * MIB)  # HUGE_LINE


HUGE_LINE = keep_huge_block.__code__.co_firstlineno + 1


def inner() -> list[bytes]:
    blocks = []
    for _ in range(100):
        blocks.append(bytes(2000))  # INNER_LINE (a loop: a comprehension is a frame of its own before 3.12)
    return blocks


def outer() -> list[bytes]:
    return inner()  # OUTER_LINE


INNER_LINE = inner.__code__.co_firstlineno + 3
OUTER_LINE = outer.__code__.co_firstlineno + 1


def all_sites(analysis: AllocationAnalysis) -> list[str]:
    return [site.where for site in analysis.top_by_size + analysis.top_by_count]


def test_ten_thousand_small_objects_show_their_line_count_and_class() -> None:
    with memory_analysis() as measured:
        kept = keep_small_blocks(10_000, 100)
    result = measured.result
    assert result is not None
    site = next(s for s in result.top_by_count if s.lineno == SMALL_LINE)
    assert (site.where, site.filename) == (f"{SHORT}:{SMALL_LINE}", __file__)
    assert site.count >= 10_000
    assert site.size >= 10_000 * 133
    small = {c.name: c for c in result.size_classes}["small"]
    assert small.count >= 10_000
    assert small.size >= 10_000 * 133
    assert result.top_by_count[0] == site
    assert result.exact_sizes
    assert any("small blocks" in text and site.where in text for text in result.recommendations)
    assert len(kept) == 10_000


def test_a_huge_block_is_named_with_its_site() -> None:
    with memory_analysis() as measured:
        kept = keep_huge_block()
    result = measured.result
    assert result is not None
    huge = {c.name: c for c in result.size_classes}["huge"]
    assert huge.count == 1
    assert huge.size >= 50 * MIB
    assert result.top_by_size[0].where == f"{SHORT}:{HUGE_LINE}"
    assert f"one 50.0 MiB allocation at {SHORT}:{HUGE_LINE}" in result.recommendations
    assert result.peak_bytes is not None
    assert result.peak_bytes >= 50 * MIB
    assert len(kept) == 50 * MIB


def test_pytest_pluggy_and_memguard_frames_never_appear() -> None:
    excluded = {
        "pytest": os.path.dirname(pytest.__file__),
        "_pytest": os.path.dirname(sys.modules["_pytest"].__file__ or "?"),
        "pluggy": os.path.dirname(pluggy.__file__),
        "pytest_memguard": os.path.dirname(pytest_memguard.__file__),
        "tracemalloc": tracemalloc.__file__,
    }
    with tracing(10):
        before = tracemalloc.take_snapshot()
        # Strings (tracemalloc finds where a non-GC object was allocated; 3.11 misses GC objects).
        from_pytest = [repr(pytest.approx([float(i)] * 20)) for i in range(200)]  # allocated in _pytest
        manager = pluggy.PluginManager("demo")
        from_pluggy = [manager.get_canonical_name(object()) for _ in range(200)]  # str(id(...)) in pluggy
        kept = keep_small_blocks(1000, 10)
        after = tracemalloc.take_snapshot()
        result = analyze_snapshots(before, after, top=1000, stack_depth=10)
        origins = {
            name: tracemalloc.get_object_traceback(obj)
            for name, obj in [("_pytest", from_pytest[0]), ("pluggy", from_pluggy[0])]
        }
    for name, origin in origins.items():  # the pattern did allocate inside pytest and pluggy
        assert origin is not None
        assert origin[-1].filename.startswith(excluded[name]), origin
    frames = [part for where in all_sites(result) for part in where.split(" <- ")]
    assert frames, "nothing left after exclusion"
    for word in ("_pytest", "pluggy", "pytest_memguard", "tracemalloc.py", "python.py", "runner.py"):
        assert not any(word in frame for frame in frames)
    sites = result.top_by_size + result.top_by_count
    assert not any(site.filename.startswith(tuple(excluded.values())) for site in sites)
    assert {group.name for group in result.by_component}.isdisjoint({"pytest", "_pytest", "pluggy"})
    assert any(site.lineno == SMALL_LINE for site in result.top_by_size)
    assert len(kept) + len(from_pytest) + len(from_pluggy) == 1400


Pair = collections.namedtuple("Pair", ["left", "right"])  # its __new__ is generated code: "<string>"


def test_frozen_modules_and_generated_methods_allocate_for_their_caller(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``os`` is a frozen module (``<frozen os>``) from Python 3.11 on, and namedtuple's methods
    are generated (``<string>``): like the rest of the standard library, what they allocate for
    pytest (monkeypatch.setenv, capsys' CaptureResult) is not a site, and for the test it is."""
    names = [f"MEMGUARD_OWN_{i}" for i in range(300)]
    with tracing(10):
        before = tracemalloc.take_snapshot()
        _, for_pytest = [monkeypatch.setenv(f"MEMGUARD_{i}", "x" * 64) for i in range(300)], sys._getframe().f_lineno
        results, from_pytest = [capsys.readouterr() for _ in range(300)], sys._getframe().f_lineno
        _, set_here = [os.environ.update({name: "y" * 64}) for name in names], sys._getframe().f_lineno
        pairs, made_here = [Pair(i, -i) for i in range(300)], sys._getframe().f_lineno
        after = tracemalloc.take_snapshot()
    for name in names:
        del os.environ[name]
    result = analyze_snapshots(before, after, top=1000, stack_depth=10)
    # sites headed by os or a namedtuple's __new__, and the lines of this test they reach
    borrowed = [where.split(" <- ") for where in all_sites(result) if not where.startswith(f"{SHORT}:")]
    called_from = {
        line
        for line in (for_pytest, from_pytest, set_here, made_here)
        for frames in borrowed
        if f"{SHORT}:{line}" in frames
    }
    assert called_from == {set_here, made_here}
    assert len(results) == len(pairs) == 300


# tracemalloc's own filter_traces/compare_to cost minutes on a process-wide trace table: these need a fresh one.
def test_exclusion_is_the_same_as_tracemalloc_filters_on_both_snapshots(tracing_off: None) -> None:
    with tracing(3):
        before = tracemalloc.take_snapshot()
        kept = [pytest.approx([1.0] * 20) for _ in range(100)], keep_small_blocks(500, 50)
        after = tracemalloc.take_snapshot()
    filters = exclude_filters()
    plain = analyze_snapshots(before, after, top=1000, stack_depth=3)
    filtered = analyze_snapshots(before.filter_traces(filters), after.filter_traces(filters), top=1000, stack_depth=3)
    assert plain.top_by_size == filtered.top_by_size
    assert plain.retained_bytes == filtered.retained_bytes
    assert plain.top_by_size, "the diff was empty"
    assert len(kept[1]) == 500


def test_public_compare_to_fallback_agrees_with_the_fast_path(
    tracing_off: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tracing(1):
        before = tracemalloc.take_snapshot()
        kept = keep_small_blocks(2000, 100), keep_huge_block()
        after = tracemalloc.take_snapshot()
    fast = analyze_snapshots(before, after, top=1000)
    monkeypatch.setattr(allocation_analyzer, "_raw_traces", lambda snapshot: None)
    slow = analyze_snapshots(before, after, top=1000)
    assert fast.exact_sizes
    assert not slow.exact_sizes
    assert fast.top_by_size == slow.top_by_size
    assert fast.traced_bytes == slow.traced_bytes
    assert {c.name: c.count for c in slow.size_classes}["huge"] >= 1
    assert len(kept[0]) == 2000


def test_components_stdlib_versus_this_test_file() -> None:
    with memory_analysis(top=50) as measured:
        decoded = json.loads("[" + ",".join(f'"value {i}"' for i in range(5000)) + "]")
        kept = keep_small_blocks(3000, 200)
    result = measured.result
    assert result is not None
    ours = component_of(__file__)
    assert ours not in (STDLIB, UNKNOWN, "tests/test_allocation_analyzer.py")
    assert ours in ("test_allocation_analyzer", "tests")  # tests/ on sys.path (pytest's prepend) or the checkout
    by_component = {group.name: group for group in result.by_component}
    assert by_component[ours].size >= 3000 * 233
    assert by_component[STDLIB].count >= 4900  # 5,000 strings, less stdlib blocks freed meanwhile
    stdlib_site = next(site for site in result.top_by_count if site.where.startswith("json"))
    assert stdlib_site.component == STDLIB
    assert len(decoded) == 5000
    assert len(kept) == 3000


def test_component_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = str(tmp_path)
    venv_lib = os.path.join(root, "venv", "lib", "python3.11")
    site = os.path.join(venv_lib, "site-packages")
    stdlib = os.path.join(root, "usr", "lib", "python3.11")
    src = os.path.join(root, "proj", "src")
    path = [os.path.join(root, "proj"), src, site, stdlib, os.path.join(stdlib, "lib-dynload")]
    dirs = [stdlib, venv_lib]  # in a venv, platstdlib contains site-packages

    def component(*parts: str) -> str:
        return component_of(os.path.join(*parts), search_path=path, stdlib_dirs=dirs)

    assert component(site, "numpy", "core", "numeric.py") == "numpy"
    assert component(site, "six.py") == "six"
    assert component(stdlib, "json", "decoder.py") == STDLIB
    assert component(stdlib, "lib-dynload", "_json.cpython-311-x86_64-linux-gnu.so") == STDLIB
    assert component(src, "myproject", "io.py") == "myproject"  # the longest sys.path entry wins over proj/
    assert component(root, "proj", "tools", "gen.py") == "tools"
    assert component_of("<frozen importlib._bootstrap>") == UNKNOWN
    assert component_of("<string>") == UNKNOWN
    monkeypatch.chdir(root)
    assert component_of(os.path.join(root, "scripts", "run.py"), search_path=[], stdlib_dirs=dirs) == "scripts"
    assert component_of(os.path.join(root, "x", "site-packages", "attr", "a.py"), search_path=[]) == "attr"


def test_efficiency_extremes_and_monotony() -> None:
    assert efficiency_score(0, 100 * MIB, 1.0) == 1.0
    assert efficiency_score(0, 0) == 1.0
    assert efficiency_score(100 * MIB, 100 * MIB) == 0.0
    assert efficiency_score(100 * MIB, None) == 0.0  # no peak known: everything seen was kept
    assert efficiency_score(-5 * MIB, 10 * MIB) == 1.0
    assert efficiency_score(0, MIB, 1000.0) == pytest.approx(0.75, abs=0.001)
    by_retained = [efficiency_score(kept, 100, 3.0) for kept in range(0, 101, 10)]
    assert by_retained == sorted(by_retained, reverse=True)
    assert len(set(by_retained)) == 11
    by_ratio = [efficiency_score(10, 100, ratio) for ratio in (1.0, 2.0, 4.0, 8.0, 100.0)]
    assert by_ratio == sorted(by_ratio, reverse=True)
    assert by_ratio[0] == by_ratio[1] == 0.9
    assert all(0.0 <= score <= 1.0 for score in by_retained + by_ratio)


def test_efficiency_of_real_runs(tracing_off: None) -> None:
    with memory_analysis() as freed:
        assert len(keep_small_blocks(20_000, 1000)) == 20_000  # all freed again
    with memory_analysis() as kept:
        blocks = keep_small_blocks(20_000, 1000)
    assert freed.result is not None
    assert kept.result is not None
    assert freed.result.efficiency >= 0.99
    assert freed.result.fragmentation is None
    assert kept.result.efficiency <= 0.05
    assert any("temporary objects" in text for text in freed.result.recommendations)
    assert len(blocks) == 20_000


def test_stack_depth_three_gives_multi_frame_sites() -> None:
    with tracing(3):
        with memory_analysis(stack_depth=3) as measured:
            kept, call_line = outer(), sys._getframe().f_lineno
        with memory_analysis(stack_depth=1) as flat:
            kept += outer()
    assert measured.result is not None
    assert flat.result is not None
    expected = f"{SHORT}:{INNER_LINE} <- {SHORT}:{OUTER_LINE} <- {SHORT}:{call_line}"
    assert any(site.where == expected and site.count >= 100 for site in measured.result.top_by_size)
    assert measured.result.stack_depth == 3
    assert f"{SHORT}:{INNER_LINE}" in all_sites(flat.result)
    assert not any(" <- " in where for where in all_sites(flat.result))
    assert len(kept) == 200


def test_repeated_frames_of_a_comprehension_are_merged() -> None:
    with tracing(3), memory_analysis(stack_depth=3) as measured:
        kept, call_line = keep_small_blocks(500, 100), sys._getframe().f_lineno
    assert measured.result is not None
    # Before 3.12 the comprehension is a frame of its own on SMALL_LINE: it must not read "x:7 <- x:7".
    # After this test's frame come pytest's (left out), then at most the console script under deep tracing.
    wanted = f"{SHORT}:{SMALL_LINE} <- {SHORT}:{call_line}"
    assert any(where == wanted or where.startswith(f"{wanted} <- ") for where in all_sites(measured.result))
    assert not any(where.count(f"{SHORT}:{SMALL_LINE}") > 1 for where in all_sites(measured.result))
    assert len(kept) == 500


def test_freed_blocks_count_against_their_site() -> None:
    with tracing(1):
        doomed = keep_small_blocks(5000, 100)
        before = tracemalloc.take_snapshot()
        doomed.clear()
        kept = keep_huge_block()
        after = tracemalloc.take_snapshot()
    result = analyze_snapshots(before, after, top=1000)
    assert result.freed_blocks >= 5000
    assert result.freed_bytes >= 5000 * 133
    assert result.allocated_bytes >= 50 * MIB
    assert result.retained_bytes == result.allocated_bytes - result.freed_bytes
    assert result.retained_blocks == result.allocated_blocks - result.freed_blocks
    assert not any(site.lineno == SMALL_LINE for site in result.top_by_size)  # shrank: not a top site by size
    assert {c.name: c.count for c in result.size_classes}["small"] < 100  # classes count gained blocks only
    assert len(kept) == 50 * MIB


def test_operations_label_sites_else_per_file() -> None:
    with tracing(2):
        before = tracemalloc.take_snapshot()
        kept = keep_small_blocks(1000, 100), json.loads("[" + ",".join(["1.5"] * 2000) + "]")
        after = tracemalloc.take_snapshot()
    labelled = analyze_snapshots(before, after, stack_depth=2, operations={__file__: "test body"})
    totals = {group.name: group for group in labelled.by_operation}
    assert totals["test body"].count >= 950  # 1,000 blocks, less earlier ones freed meanwhile (process-wide tracing)
    assert OTHER not in totals or totals[OTHER].size < totals["test body"].size
    precise = analyze_snapshots(before, after, operations={f"{SHORT}:{SMALL_LINE}": "small blocks"})
    assert {group.name for group in precise.by_operation} >= {"small blocks"}
    per_file = analyze_snapshots(before, after)
    assert any(group.name.endswith(HERE) and group.count >= 1000 for group in per_file.by_operation)
    assert len(kept[0]) == 1000


LIBRARY = """
def build(n, size):
    return [bytes(size) for _ in range(n)]  # line 3: the only allocating line
"""
CALLERS = """
def test_uses_library(build):
    return build(2000, 100)  # line 3


def big(build):
    return build(6000, 100)  # line 7
"""


def functions_in(source: str, filename: str, namespace: dict[str, Any]) -> None:
    """Define ``source``'s functions as if they lived in ``filename`` (tracemalloc records that name)."""
    exec(compile(source, filename, "exec"), namespace)


def test_operations_count_a_library_allocation_for_its_caller(tracing_off: None) -> None:
    library: dict[str, Any] = {}
    callers: dict[str, Any] = {}
    functions_in(LIBRARY, "lib/library.py", library)
    functions_in(CALLERS, "tests/test_caller.py", callers)
    # As the plugin builds it: file:line of every line of the test function and of the fixture.
    operations = {f"tests/test_caller.py:{line}": "test_uses_library" for line in (2, 3)}
    operations.update({f"tests/test_caller.py:{line}": "fixture big" for line in (6, 7)})
    with memory_analysis(stack_depth=1, operations=operations) as measured:
        limit = tracemalloc.get_traceback_limit()
        kept = callers["test_uses_library"](library["build"]), callers["big"](library["build"])
        kept += (keep_small_blocks(500, 100),)  # in this file: no label
    result = measured.result
    assert result is not None
    assert limit == 16  # traced deep enough to reach the caller from inside the library
    assert not tracemalloc.is_tracing()  # and its limit restored (the autouse fixture checks)
    # Sites keep stack_depth=1 frames: one site for both callers, inside the library.
    assert result.stack_depth == 1
    site = result.top_by_size[0]
    assert (site.where, site.count >= 8000) == ("lib/library.py:3", True)
    # Totals per change, not per site: the one site is split between its two callers.
    totals = {group.name: group for group in result.by_operation}
    assert [group.name for group in result.by_operation][:2] == ["fixture big", "test_uses_library"]
    assert 6000 <= totals["fixture big"].count < 6100
    assert 2000 <= totals["test_uses_library"].count < 2100
    assert totals["fixture big"].size >= 6000 * 133
    assert totals[OTHER].count >= 500
    assert result.operations_labelled
    text = result.to_text()
    assert re.search(r"^by operation: fixture big \+[\d.]+ KiB, test_uses_library \+[\d.]+ KiB, <other> \+", text, re.M)
    assert len(kept) == 3


def test_operations_near_the_peak_name_who_held_memory_freed_by_the_end(tracing_off: None) -> None:
    library: dict[str, Any] = {}
    callers: dict[str, Any] = {}
    functions_in(LIBRARY, "lib/library.py", library)
    functions_in(CALLERS, "tests/test_caller.py", callers)
    operations = {"tests/test_caller.py:3": "test_uses_library", "tests/test_caller.py:7": "fixture big"}
    with memory_analysis(operations=operations, peak_sites=True) as measured:
        held = callers["big"](library["build"]), callers["test_uses_library"](library["build"])
        count = sum(map(len, held))
        del held  # nothing kept: only the peak knows who held it
    result = measured.result
    assert result is not None
    peak = {group.name: group.count for group in result.peak_by_operation}
    assert [group.name for group in result.peak_by_operation][:2] == ["fixture big", "test_uses_library"]
    assert (peak["fixture big"] >= 6000, peak["test_uses_library"] >= 2000) == (True, True)
    kept = {group.name: group.size for group in result.by_operation}  # a first call's caches at most
    assert (kept.get("fixture big", 0) < KIB, kept.get("test_uses_library", 0) < KIB) == (True, True)
    assert "by operation near the peak: fixture big +" in result.to_text()
    assert AllocationAnalysis.from_json(result.to_json()) == result
    # An analysis written before these fields existed still reads, without them.
    old = {k: v for k, v in result.as_dict().items() if k not in ("peak_by_operation", "operations_labelled")}
    assert AllocationAnalysis.from_dict(old) == dataclasses.replace(
        result, peak_by_operation=(), operations_labelled=False
    )
    assert count == 8000


def test_operations_see_only_the_frames_that_were_recorded() -> None:
    library: dict[str, Any] = {}
    callers: dict[str, Any] = {}
    functions_in(LIBRARY, "lib/library.py", library)
    functions_in(CALLERS, "tests/test_caller.py", callers)
    operations = {"tests/test_caller.py:3": "test_uses_library"}
    with tracing(1):  # tracing already on, one frame: the limit stays, so the caller is out of sight
        if tracemalloc.get_traceback_limit() != 1:
            pytest.skip("tracemalloc already runs with more than one frame")
        with memory_analysis(operations=operations) as measured:
            assert tracemalloc.get_traceback_limit() == 1
            kept = callers["test_uses_library"](library["build"])
    assert measured.result is not None
    assert measured.result.by_operation[0].name == OTHER
    assert "test_uses_library" not in {group.name for group in measured.result.by_operation}
    assert len(kept) == 2000


def test_without_operations_the_text_has_no_operation_line_and_tracing_keeps_stack_depth(tracing_off: None) -> None:
    with memory_analysis(stack_depth=2) as measured:
        limit = tracemalloc.get_traceback_limit()
        kept = keep_small_blocks(1000, 100)
    assert measured.result is not None
    assert limit == 2
    assert not measured.result.operations_labelled
    assert any(group.name.endswith(HERE) for group in measured.result.by_operation)  # per file, as before
    assert "by operation" not in measured.result.to_text()
    assert len(kept) == 1000


def test_context_manager_and_analyze_restore_a_running_tracemalloc() -> None:
    with tracing(7):
        limit = tracemalloc.get_traceback_limit()
        witness = bytes(1000)
        with memory_analysis(stack_depth=2) as measured:
            keep_small_blocks(10, 10)
        value, result = analyze(keep_small_blocks, 10, size=5)
        assert tracemalloc.is_tracing()
        assert tracemalloc.get_traceback_limit() == limit
        assert tracemalloc.get_object_traceback(witness) is not None, "tracing was restarted"
    assert measured.result is not None
    assert len(value) == 10
    assert result.rss_bytes is not None
    assert result.fragmentation is not None


def test_context_manager_and_analyze_leave_tracemalloc_off_with_its_limit(tracing_off: None) -> None:
    original = tracemalloc.get_traceback_limit()
    tracemalloc.start(5)  # the last start() sets the limit get_traceback_limit() reports once stopped
    tracemalloc.stop()
    try:
        with memory_analysis(stack_depth=2):
            assert tracemalloc.is_tracing()
            assert tracemalloc.get_traceback_limit() == 2
        assert (tracemalloc.is_tracing(), tracemalloc.get_traceback_limit()) == (False, 5)
        value, result = analyze(keep_small_blocks, 3, 10)
        assert (tracemalloc.is_tracing(), tracemalloc.get_traceback_limit()) == (False, 5)
        with pytest.raises(ZeroDivisionError), memory_analysis() as failed:
            _ = [bytes(10) for _ in range(100)], 1 / 0
        assert (tracemalloc.is_tracing(), tracemalloc.get_traceback_limit()) == (False, 5)
    finally:
        tracemalloc.start(original)
        tracemalloc.stop()
    assert len(value) == 3
    assert result.retained_blocks >= 3
    assert failed.result is not None


def test_result_renders_as_text_and_json_and_stays_compact() -> None:
    with memory_analysis(top=2) as measured:
        kept = [keep_small_blocks(200, n) for n in range(5)], keep_huge_block()
    result = measured.result
    assert result is not None
    assert len(result.top_by_size) == 2
    assert len(result.top_by_count) <= 2
    assert len(result.by_operation) <= 2
    text = result.to_text()
    assert text.startswith("allocation analysis: retained +50.")
    assert f"{SHORT}:{HUGE_LINE}" in text
    assert "huge 1 (50.0 MiB)" in text
    data = json.loads(json.dumps(result.as_dict()))
    assert data["top_by_size"][0]["where"] == f"{SHORT}:{HUGE_LINE}"
    assert data["top_by_size"][0]["size"] >= 50 * MIB  # the bytearray object and its buffer
    assert [c["name"] for c in data["size_classes"]] == ["tiny", "small", "medium", "large", "huge"]
    assert data["retained_bytes"] == result.retained_bytes
    assert data["recommendations"]
    assert len(kept[0]) == 5


def test_bad_arguments_are_refused() -> None:
    with tracing(1):
        snapshot = tracemalloc.take_snapshot()
    with pytest.raises(ValueError, match="stack_depth"):
        analyze_snapshots(snapshot, snapshot, stack_depth=0)
    with pytest.raises(ValueError, match="top"):
        analyze_snapshots(snapshot, snapshot, top=-1)
    assert analyze_snapshots(snapshot, snapshot).retained_bytes == 0


def test_compact_keeps_five_of_each_list_and_every_size_class() -> None:
    source = "\n".join(f"kept.append([bytes({n}) for _ in range({10 + n})])" for n in range(10, 20))
    kept: list[list[bytes]] = []
    with memory_analysis(top=50) as measured:
        exec(compile(source, "ten_sites.py", "exec"), {"kept": kept})
    result = measured.result
    assert result is not None
    assert len(result.top_by_size) >= 10
    short = result.compact(5)
    assert short.top_by_size == result.top_by_size[:5]
    assert short.top_by_count == result.top_by_count[:5]
    assert short.by_component == result.by_component[:5]
    assert short.by_operation == result.by_operation[:5]
    assert short.size_classes == result.size_classes
    assert (short.retained_bytes, short.recommendations) == (result.retained_bytes, result.recommendations)
    assert len(kept) == 10


def test_json_round_trip_is_exact() -> None:
    with memory_analysis(top=5, stack_depth=1) as measured:
        kept = keep_small_blocks(10_000, 100), keep_huge_block()
    result = measured.result
    assert result is not None
    text = result.to_json()
    assert "\n" not in text
    assert text.isascii()
    assert AllocationAnalysis.from_json(text) == result
    assert AllocationAnalysis.from_dict(result.as_dict()) == result
    weird = result.compact(1)
    site = weird.top_by_size[0]
    weird = dataclasses.replace(
        weird,
        top_by_size=(dataclasses.replace(site, where='a|b`<script>"é\ud800.py:1', filename="\x1b"),),
        fragmentation=None,
        peak_bytes=None,
    )
    assert AllocationAnalysis.from_json(weird.to_json()) == weird
    assert len(kept[0]) == 10_000


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.pop("retained_bytes"), "'retained_bytes' must be int, got None"),
        (lambda d: d.update(retained_bytes="12"), "'retained_bytes' must be int"),
        (lambda d: d.update(exact_sizes=1), "'exact_sizes' must be bool"),
        (lambda d: d.update(stack_depth=True), "'stack_depth' must be int"),
        (lambda d: d.update(top_by_size={"where": "x"}), "'top_by_size' must be list"),
        (lambda d: d.update(top_by_size=[1]), "'top_by_size' must be a list of objects"),
        (lambda d: d["top_by_count"][0].pop("lineno"), "'lineno' must be int"),
        (lambda d: d["size_classes"][0].update(name=None), "'name' must be str"),
        (lambda d: d.update(recommendations=[1]), "'recommendations' must be a list of strings"),
        (lambda d: d.update(efficiency="high"), "'efficiency' must be float"),
        (lambda d: d.update(operations_labelled="yes"), "'operations_labelled' must be bool"),
        (lambda d: d.update(peak_by_operation=[{"name": "x"}]), "'size' must be int"),
    ],
)
def test_a_corrupt_analysis_is_a_value_error_naming_the_field(edit, message: str) -> None:
    with memory_analysis() as measured:
        kept = keep_small_blocks(100, 10)
    assert measured.result is not None
    data = json.loads(measured.result.to_json())
    edit(data)
    with pytest.raises(ValueError, match=re.escape(message)):
        AllocationAnalysis.from_dict(data)
    assert len(kept) == 100


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "1" * 5000, "[" * 100_000, '{"a": 1}'])
def test_text_that_is_not_an_analysis_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"^allocation analysis: "):
        AllocationAnalysis.from_json(text)


def test_peak_sites_name_a_block_that_lived_only_for_a_moment() -> None:
    with memory_analysis(peak_sites=True) as measured:
        size = len(keep_huge_block())  # freed as soon as len() has it
    result = measured.result
    assert result is not None
    assert sys.getprofile() is None
    assert result.peak_sites[0].where == f"{SHORT}:{HUGE_LINE}"
    assert result.peak_sites[0].size >= 50 * MIB
    assert result.peak_snapshot_bytes is not None
    assert result.peak_snapshot_bytes >= 50 * MIB
    assert result.peak_bytes is not None
    assert result.peak_bytes >= result.peak_snapshot_bytes
    assert f"{SHORT}:{HUGE_LINE}" not in [site.where for site in result.top_by_size]  # nothing of it was kept
    lines = result.to_text().splitlines()
    assert lines[1] == "held near the peak (snapshot at 50.0 MiB):"
    assert lines[2].split() == ["peak", "site", "size", "blocks", "average"]
    assert lines[4].startswith(f"{SHORT}:{HUGE_LINE} ")
    assert AllocationAnalysis.from_json(result.to_json()) == result
    assert size == 50 * MIB


def test_peak_sites_of_many_small_blocks_and_an_honest_peak() -> None:
    with memory_analysis() as plain:
        assert len(keep_small_blocks(100_000, 100)) == 100_000
    with memory_analysis(peak_sites=True) as watched:
        assert len(keep_small_blocks(100_000, 100)) == 100_000
    assert plain.result is not None
    assert watched.result is not None
    assert plain.result.peak_sites == ()
    assert plain.result.peak_snapshot_bytes is None
    site = watched.result.peak_sites[0]
    assert (site.where, site.count >= 90_000) == (f"{SHORT}:{SMALL_LINE}", True)
    assert watched.result.peak_snapshot_bytes is not None
    # Within 10% of the peak: snapshots come at every 10% of growth, and the last one at the top.
    assert watched.result.peak_bytes is not None
    assert watched.result.peak_snapshot_bytes >= 0.9 * watched.result.peak_bytes
    # Our own snapshots do not count towards the peak.
    assert plain.result.peak_bytes is not None
    assert watched.result.peak_bytes <= 1.05 * plain.result.peak_bytes


def test_peak_sites_leave_a_running_profiler_alone() -> None:
    calls: list[str] = []

    def profiler(frame: object, event: str, arg: object) -> None:
        calls.append(event)

    sys.setprofile(profiler)
    try:
        with memory_analysis(peak_sites=True) as measured:
            size = len(keep_huge_block())
        assert sys.getprofile() is profiler
    finally:
        sys.setprofile(None)
    assert measured.result is not None
    assert measured.result.peak_sites == ()
    assert calls
    assert size == 50 * MIB
