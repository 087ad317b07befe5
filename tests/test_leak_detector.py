"""Leak verdicts from synthetic confirmation samples (pure units)."""

from __future__ import annotations

from pytest_memguard.leak_detector import (
    LeakReport,
    LeftBehind,
    RunSample,
    Screening,
    decide,
    judge_runs,
    pressure_score,
    session_pressure,
    survives_full_collection,
)

KIB = 1024
MIB = 1024 * KIB


def samples(
    heap_steps: list[int] | None = None,
    *,
    rss_steps: list[int] | None = None,
    block_steps: list[int] | None = None,
    fd_steps: list[int] | None = None,
    malloc_steps: list[int] | None = None,
) -> list[RunSample]:
    count = len(next(s for s in (heap_steps, rss_steps, block_steps, fd_steps, malloc_steps) if s is not None))

    def series(start: int, steps: list[int] | None) -> list[int]:
        values = [start]
        for step in steps or [0] * count:
            values.append(values[-1] + step)
        return values

    heap = series(10 * MIB, heap_steps)
    rss = series(100 * MIB, rss_steps)
    blocks = series(200_000, block_steps)
    fds = series(20, fd_steps)
    malloc = series(50 * MIB, malloc_steps)
    return [RunSample(rss[i], blocks[i], fds[i], heap[i], malloc[i], MIB) for i in range(count + 1)]


def test_steady_growth_is_a_leak() -> None:
    report = judge_runs(samples([64 * KIB] * 3, block_steps=[1, 1, 1]), runs=5, first_run_rss=0, traced=True)
    assert report.confirmed
    assert report.heap_per_run == 64 * KIB
    assert "steady_growth" in report.indicators
    assert report.summary().startswith("leaks 64.0 KiB/run")


def test_growth_once_then_flat_is_clean() -> None:
    assert decide(samples([0, 0]), max_steps=6) is False
    assert not judge_runs(samples([0, 0, 0]), runs=5, first_run_rss=20 * MIB, traced=True).confirmed


def test_a_filling_cache_slows_down_and_is_clean() -> None:
    # objects made before tracing started being replaced by traced ones: less and less growth
    assert not judge_runs(samples([29_000, 20_000, 1_000]), runs=5, first_run_rss=0, traced=True).confirmed


def test_noise_below_the_floor_is_clean() -> None:
    noise = samples([300, 200, 400], rss_steps=[4096, 0, 8192])
    assert not judge_runs(noise, runs=5, first_run_rss=0, traced=True).confirmed


def test_one_flat_step_is_forgiven_from_four_steps() -> None:
    assert judge_runs(samples([MIB, MIB, 0, MIB]), runs=5, first_run_rss=0, traced=True).confirmed
    assert not judge_runs(samples([MIB, 0, MIB]), runs=5, first_run_rss=0, traced=True).confirmed


def test_decide_waits_for_enough_steps() -> None:
    assert decide(samples([0]), max_steps=6) is False  # a first step with nothing to show
    assert decide(samples([MIB]), max_steps=6) is None
    assert decide(samples([MIB, MIB, 0]), max_steps=6) is None  # one flat step may be forgiven
    assert decide(samples([MIB, MIB]), max_steps=6) is None
    assert decide(samples([MIB, MIB, MIB]), max_steps=6) is True


def test_native_growth_is_named_as_such() -> None:
    report = judge_runs(samples([0, 0, 0], rss_steps=[4 * MIB] * 3), runs=5, first_run_rss=0, traced=True)
    assert report.confirmed
    assert report.note == "native (non-Python) memory grew by ~4.0 MiB/run; tracemalloc cannot see it"


def test_file_descriptors() -> None:
    report = judge_runs(samples([0, 0, 0], fd_steps=[2, 2, 2]), runs=5, first_run_rss=0, traced=True)
    assert report.confirmed
    assert report.fds_per_run == 2
    assert "2 fds/run" in report.summary()


def test_many_small_objects_and_accelerating_growth() -> None:
    report = judge_runs(
        samples([100 * KIB, 200 * KIB, 400 * KIB], block_steps=[2000, 4000, 8000]), runs=5, first_run_rss=0, traced=True
    )
    assert {"many_small_objects", "accelerating_growth"} <= set(report.indicators)


def test_large_one_off() -> None:
    report = judge_runs(samples([0, 0, 0]), runs=5, first_run_rss=64 * MIB, traced=True)
    assert report.indicators == ("large_one_off",)


def test_pressure_score_scale() -> None:
    def leak(per_run: int) -> LeakReport:
        return LeakReport(True, 5, per_run, None, None, 0.0, 0.0)

    assert pressure_score(leak(KIB), ()) == 0.0
    assert pressure_score(leak(MIB), ()) == 0.5
    assert pressure_score(leak(1024 * MIB), ()) == 1.0
    assert pressure_score(leak(MIB), ("growing_peak",)) == 0.6
    assert pressure_score(LeakReport(False, 5, 10 * MIB, None, None, 0.0, 0.0), ()) == 0.0
    assert session_pressure([0.5, 0.5]) == 0.75
    assert session_pressure([]) == 0.0


def test_screening_thresholds() -> None:
    screen = Screening()
    assert not screen.suspect(LeftBehind(rss=0, malloc=100, blocks=40, heap=None, fds=0))
    assert screen.suspect(LeftBehind(rss=2 * MIB, malloc=None, blocks=0, heap=None, fds=None))
    assert screen.suspect(LeftBehind(rss=0, malloc=8 * KIB, blocks=0, heap=None, fds=0))
    assert screen.suspect(LeftBehind(rss=0, malloc=0, blocks=1000, heap=None, fds=0))
    assert screen.suspect(LeftBehind(rss=0, malloc=0, blocks=0, heap=None, fds=1))


def test_a_small_c_heap_growth_counts_when_the_test_body_kept_it() -> None:
    # ~1 KiB over the whole run is what pytest keeps for most tests; kept by the call phase
    # (the test's body) and by the whole run alike, it makes a suspect
    screen = Screening()
    assert not screen.suspect(LeftBehind(rss=0, malloc=1200, blocks=30, heap=None, fds=0))
    assert screen.suspect(LeftBehind(rss=0, malloc=2200, blocks=30, heap=None, fds=0, malloc_in_call=1072))
    # kept by the body but freed by teardown (a fixture's cleanup), or pytest's own in setup
    assert not screen.suspect(LeftBehind(rss=0, malloc=200, blocks=30, heap=None, fds=0, malloc_in_call=1072))
    assert not screen.suspect(LeftBehind(rss=0, malloc=1800, blocks=30, heap=None, fds=0, malloc_in_call=200))
    # no C heap readings (not glibc): nothing to go by
    assert not screen.suspect(LeftBehind(rss=0, malloc=None, blocks=30, heap=None, fds=0, malloc_in_call=None))
    # the re-runs of such a suspect are watched with the same 1 KiB bar, whatever else it grew by
    assert screen.by_call_malloc(LeftBehind(rss=0, malloc=2200, blocks=900, heap=None, fds=0, malloc_in_call=1072))
    assert not screen.by_call_malloc(LeftBehind(rss=0, malloc=9000, blocks=900, heap=None, fds=0, malloc_in_call=10))


def test_small_growth_covers_what_the_free_lists_can_hold() -> None:
    # one run can fill a tuple free list (2,000 blocks) without keeping anything
    screen = Screening()
    assert screen.small(LeftBehind(rss=800 * KIB, malloc=1300, blocks=2040, heap=None, fds=0))
    assert not screen.small(LeftBehind(rss=800 * KIB, malloc=1300, blocks=5000, heap=None, fds=0))
    assert not screen.small(LeftBehind(rss=0, malloc=0, blocks=10, heap=None, fds=1))


def test_heap_growth_without_a_witness_is_replacement_not_a_leak() -> None:
    # tracemalloc started just for the re-runs: a full bounded cache swapping untraced
    # entries for traced ones grows the traced heap, but neither blocks nor malloc'd bytes
    replacing = samples([16_000, 16_000, 16_000], block_steps=[0, 0, 0], malloc_steps=[3_000, 3_000, 3_000])
    assert not judge_runs(replacing, runs=5, first_run_rss=0, traced=True, heap_needs_witness=True).confirmed
    assert judge_runs(replacing, runs=5, first_run_rss=0, traced=True, heap_needs_witness=False).confirmed
    leaking = samples([16_000, 16_000, 16_000], block_steps=[1, 1, 1], malloc_steps=[0, 0, 0])
    assert judge_runs(leaking, runs=5, first_run_rss=0, traced=True, heap_needs_witness=True).confirmed
    big_objects = samples([16_000, 16_000, 16_000], block_steps=[0, 1, 0], malloc_steps=[16_500, 16_400, 16_600])
    assert judge_runs(big_objects, runs=5, first_run_rss=0, traced=True, heap_needs_witness=True).confirmed


def test_quiet_samples_need_no_closer_look() -> None:
    from pytest_memguard.leak_detector import quiet

    assert quiet(samples([0, 0], block_steps=[1, 0], malloc_steps=[100, -50], rss_steps=[4096, 0]))
    assert quiet(samples([0], block_steps=[7]))  # a clean re-run moves 1-4 on its own account
    assert not quiet(samples([0, 0], block_steps=[0, 8]))
    # RSS below its floor is allocator noise; memory glibc does not count (mmap) shows above it
    assert quiet(samples([0], rss_steps=[256 * KIB]))
    assert not quiet(samples([0], rss_steps=[MIB]))
    assert not quiet(samples([0, 0], malloc_steps=[8192, 0]))
    # a re-run moves the C heap by up to ~1 KiB on its own; a suspect whose whole growth was
    # that small (one 1 KiB object per run moves glibc's count by 1,072 bytes) gets a lower bar
    assert quiet(samples([0], malloc_steps=[1088]))
    assert not quiet(samples([0], malloc_steps=[1072]), malloc_bar=1024)
    assert quiet(samples([0], malloc_steps=[192]), malloc_bar=1024)


def test_bytes_per_run_leaves_out_page_steps_of_rss_below_its_floor() -> None:
    # A 1 KiB/run leak: RSS moved by a page in most steps, the heaps by what was kept.
    small = LeakReport(
        True, 7, rss_per_run=4096, heap_per_run=1057, malloc_per_run=1072, blocks_per_run=1.0, fds_per_run=0.0
    )
    assert small.bytes_per_run == 1057
    assert small.summary().startswith("leaks 1.0 KiB/run")
    # Traced re-runs: the C heap also took pytest's and tracemalloc's ~1.5 KiB a run; a native
    # leak (raw malloc) is the C heap's growth well beyond the Python heap's.
    assert LeakReport(True, 7, 0, 1321, 2528, 0.0, 0.0).bytes_per_run == 1321
    assert LeakReport(True, 7, 0, 1321, 1321 + 4 * KIB, 0.0, 0.0).bytes_per_run == 1321 + 4 * KIB
    assert LeakReport(True, 7, 0, None, 2528, 0.0, 0.0).bytes_per_run == 2528  # untraced: all there is
    # Memory only RSS sees (mmap, say) still counts above the floor, and alone where nothing finer is read.
    native = LeakReport(True, 7, 4 * MIB, 0, 0, 0.0, 0.0)
    assert native.bytes_per_run == 4 * MIB
    assert LeakReport(True, 7, 4096, None, None, 0.0, 0.0).bytes_per_run == 4096
    assert LeakReport(True, 7, 200 * KIB, 0, 1024, 0.0, 2.0).bytes_per_run == 200 * KIB  # fds with mmap'd buffers


def test_growth_sampled_frozen_must_survive_a_full_collection() -> None:
    warm = RunSample(rss=40 * MIB, blocks=170_000, fds=10, heap=20 * KIB, malloc=8 * MIB, peak=0)
    # three steps of 16 KiB each: a leak keeps them after a full collection
    frozen = warm._replace(blocks=170_012, heap=68 * KIB, malloc=8 * MIB + 54 * KIB)
    assert survives_full_collection(warm, frozen, frozen._replace(blocks=170_009, malloc=8 * MIB + 53 * KIB))
    # older objects in cycles the re-runs orphaned: freed by the full collection (the C heap
    # gives back 48 of its 54 KiB), though the traced heap, which never saw them, keeps growing
    orphans = frozen._replace(blocks=169_997, malloc=8 * MIB + 6 * KIB)
    assert not survives_full_collection(warm, frozen, orphans)
    # a small give-back, under a quiet step, is noise
    assert survives_full_collection(warm, frozen, frozen._replace(malloc=8 * MIB + 51 * KIB))
