"""Where did the bytes go: tracemalloc snapshot diffs → sites, size classes, packages. No pytest here.

What is in the *after* snapshot and not in *before* is what the code in between kept alive.
tracemalloc sees Python's allocators (and C extensions that report to it, such as numpy),
not other ``malloc`` calls. Two snapshots cannot tell:

* peak-time sites: tracemalloc keeps one process-wide peak number, not which sites held it, and
  nothing about blocks allocated and freed in between. ``memory_analysis(peak_sites=True)`` adds
  snapshots while the traced heap climbs (:class:`.peak_watch.PeakWatcher`) and names the sites
  of the highest one; ``analyze_snapshots`` alone gives *retained* sites only.
* function names: tracemalloc records file and line only; ``operations`` maps files or
  ``file:line`` to labels (the plugin maps a test's function and fixtures), each change takes
  the label of the innermost matching frame of its whole recorded traceback, and without a
  mapping there are per-file totals.

Frames of pytest, _pytest, pluggy, tracemalloc and this package never appear (see
:func:`exclude_filters`). Cost: ``compare_to``/``filter_traces`` run Python per traced block
(seconds per million); this module counts the raw trace tuples (CPython's
``Snapshot.traces._traces``) with C containers and works on what changed, falling back to
``compare_to`` where that attribute is missing. docs/allocation-analysis.md has the details.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.util
import os
import sys
import sysconfig
import tracemalloc
from collections import Counter, defaultdict
from dataclasses import replace
from operator import itemgetter
from types import TracebackType
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, TypeVar

import psutil

from .allocation_result import AllocationAnalysis, GroupTotal, SiteStat
from .peak_watch import PeakWatcher
from .units import format_size

__all__ = [
    "SIZE_CLASSES",
    "AllocationAnalysis",
    "GroupTotal",
    "MemoryAnalysis",
    "SiteStat",
    "analyze",
    "analyze_snapshots",
    "component_of",
    "efficiency_score",
    "exclude_filters",
    "memory_analysis",
]

KIB = 1024
MIB = 1024 * KIB
STDLIB = "<stdlib>"
UNKNOWN = "<unknown>"
OTHER = "<other>"
# Size classes of gained blocks: name and exclusive upper bound in bytes.
SIZE_CLASSES = (("tiny", 64), ("small", KIB), ("medium", 64 * KIB), ("large", MIB), ("huge", None))
_MANY_BLOCKS = 10_000  # one site keeping this many small blocks earns a recommendation
_FRAGMENTATION_OK = 2.0  # RSS up to this multiple of the traced heap is normal for CPython
_SITE_DIRS = ("site-packages", "dist-packages")
# Frames recorded when memory_analysis starts tracing for an operations mapping: enough to reach
# the test or fixture frame from inside a library it calls (sites still show stack_depth frames).
_OPERATION_FRAMES = 16
_T = TypeVar("_T")
_Frames = tuple[tuple[str, int], ...]  # innermost frame first, as _tracemalloc stores them


def exclude_filters() -> tuple[tracemalloc.Filter, ...]:
    """The filters whose frames never appear: pytest, _pytest, pluggy, tracemalloc, this package,
    and hypothesis' pytest plugin (a hook wrapper around every test's call when hypothesis is
    installed, so one of its lines would head the sites of any test)."""
    patterns = [tracemalloc.__file__, os.path.join(os.path.dirname(os.path.abspath(__file__)), "*")]
    for name in ("pytest", "_pytest", "pluggy"):
        spec = importlib.util.find_spec(name)  # top-level names: found without importing
        dirs = (spec.submodule_search_locations or []) if spec else []
        patterns += [os.path.join(d, "*") for d in dirs] or [f"*{os.sep}{name}{os.sep}*"]
    plugin = importlib.util.find_spec("_hypothesis_pytestplugin")
    if plugin is not None and plugin.origin:
        patterns.append(plugin.origin)
    return tuple(tracemalloc.Filter(False, pattern) for pattern in patterns)


def _norm(path: str, cwd: str) -> str:
    return os.path.normcase(os.path.abspath(os.path.join(cwd, path)))


def _is_under(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


class _Locator:
    """``(component, short path)`` of source files (see :func:`component_of`), with the search
    path and the standard library's directories normalised once: per file, that was ~15 path
    normalisations, ~40 ms of an allocation analysis of a 25-frame traceback set. ``patterns``:
    the exclusion filters :meth:`file_info` applies."""

    def __init__(
        self, search_path: Sequence[str], stdlib_dirs: Sequence[str], cwd: str, patterns: Sequence[str] = ()
    ) -> None:
        self.cwd, self.norm_cwd = cwd, _norm(cwd, cwd)
        self.search_path = [_norm(entry, cwd) for entry in search_path]
        self.stdlib = [_norm(directory, cwd) for directory in stdlib_dirs]
        self.patterns = patterns
        self._seen: dict[str, tuple[bool, str, str]] = {}

    def file_info(self, filename: str) -> tuple[bool, str, str]:
        """``(excluded, component, short path)``, worked out once per file."""
        if filename not in self._seen:
            name = os.path.normcase(filename[:-1] if filename.endswith(".pyc") else filename)
            excluded = any(fnmatch.fnmatch(name, pattern) for pattern in self.patterns)
            self._seen[filename] = (excluded, *self.locate(filename))
        return self._seen[filename]

    def locate(self, filename: str) -> tuple[str, str]:
        if not filename or filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>, <stdin>
            return UNKNOWN, filename or UNKNOWN
        path = _norm(filename, self.cwd)
        base = max((entry for entry in self.search_path if _is_under(path, entry)), key=len, default=None)
        parts = path.split(os.sep)
        in_site = any(part in _SITE_DIRS for part in parts)
        if base is None:
            if in_site:  # a site-packages file whose directory is not on sys.path
                index = max(i for i, part in enumerate(parts) if part in _SITE_DIRS)
                base = os.sep.join(parts[: index + 1])
            else:
                base = self.cwd if _is_under(path, self.norm_cwd) else os.path.dirname(path)
        short = os.path.relpath(path, base)
        if not in_site and any(_is_under(base, d) for d in self.stdlib):
            return STDLIB, short
        return short.split(os.sep)[0].split(".")[0] or UNKNOWN, short


_LOCATORS: dict[tuple[str, ...], _Locator] = {}


def _locator_for(patterns: Sequence[str], cwd: str) -> _Locator:
    """The locator of the analyses made while the exclusion patterns, the current directory and
    ``sys.path`` stay the same, with what it found out about each file: a suite full of leaks
    (click's: 217) has one analysed per leak, mostly through the same files."""
    context = (*patterns, cwd, *sys.path)
    if context not in _LOCATORS:
        _LOCATORS.clear()
        _LOCATORS[context] = _Locator(sys.path, _stdlib_dirs(), cwd, patterns)
    return _LOCATORS[context]


@functools.lru_cache(maxsize=1)
def _stdlib_dirs() -> tuple[str, str]:
    """sysconfig's ``stdlib`` and ``platstdlib``: ~6.5 ms to work out, so once a process."""
    paths = sysconfig.get_paths()
    return paths["stdlib"], paths["platstdlib"]


def component_of(
    filename: str, search_path: Optional[Sequence[str]] = None, stdlib_dirs: Optional[Sequence[str]] = None
) -> str:
    """The top-level package or module a source file belongs to: ``numpy``, ``myproject``.

    The longest ``sys.path`` entry containing the file decides, and its first path
    component below that entry is the component (``six.py`` → ``six``). Files
    under ``sysconfig``'s ``stdlib``/``platstdlib`` (but not in site-packages) are
    ``<stdlib>``; ``<frozen ...>``/``<string>`` are ``<unknown>``; a file under no
    entry is named by its first component relative to the current directory.
    ``search_path`` and ``stdlib_dirs`` default to ``sys.path`` and sysconfig's paths.
    """
    stdlib = _stdlib_dirs() if stdlib_dirs is None else stdlib_dirs
    return _Locator(sys.path if search_path is None else search_path, stdlib, os.getcwd()).locate(filename)[0]


def efficiency_score(retained: int, peak: Optional[int], fragmentation: Optional[float] = None) -> float:
    """0.0 to 1.0: the share of the peak given back by the end, tempered by RSS waste.

    ``(1 - retained / peak) * (0.75 + 0.25 * min(1, 2 / fragmentation))``: retained counted
    from 0, peak at least retained, nothing held scores 1.0, an unknown ratio counts as 1.
    Keeping everything scores 0; the weak RSS signal takes off at most a quarter. Falls as
    retained or the ratio rise. Churn is invisible to snapshots and not scored.
    """
    kept = max(0, retained)
    high = max(kept, peak or 0)
    release = 1.0 if high == 0 else 1.0 - kept / high
    rss_factor = 1.0 if not fragmentation else min(1.0, _FRAGMENTATION_OK / fragmentation)
    return max(0.0, min(1.0, release * (0.75 + 0.25 * rss_factor)))


class _Change(NamedTuple):
    traceback: _Frames
    block_size: Optional[int]  # exact size of each block; None when only totals are known
    size: int
    blocks: int


def _raw_traces(snapshot: tracemalloc.Snapshot) -> Optional[list[Any]]:
    raw = getattr(snapshot.traces, "_traces", None)  # CPython 3.4+: (domain, size, frames, nframe) tuples
    return raw if isinstance(raw, list) else None


def _count(raw: list[Any]) -> dict[Any, int]:
    """How often each trace occurs. Under tracing, allocating is slow: Counter makes a new int for every count
    above 256, lists cost allocations per distinct trace. A 1-in-64 sample estimates the former and picks."""
    sample = Counter(raw[::64])
    if sum(max(0, 64 * seen - 256) for seen in sample.values()) < len(raw) // 4:
        return Counter(raw)
    groups: defaultdict[Any, list[None]] = defaultdict(list)
    for trace in raw:
        groups[trace].append(None)
    return {trace: len(same) for trace, same in groups.items()}


def _exact_changes(raw_before: list[Any], raw_after: list[Any]) -> list[_Change]:
    before, after = _count(raw_before), _count(raw_after)
    # Unpacked at once, items() reuses its tuple: no allocation (an items() set difference allocates per entry).
    changed = [trace for trace, seen in after.items() if before.get(trace) != seen]
    changed += [trace for trace in before if trace not in after]
    changes = []
    for trace in changed:
        blocks = after.get(trace, 0) - before.get(trace, 0)
        changes.append(_Change(trace[2], trace[1], trace[1] * blocks, blocks))
    return changes


def _changes_from_statistics(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> list[_Change]:
    return [
        _Change(tuple((f.filename, f.lineno) for f in reversed(stat.traceback)), None, stat.size_diff, stat.count_diff)
        for stat in after.compare_to(before, "traceback")
        if stat.size_diff or stat.count_diff
    ]


def _for_its_caller(frame: tuple[str, int], file_info: Callable[[str], tuple[bool, str, str]]) -> bool:
    """Whether what a frame allocates is its caller's: a frame of the standard library, its frozen
    modules (``<frozen os>``, ``<frozen codecs>``) included, or a namedtuple's generated
    ``__new__`` (``<string>:1``, Python 3.8-3.13). Other ``<string>`` lines are code a user
    compiled (an exec'd test function, called by pytest itself), which stays the test's own."""
    filename, lineno = frame
    if filename == "<string>":
        return lineno == 1
    return filename.startswith("<frozen ") or file_info(filename)[1] == STDLIB


def _names(filename: str, lineno: int, file_info: Callable[[str], tuple[bool, str, str]]) -> tuple[str, ...]:
    """The keys an ``operations`` mapping may use for a frame, most specific first."""
    short = file_info(filename)[2]
    return (f"{filename}:{lineno}", f"{short}:{lineno}", filename, short)


def _top(totals: Mapping[str, list[int]], top: int) -> tuple[GroupTotal, ...]:
    entries = [GroupTotal(name, size, count) for name, (size, count) in totals.items() if size or count]
    return tuple(sorted(entries, key=lambda g: (-g.size, g.name))[:top])


def analyze_snapshots(
    before: tracemalloc.Snapshot,
    after: tracemalloc.Snapshot,
    *,
    peak_bytes: int | None = None,
    rss_bytes: int | None = None,
    top: int = 10,
    stack_depth: int = 1,
    operations: Mapping[str, str] | None = None,
) -> AllocationAnalysis:
    """Analyze what grew from ``before`` to ``after``.

    ``peak_bytes``: the traced peak between the snapshots above the start (reported
    and scored as given). ``rss_bytes``: the process RSS at ``after``, for the
    fragmentation ratio. ``stack_depth``: frames per site (at most what tracemalloc
    recorded). ``operations``: filename, short path or ``file:line`` → label; each change
    takes the label of the innermost matching frame of its whole recorded traceback (not only
    the site's ``stack_depth`` frames), others are ``<other>``; ``by_operation`` sums changes.
    Cost: one pass over both snapshots' raw traces, then work proportional to what changed.
    """
    if top < 0 or stack_depth < 1:
        raise ValueError(f"top must be >= 0 and stack_depth >= 1, got top={top}, stack_depth={stack_depth}")
    raw_before, raw_after = _raw_traces(before), _raw_traces(after)
    exact = raw_before is not None and raw_after is not None
    if raw_before is not None and raw_after is not None:
        changes = _exact_changes(raw_before, raw_after)
        traced = sum(map(itemgetter(1), raw_after))
    else:
        changes = _changes_from_statistics(before, after)
        traced = sum(trace.size for trace in after.traces)
    file_info = _locator_for([f.filename_pattern for f in exclude_filters()], os.getcwd()).file_info

    site_frames: dict[_Frames, Optional[_Frames]] = {}

    def frames_of(traceback: _Frames) -> Optional[_Frames]:
        """The site's frames without excluded ones or repeats (3.11 list comprehensions), or None: excluded.
        Excluded too: what the standard library allocated for pytest or for us (``contextlib`` in
        pytest's capture, ``warnings`` in our re-run), when the traceback reaches that far. Frozen
        modules and generated methods count as the standard library there: pytest 8.1's capture
        decoding in ``<frozen codecs>``, ``os.environ`` set by pytest in ``<frozen os>`` and
        namedtuples made by pytest (``<string>:1``) were shown as the test's sites."""
        if traceback not in site_frames:
            kept = [frame for frame in traceback if not file_info(frame[0])[0]]
            kept = [frame for i, frame in enumerate(kept) if i == 0 or frame != kept[i - 1]]
            caller = next((frame for frame in traceback if not _for_its_caller(frame, file_info)), None)
            excluded = not traceback or file_info(traceback[0][0])[0] or bool(caller and file_info(caller[0])[0])
            site_frames[traceback] = None if excluded else tuple(kept[:stack_depth])
        return site_frames[traceback]

    def where_of(frames: _Frames) -> str:
        return " <- ".join(f"{file_info(name)[2]}:{line}" for name, line in frames)

    labels = operations or {}
    operation_of: dict[_Frames, str] = {}

    def label_of(traceback: _Frames, frames: _Frames) -> str:
        """The operation of one change: from all its recorded frames, so a library call counts for its caller."""
        if traceback not in operation_of:
            found = file_info(frames[0][0])[2]  # no mapping: per file, as the site shows it
            if operations is not None:
                keys = (key for name, line in traceback for key in _names(name, line, file_info))
                found = next((labels[key] for key in keys if key in labels), OTHER)
            operation_of[traceback] = found
        return operation_of[traceback]

    sites: defaultdict[_Frames, list[int]] = defaultdict(lambda: [0, 0])
    by_operation: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    classes = [[0, 0] for _ in SIZE_CLASSES]
    allocated, freed = [0, 0], [0, 0]
    huge: list[tuple[float, int, str]] = []  # block size, blocks, where
    for change in changes:
        frames = frames_of(change.traceback)
        if frames is None:
            continue
        for totals in (sites[frames], by_operation[label_of(change.traceback, frames)]):
            totals[0] += change.size
            totals[1] += change.blocks
        if change.blocks > 0:
            allocated[0] += change.size
            allocated[1] += change.blocks
            block = change.block_size if change.block_size is not None else change.size / change.blocks
            index = next(i for i, (_, limit) in enumerate(SIZE_CLASSES) if limit is None or block < limit)
            classes[index][0] += change.blocks
            classes[index][1] += change.size
            if block >= MIB:
                huge.append((block, change.blocks, where_of(frames)))
        else:
            freed[0] -= change.size
            freed[1] -= change.blocks
    stats: list[SiteStat] = []
    by_component: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
    for frames, (size, count) in sites.items():
        filename, lineno = frames[0]
        component = file_info(filename)[1]
        stats.append(SiteStat(where_of(frames), filename, lineno, component, size, count))
        by_component[component][0] += size
        by_component[component][1] += count
    retained = sum(s.size for s in stats)
    fragmentation = rss_bytes / traced if rss_bytes is not None and traced > 0 else None
    by_size = sorted((s for s in stats if s.size > 0), key=lambda s: (-s.size, s.where))
    analysis = AllocationAnalysis(
        retained_bytes=retained,
        retained_blocks=sum(s.count for s in stats),
        allocated_bytes=allocated[0],
        allocated_blocks=allocated[1],
        freed_bytes=freed[0],
        freed_blocks=freed[1],
        traced_bytes=traced,
        peak_bytes=peak_bytes,
        rss_bytes=rss_bytes,
        fragmentation=fragmentation,
        efficiency=efficiency_score(retained, peak_bytes if peak_bytes is not None else allocated[0], fragmentation),
        top_by_size=tuple(by_size[:top]),
        top_by_count=tuple(sorted((s for s in stats if s.count > 0), key=lambda s: (-s.count, s.where))[:top]),
        by_component=_top(by_component, top),
        by_operation=_top(by_operation, top),
        size_classes=tuple(GroupTotal(name, c[1], c[0]) for (name, _), c in zip(SIZE_CLASSES, classes)),
        recommendations=(),
        stack_depth=stack_depth,
        exact_sizes=exact,
        operations_labelled=operations is not None,
    )
    return _with_recommendations(analysis, by_size, huge)


def _with_recommendations(
    analysis: AllocationAnalysis, by_size: list[SiteStat], huge: list[tuple[float, int, str]]
) -> AllocationAnalysis:
    advice: list[str] = []
    for block, blocks, where in sorted(huge, key=lambda h: (-h[0] * h[1], h[2]))[:2]:
        each = "each" if analysis.exact_sizes else "on average"
        many = f"{blocks:,} allocations of {format_size(block)} {each}"
        advice.append(f"{f'one {format_size(block)} allocation' if blocks == 1 else many} at {where}")
    for site in sorted((s for s in by_size if s.count >= _MANY_BLOCKS and s.average < KIB), key=lambda s: -s.count)[:2]:
        kind = "tiny" if site.average < 64 else "small"
        advice.append(
            f"{site.count:,} {kind} blocks (average {format_size(site.average)}, {format_size(site.size)} in all) "
            f"kept from {site.where}: consider __slots__, tuples or arrays, or reusing them"
        )
    kept = analysis.retained_bytes
    if kept >= MIB and analysis.by_component and analysis.by_component[0].size / kept >= 0.5:
        leader = analysis.by_component[0]
        advice.append(f"most retained memory ({leader.size / kept:.0%}) comes from {leader.name}")
    peak = analysis.peak_bytes
    if peak is not None and peak - max(kept, 0) >= MIB and peak >= 4 * max(kept, 0):
        advice.append(
            f"peak {format_size(peak)} but only {format_size(max(kept, 0))} kept: temporary objects make the peak; "
            "processing in chunks or streaming lowers it"
        )
    ratio = analysis.fragmentation
    if ratio is not None and ratio >= 2 * _FRAGMENTATION_OK:
        advice.append(
            f"RSS is {ratio:.1f}x the traced heap: memory outside tracemalloc (interpreter, C extensions, "
            "allocator free lists or fragmentation); not proof of fragmentation"
        )
    return replace(analysis, recommendations=tuple(advice))


class MemoryAnalysis:
    """The context manager :func:`memory_analysis` returns; ``result`` is set when the block ends.

    Starts tracemalloc with ``stack_depth`` frames if it is off and stops it afterwards,
    restoring the previous traceback limit; with a non-empty ``operations`` mapping it
    records at least 16 frames, so an allocation deep in a library still finds its caller's
    label (sites still show ``stack_depth`` frames). If tracing is already on, its traceback
    limit stays (sites and labels then see at most that many frames). ``tracemalloc.reset_peak``
    is called at the start, so an enclosing measurement of the traced peak (such as
    ``--memguard-trace``'s heap peak) only sees the peak from this block on. RSS (and
    so ``fragmentation``) is only read when tracing was already on, or as ``read_rss``
    says: a heap traced for the length of one block says nothing about the whole process's RSS. ``peak_sites``
    watches the block in this thread with a profile hook (:class:`.peak_watch.PeakWatcher`),
    so the result also names the sites held near the peak; it makes call-heavy code slower.
    """

    def __init__(
        self,
        *,
        top: int = 10,
        stack_depth: int = 1,
        operations: Optional[Mapping[str, str]] = None,
        peak_sites: bool = False,
        read_rss: Optional[bool] = None,
    ):
        self.top, self.stack_depth, self.operations, self.peak_sites = top, stack_depth, operations, peak_sites
        self.read_rss = read_rss
        self.result: Optional[AllocationAnalysis] = None
        self._before: Optional[tracemalloc.Snapshot] = None
        self._watcher: Optional[PeakWatcher] = None
        self._was_tracing, self._limit, self._start = False, 1, 0

    def __enter__(self) -> MemoryAnalysis:
        self._was_tracing, self._limit = tracemalloc.is_tracing(), tracemalloc.get_traceback_limit()
        if not self._was_tracing:
            tracemalloc.start(max(self.stack_depth, _OPERATION_FRAMES) if self.operations else self.stack_depth)
        try:
            self._before = tracemalloc.take_snapshot()
        except BaseException:  # MemoryError, Ctrl-C: __exit__ will not run, so tracing stops here
            if not self._was_tracing:
                tracemalloc.stop()
            raise
        tracemalloc.reset_peak()
        self._start = tracemalloc.get_traced_memory()[0]
        if self.peak_sites:
            self._watcher = PeakWatcher(self._start)
            self._watcher.install()
        return self

    def __exit__(
        self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        watcher, self._watcher = self._watcher, None
        try:
            if watcher is not None:
                watcher.uninstall()
            peak = watcher.peak() if watcher is not None else tracemalloc.get_traced_memory()[1]
            # First, before analysing anything: the analysis allocates too (caches in fnmatch, re, ...).
            after = tracemalloc.take_snapshot()
            assert self._before is not None, "__exit__ without __enter__"
            peak_sites: tuple[SiteStat, ...] = ()
            peak_by_operation: tuple[GroupTotal, ...] = ()
            if watcher is not None and watcher.snapshot is not None:
                near_peak = analyze_snapshots(
                    self._before,
                    watcher.snapshot,
                    top=self.top,
                    stack_depth=self.stack_depth,
                    operations=self.operations,
                )
                peak_sites = near_peak.top_by_size
                # A peak breach is mostly memory freed by the end: the operations that held it then.
                peak_by_operation = near_peak.by_operation if self.operations is not None else ()
                watcher.snapshot = None
            result = analyze_snapshots(
                self._before,
                after,
                peak_bytes=max(0, peak - self._start),
                rss_bytes=int(psutil.Process().memory_info().rss) if self._reads_rss() else None,
                top=self.top,
                stack_depth=self.stack_depth,
                operations=self.operations,
            )
            at = watcher.level - self._start if peak_sites and watcher is not None else None
            self.result = replace(
                result, peak_sites=peak_sites, peak_snapshot_bytes=at, peak_by_operation=peak_by_operation
            )
        finally:
            self._before = None
            if not self._was_tracing:
                tracemalloc.stop()
                if tracemalloc.get_traceback_limit() != self._limit:
                    tracemalloc.start(self._limit)  # the only way to set the limit back
                    tracemalloc.stop()

    def _reads_rss(self) -> bool:
        return self._was_tracing if self.read_rss is None else self.read_rss


def traced_from_start() -> bool:
    """Whether tracemalloc started with the interpreter (``-X tracemalloc``, ``PYTHONTRACEMALLOC``):
    only then does the traced heap cover what RSS holds, and their ratio mean something."""
    return bool(sys._xoptions.get("tracemalloc")) or os.environ.get("PYTHONTRACEMALLOC", "0") not in ("", "0")


def memory_analysis(
    top: int = 10,
    stack_depth: int = 1,
    operations: Optional[Mapping[str, str]] = None,
    *,
    peak_sites: bool = False,
    read_rss: Optional[bool] = None,
) -> MemoryAnalysis:
    """``with memory_analysis() as m: ...`` then ``m.result`` is the :class:`AllocationAnalysis`.
    ``read_rss``: read RSS for the fragmentation ratio (default: when tracing was already on)."""
    return MemoryAnalysis(
        top=top, stack_depth=stack_depth, operations=operations, peak_sites=peak_sites, read_rss=read_rss
    )


def analyze(func: Callable[..., _T], /, *args: Any, **kwargs: Any) -> tuple[_T, AllocationAnalysis]:
    """Call ``func(*args, **kwargs)`` inside :func:`memory_analysis`; return its result and the analysis."""
    with memory_analysis() as measured:
        value = func(*args, **kwargs)
    assert measured.result is not None
    return value, measured.result
