"""The record's wire format and the tracker's readings (in this process, restoring what it changes)."""

from __future__ import annotations

import gc
import os
import sys
import tracemalloc
from typing import Callable, Optional

import pytest

from pytest_memguard import tracker as tracker_module
from pytest_memguard.allocation_analyzer import AllocationAnalysis, GroupTotal, SiteStat
from pytest_memguard.baseline import Finding
from pytest_memguard.glibc_heap import malloc_in_use_reader, tcache_bytes_reader, tcache_filler
from pytest_memguard.leak_detector import LeakReport
from pytest_memguard.record import MemoryRecord, Verdict
from pytest_memguard.tracker import Measurement, Start, Tracker

MIB = 1024**2


def test_record_round_trips_through_user_properties() -> None:
    record = MemoryRecord("t.py::test_a[1]", Measurement(5 * MIB, -3, 100, 7, 1), Verdict.OVER_LIMIT, "peak ...")
    props = record.to_properties()
    assert all(name.startswith("memguard_") for name, _ in props)
    assert all(isinstance(value, (int, str)) for _, value in props)
    assert MemoryRecord.from_properties(record.nodeid, props) == record
    assert record.plain  # what lets the session keep the record it built instead of rebuilding it


def test_the_record_lists_the_measurements_fields_in_their_order() -> None:
    from pytest_memguard.record import _FIGURES

    assert tuple(field for _, field in _FIGURES) == Measurement._fields  # to_properties zips them


def test_a_record_with_findings_a_leak_or_an_analysis_is_not_plain() -> None:
    base = MemoryRecord("t.py::test_a", Measurement(5 * MIB, 0, None, None, 0))
    finding = Finding("t.py::test_a", "rss_peak", MIB, 5 * MIB, MIB)
    leak = LeakReport(
        confirmed=True,
        runs=3,
        rss_per_run=MIB,
        heap_per_run=None,
        malloc_per_run=None,
        blocks_per_run=0.0,
        fds_per_run=0.0,
    )
    assert base.plain
    assert not base._replace(findings=(finding,)).plain
    assert not base._replace(leak=leak).plain
    assert not base._replace(analysis=analysis()).plain


def analysis(sites: int = 7) -> AllocationAnalysis:
    made = tuple(SiteStat(f"app/m{i}.py:{i}", f"/src/app/m{i}.py", i, "app", 1000 - i, i + 1) for i in range(sites))
    groups = tuple(GroupTotal(f"g{i}", 100 - i, i) for i in range(sites))
    return AllocationAnalysis(
        retained_bytes=5000,
        retained_blocks=20,
        allocated_bytes=6000,
        allocated_blocks=25,
        freed_bytes=1000,
        freed_blocks=5,
        traced_bytes=90000,
        peak_bytes=30 * MIB,
        rss_bytes=None,
        fragmentation=None,
        efficiency=0.99983,
        top_by_size=made,
        top_by_count=made[::-1],
        by_component=groups,
        by_operation=groups,
        size_classes=(GroupTotal("tiny", 10, 1), GroupTotal("huge", 30 * MIB, 1)),
        recommendations=("one 30.0 MiB allocation at app/m0.py:0",),
        stack_depth=2,
        exact_sizes=True,
        peak_sites=made,
        peak_snapshot_bytes=30 * MIB - 10,
    )


def test_the_analysis_rides_as_one_compact_json_property() -> None:
    full = analysis(sites=7)
    record = MemoryRecord(
        "t.py::test_a", Measurement(30 * MIB, 0, None, None, 0), Verdict.OVER_LIMIT, "peak ...", analysis=full
    )
    props = record.to_properties()
    assert [name for name, _ in props][-1] == "memguard_analysis"
    assert all(isinstance(value, (int, str)) for _, value in props)
    back = MemoryRecord.from_properties(record.nodeid, props)
    assert back is not None
    assert back.analysis is not None
    assert back.analysis == full.compact(5)  # five of each list travel; the JSON report has the same
    assert len(back.analysis.top_by_size) == len(back.analysis.peak_sites) == 5
    assert back._replace(analysis=None) == record._replace(analysis=None)
    # Strings, as pytest's junitxml or a results file gives them back, read the same.
    assert MemoryRecord.from_properties(record.nodeid, [(k, str(v)) for k, v in props]) == back


@pytest.mark.parametrize(
    "value",
    ['{"retained_bytes": "lots"}', "{", "", "null", "[]", '{"a": [' * 50_000, 42, None],
)
def test_a_corrupt_analysis_property_gives_a_record_without_analysis(value: object) -> None:
    record = MemoryRecord("t.py::test_a", Measurement(30 * MIB, 0, None, None, 0), Verdict.OVER_LIMIT, "peak ...")
    props = [*record.to_properties(), ("memguard_analysis", value)]
    assert MemoryRecord.from_properties(record.nodeid, props) == record


def test_record_leaves_out_unmeasured_figures() -> None:
    record = MemoryRecord("t", Measurement(1, 2, None, None, None))
    names = [name for name, _ in record.to_properties()]
    assert names == ["memguard_rss_peak", "memguard_rss_retained", "memguard_verdict"]
    assert MemoryRecord.from_properties("t", record.to_properties()) == record


def test_unmeasured_report_gives_no_record() -> None:
    assert MemoryRecord.from_properties("t", [("other", 1)]) is None


def test_record_is_small() -> None:
    record = MemoryRecord("t", Measurement(123456789, 98765, None, None, 0))
    own = sys.getsizeof(record) + sys.getsizeof(record.measurement)
    assert own < 300


@pytest.fixture
def tracker():
    was_tracing = tracemalloc.is_tracing()
    measuring = Tracker(trace=True)
    yield measuring
    measuring.close()
    assert tracemalloc.is_tracing() == was_tracing


def test_tracker_sees_a_short_spike_and_what_is_kept(tracker: Tracker) -> None:
    start = tracker.start()
    spike = bytearray(64 * MIB)
    del spike
    kept = bytearray(16 * MIB)
    measured = tracker.finish(start)
    assert measured.rss_peak >= 60 * MIB
    assert 15 * MIB <= measured.rss_retained <= 17 * MIB + measured.rss_peak
    assert measured.heap_peak is not None
    assert measured.heap_peak >= 64 * MIB
    assert measured.heap_retained is not None
    assert 16 * MIB <= measured.heap_retained < 17 * MIB
    del kept


def _kept_from_a_warm_tcache(read: Callable[[], Optional[int]]) -> int:
    """What ``read`` says one 990 B object took, when glibc's per-thread cache held freed
    chunks of that size (os.urandom mallocs; bytes(n) callocs, which skips that cache)."""
    warm = [os.urandom(990) for _ in range(7)]
    del warm  # seven freed chunks of that size now wait in glibc's per-thread cache
    before = read()
    kept = os.urandom(990)  # served from that cache: mallinfo2 alone does not move
    after = read()
    assert before is not None
    assert after is not None
    del kept
    return after - before


@pytest.mark.parametrize("fill", [False, True], ids=["tcache-counts", "tcache-fill"])
def test_a_settled_c_heap_reading_sees_a_chunk_glibcs_cache_served(tracker: Tracker, fill: bool) -> None:
    tracker.start(screen=False)
    if tracker.malloc_in_use() is None:
        pytest.skip("needs glibc 2.33+ (mallinfo2)")
    if fill:  # as where the cache's counts cannot be read
        tracker._malloc_settled, tracker._fill_tcache = None, tcache_filler()
    elif tracker._malloc_settled is None:
        pytest.skip("glibc's tcache counts are not readable here")
    assert 990 <= _kept_from_a_warm_tcache(tracker.malloc_settled) < 4096


def test_the_tcache_counts_show_a_chunk_the_cache_served_where_mallinfo2_alone_does_not() -> None:
    cached = tcache_bytes_reader()
    if malloc_in_use_reader() is None or cached is None:
        pytest.skip("needs glibc 2.33+ (mallinfo2) with readable tcache counts (2.30+, 64-bit)")
    counted, plain = malloc_in_use_reader(cached), malloc_in_use_reader()
    assert counted is not None
    assert plain is not None
    # the chunk of 1,008 B (and what little else C code malloc'd meanwhile: 32 B seen)
    assert 1008 <= _kept_from_a_warm_tcache(counted) < 1008 + 256
    assert _kept_from_a_warm_tcache(plain) < 256  # what the counts make up for


def test_the_tcache_reader_is_refused_where_its_checks_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_memguard import glibc_heap

    with monkeypatch.context() as patched:
        patched.setattr(glibc_heap, "_main_heap_start", lambda: None)  # no [heap]
        assert glibc_heap.tcache_bytes_reader() is None
    with monkeypatch.context() as patched:
        patched.setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0")  # no cache to read
        assert glibc_heap.tcache_bytes_reader() is None
    with monkeypatch.context() as patched:  # a first chunk that is not the cache
        patched.setattr(glibc_heap, "_TCACHE_SIZE_FIELD", 0x251)
        assert glibc_heap.tcache_bytes_reader() is None
    with monkeypatch.context() as patched:  # counts that do not move with mallocs of that size
        patched.setattr(glibc_heap, "_PROBE_BIN", glibc_heap._PROBE_BIN - 1)
        assert glibc_heap.tcache_bytes_reader() is None


@pytest.mark.parametrize(
    ("tunables", "count"),
    [("", 7), ("glibc.malloc.tcache_count=3", 3), ("glibc.malloc.tcache_count=0x10", 16),
     ("glibc.malloc.tcache_count=2:glibc.malloc.tcache_count=5", 5), ("glibc.malloc.tcache_count=x", 7)],
)  # fmt: skip
def test_the_tcache_count_is_read_as_glibc_reads_it(monkeypatch: pytest.MonkeyPatch, tunables: str, count: int) -> None:
    from pytest_memguard.glibc_heap import tcache_count

    monkeypatch.setenv("GLIBC_TUNABLES", tunables)
    assert tcache_count() == count


def _idle_sample_steps(fill: bool) -> list[int]:
    from pytest_memguard.leak_check import _Sampling

    measuring = Tracker()
    try:
        measuring.start(screen=False)
        measuring._malloc_settled, measuring._fill_tcache = None, tcache_filler() if fill else None
        sampling = _Sampling(None, None, measuring)  # type: ignore[arg-type]  # sample() runs nothing
        for _ in range(5):
            sampling.sample(0)
        return [b.blocks - a.blocks for a, b in zip(sampling.samples[1:], sampling.samples[2:])]
    finally:
        measuring.close()


def test_idle_samples_read_no_growth_and_hardly_any_shrinking() -> None:
    # A sample's own objects that went to the free lists were once taken for its own, and
    # the next collection freed them: each idle step read 5 blocks short.
    # (the median step: under xdist, execnet's thread allocates now and then in between)
    steps = sorted(_idle_sample_steps(fill=False))
    assert -2 <= steps[len(steps) // 2] <= 0, steps


def test_traced_idle_samples_read_no_memory_gone_with_the_first_snapshot() -> None:
    # The first snapshot copies tracemalloc's trace table; freed and not yet trimmed, that
    # copy made the first sample's RSS read tens of MB high, and the first step cleared a
    # suspect that leaked native memory.
    from pytest_memguard.leak_check import _Sampling
    from pytest_memguard.leak_detector import FLOORS

    was_tracing = tracemalloc.is_tracing()
    tracemalloc.start()
    traced = [str(index) for index in range(200_000)]  # a trace table worth copying
    measuring = Tracker()
    try:
        measuring.start(screen=False)
        sampling = _Sampling(None, None, measuring)  # type: ignore[arg-type]  # sample() runs nothing
        for _ in range(3):
            sampling.sample(0, snapshot_first=True)
        pairs = list(zip(sampling.samples, sampling.samples[1:]))
        assert all(abs(after.rss - before.rss) < FLOORS["rss"] for before, after in pairs)
        assert all(
            abs(after.malloc - before.malloc) < FLOORS["malloc"]
            for before, after in pairs
            if after.malloc is not None and before.malloc is not None
        )
    finally:
        measuring.close()
        del traced
        if not was_tracing:
            tracemalloc.stop()


def test_filling_glibcs_cache_adds_nothing_to_a_samples_block_count() -> None:
    # The fill leaves two blocks in the free lists; read after the block count they were
    # taken for the sample's own and went at the next collection: two blocks a step short.
    # Three tries: under xdist, execnet's thread allocates now and then while samples read.
    assert any(_idle_sample_steps(fill=True) == _idle_sample_steps(fill=False) for _ in range(3))


def test_a_start_can_take_a_carried_block_count_instead_of_reading_it(tracker: Tracker) -> None:
    fresh = tracker.start()
    assert fresh.blocks is not None
    carried = tracker.start(blocks=123)
    assert carried.blocks == 123
    assert (carried.malloc is None) == (fresh.malloc is None)  # the C heap is read as usual
    unscreened = tracker.start(screen=False, blocks=123)
    assert (unscreened.blocks, unscreened.malloc) == (None, None)


def test_a_carried_block_count_serves_only_its_test_with_no_run_or_collection_since() -> None:
    from pytest_memguard.session import _Carried, _Collections

    counter = _Collections()
    gc.callbacks.append(counter)
    try:
        carried = _Carried("t.py::test_next", counter.count, 5, 10)
        assert carried.blocks_for("t.py::test_next", 5, counter.count) == 10
        assert carried.blocks_for("t.py::test_other", 5, counter.count) is None
        assert carried.blocks_for("t.py::test_next", 6, counter.count) is None  # a hidden re-run came between
        gc.collect(0)  # any collection may have freed garbage the carried count still holds
        assert carried.blocks_for("t.py::test_next", 5, counter.count) is None
    finally:
        gc.callbacks.remove(counter)


def test_tracker_counts_file_descriptors(tracker: Tracker) -> None:
    start = tracker.start()
    read_end, write_end = os.pipe()
    measured = tracker.finish(start)
    os.close(read_end)
    os.close(write_end)
    if measured.fds_gained is None:
        pytest.skip("file descriptors are not counted on this platform")
    assert measured.fds_gained == 2


def test_tracker_starts_nothing_until_used() -> None:
    idle = Tracker(trace=True)
    was_tracing = tracemalloc.is_tracing()
    assert idle.notes == []
    idle.close()
    assert tracemalloc.is_tracing() == was_tracing


def test_sampling_fallback_still_finds_the_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on a platform where the high-water mark cannot be reset (macOS, some containers).
    monkeypatch.setattr(tracker_module._ProcFiles, "can_reset_peak", property(lambda self: False))
    measuring = Tracker()
    try:
        start = measuring.start()
        block = bytearray(48 * MIB)
        for offset in range(0, len(block), 4096):  # touch the pages for the sampler to see them
            block[offset] = 1
        import time

        time.sleep(0.05)
        del block
        measured = measuring.finish(start)
        assert measured.rss_peak >= 40 * MIB
        assert any("sampled" in note for note in measuring.notes)
    finally:
        measuring.close()


@pytest.mark.skipif(not tracker_module.high_water_mark_resettable(), reason="needs a resettable VmHWM")
def test_the_peak_falls_back_to_proc_when_getrusage_keeps_an_older_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    files = tracker_module._ProcFiles()
    try:
        rss = files.rss()
        files.reset_peak(rss)
        # getrusage reads counters summed lazily per CPU: ~0.2 MiB apart on 2 cores, more on many
        assert abs((files.peak() or 0) - (files.high_water_mark() or 0)) <= 16 * MIB
        # As after an exec from a bigger process: ru_maxrss stays above anything this process reaches.
        monkeypatch.setattr(files, "_maxrss", lambda: rss + 512 * MIB)
        files.reset_peak(rss)
        assert (files.peak() or 0) < rss + 512 * MIB  # read from /proc/self/status instead
    finally:
        files.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc only")
def test_both_linux_fd_counters_agree() -> None:
    files = tracker_module._ProcFiles()
    try:
        if not files.fd_count():
            pytest.skip("this kernel (before 6.2) does not give /proc/self/fd a size")
        by_listing = tracker_module._count_fds_linux()
        assert files.fd_count() == by_listing
        read_end, write_end = os.pipe()
        try:
            assert files.fd_count() == by_listing + 2
        finally:
            os.close(read_end)
            os.close(write_end)
    finally:
        files.close()


def _fake_clock(durations: list[int]) -> Callable[[], int]:
    """A clock read twice a reading (before it, after it) whose readings take ``durations`` ns."""
    steps = iter(durations)
    clock = {"now": 0, "reads": 0}

    def now() -> int:
        clock["reads"] += 1
        if clock["reads"] % 2 == 0:
            clock["now"] += next(steps)
        return clock["now"]

    return now


@pytest.mark.parametrize(
    ("slow", "on_cpu", "stops"),
    [(64, True, True), (33, True, True), (32, True, False), (16, True, False), (64, False, False)],
)
def test_c_heap_readings_stop_where_most_of_a_window_are_slow(
    monkeypatch: pytest.MonkeyPatch, slow: int, on_cpu: bool, stops: bool
) -> None:
    """``on_cpu``: the slow readings are slow by the thread's CPU time too, not only by the wall
    clock (a busy machine: they only waited for a CPU)."""
    tracker = Tracker()
    tracker.fill_cache()  # sets the tracker up
    monkeypatch.setattr(tracker_module, "_clock", _fake_clock([60_000] * slow + [5_000] * (200 - slow)))
    monkeypatch.setattr(tracker_module, "_cpu_clock", _fake_clock([60_000 if on_cpu else 5_000] * 200))
    monkeypatch.setattr(tracker, "_malloc", lambda: 1000)
    monkeypatch.setattr(tracker, "_malloc_settled", lambda: 900)
    filled: list[int] = []
    monkeypatch.setattr(tracker, "_fill_tcache", lambda: filled.append(1))
    try:
        assert [tracker.screening()[1] for _ in range(64)] == [1000] * 64  # timed after each test
        after = [tracker.malloc_in_use() for _ in range(100)]
        tracker.fill_cache()
        noted = any("too fragmented" in note for note in tracker.notes)
        if stops:
            assert after == [None] * 100
            assert tracker.malloc_settled() is None  # a leak check's samples do without it too
            assert not filled  # the fill only kept those readings true
            assert noted
        else:
            assert after == [1000] * 100
            assert filled == [1]
            assert not noted
    finally:
        tracker.close()


def test_a_run_that_freed_a_mib_of_c_heap_hands_the_pages_back() -> None:
    """Freed by one test (a failure's traceback let go, a cache emptied), glibc keeps them, and
    the next tests reuse them: their peaks read 0, and their full size once those are gone."""
    tracker = Tracker()
    trims: list[int] = []
    tracker._trim = lambda: trims.append(1)
    start = Start(rss=0, fds=0, heap=None, lifetime_peak=None, blocks=100, malloc=5 * 1024 * 1024)
    assert tracker.growth(start, (100, 4 * 1024 * 1024 + 1)).malloc == -(1024 * 1024) + 1
    assert not trims
    assert tracker.growth(start, (100, 4 * 1024 * 1024)).malloc == -(1024 * 1024)
    assert trims == [1]
