"""The record's wire format and the tracker's readings (in this process, restoring what it changes)."""

from __future__ import annotations

import os
import sys
import tracemalloc

import pytest

from pytest_memguard import tracker as tracker_module
from pytest_memguard.record import MemoryRecord, Verdict
from pytest_memguard.tracker import Measurement, Tracker

MIB = 1024**2


def test_record_round_trips_through_user_properties() -> None:
    record = MemoryRecord("t.py::test_a[1]", Measurement(5 * MIB, -3, 100, 7, 1), Verdict.OVER_LIMIT, "peak ...")
    props = record.to_properties()
    assert all(name.startswith("memguard_") for name, _ in props)
    assert all(isinstance(value, (int, str)) for _, value in props)
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


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="Linux /proc only")
def test_both_linux_fd_counters_agree() -> None:
    by_listing = tracker_module._count_fds_linux()
    assert tracker_module._linux_fd_counter()() == by_listing
    read_end, write_end = os.pipe()
    try:
        assert tracker_module._linux_fd_counter()() == by_listing + 2
    finally:
        os.close(read_end)
        os.close(write_end)
