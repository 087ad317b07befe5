"""What the allocation analyzer found, as data: sites, group totals, the analysis and its
JSON and text forms. No pytest, no tracemalloc here (see :mod:`.allocation_analyzer`)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from tabulate import tabulate

from .units import format_size

__all__ = ["AllocationAnalysis", "GroupTotal", "SiteStat"]


@dataclass(frozen=True)
class SiteStat:
    """One allocation site and what it kept: bytes and blocks grown (after - before, may be negative)."""

    where: str  # "pkg/mod.py:42", or with stack_depth > 1 "a.py:3 <- b.py:10", innermost first
    filename: str  # innermost frame, as tracemalloc recorded it
    lineno: int
    component: str
    size: int
    count: int

    @property
    def average(self) -> float:
        """Average block size in bytes (0 when no blocks were gained)."""
        return self.size / self.count if self.count > 0 else 0.0


@dataclass(frozen=True)
class GroupTotal:
    """Bytes and blocks grown for one component, operation, file or size class."""

    name: str
    size: int
    count: int


@dataclass(frozen=True)
class AllocationAnalysis:
    """Where the bytes went between two snapshots; only the top entries of each list are kept.

    ``retained_*``: net growth of the traced heap (excluded frames left out).
    ``allocated_*``/``freed_*``: blocks found only in *after* / only in *before*.
    ``traced_bytes``: the whole traced heap at *after*. ``fragmentation``:
    ``rss_bytes / traced_bytes``. RSS also holds the interpreter, C extensions and
    the allocators' free lists and arenas, so a high ratio is not proof of fragmentation,
    and it only means something when tracing started with the process (``-X tracemalloc``).
    ``by_operation``: per ``operations`` label (``operations_labelled``), or per file when no
    mapping was given; ``peak_by_operation``: per label in the snapshot nearest the peak (below).
    ``size_classes``: blocks gained per :data:`SIZE_CLASSES` class, every class listed;
    ``exact_sizes``: counted per block (else from each site's average block size).
    ``peak_sites``: what the sites held (above *before*) in the snapshot taken nearest the peak,
    ``peak_snapshot_bytes``: the traced heap above the start at that snapshot (compare
    ``peak_bytes``); empty and ``None`` unless ``memory_analysis(peak_sites=True)`` took one.
    """

    retained_bytes: int
    retained_blocks: int
    allocated_bytes: int
    allocated_blocks: int
    freed_bytes: int
    freed_blocks: int
    traced_bytes: int
    peak_bytes: Optional[int]
    rss_bytes: Optional[int]
    fragmentation: Optional[float]
    efficiency: float
    top_by_size: tuple[SiteStat, ...]
    top_by_count: tuple[SiteStat, ...]
    by_component: tuple[GroupTotal, ...]
    by_operation: tuple[GroupTotal, ...]
    size_classes: tuple[GroupTotal, ...]
    recommendations: tuple[str, ...]
    stack_depth: int
    exact_sizes: bool
    peak_sites: tuple[SiteStat, ...] = ()
    peak_snapshot_bytes: Optional[int] = None
    peak_by_operation: tuple[GroupTotal, ...] = ()
    operations_labelled: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: basic types only (each site also gets its ``average``, which :meth:`from_dict` ignores)."""
        data = asdict(self)
        for name in _SITE_LISTS:
            for site, entry in zip(getattr(self, name), data[name]):
                entry["average"] = round(site.average, 1)
        return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}

    def compact(self, top: int = 5) -> AllocationAnalysis:
        """The same analysis with at most ``top`` sites, components and operations; size classes all kept."""
        return replace(
            self,
            top_by_size=self.top_by_size[:top],
            top_by_count=self.top_by_count[:top],
            by_component=self.by_component[:top],
            by_operation=self.by_operation[:top],
            peak_sites=self.peak_sites[:top],
            peak_by_operation=self.peak_by_operation[:top],
        )

    def to_json(self) -> str:
        """:meth:`as_dict` as one line of ASCII JSON (any path survives xdist's wire and XML)."""
        return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AllocationAnalysis:
        """Rebuild an analysis from :meth:`as_dict`'s output; ``ValueError`` names the first bad field."""
        if not isinstance(data, Mapping):
            raise ValueError(f"allocation analysis: expected a JSON object, got {type(data).__name__}")
        recommendations = _typed(data, "recommendations", list)
        if not all(isinstance(text, str) for text in recommendations):
            raise ValueError("allocation analysis: 'recommendations' must be a list of strings")
        fragmentation = _typed(data, "fragmentation", float, optional=True)
        return cls(
            retained_bytes=_typed(data, "retained_bytes", int),
            retained_blocks=_typed(data, "retained_blocks", int),
            allocated_bytes=_typed(data, "allocated_bytes", int),
            allocated_blocks=_typed(data, "allocated_blocks", int),
            freed_bytes=_typed(data, "freed_bytes", int),
            freed_blocks=_typed(data, "freed_blocks", int),
            traced_bytes=_typed(data, "traced_bytes", int),
            peak_bytes=_typed(data, "peak_bytes", int, optional=True),
            rss_bytes=_typed(data, "rss_bytes", int, optional=True),
            fragmentation=None if fragmentation is None else float(fragmentation),
            efficiency=float(_typed(data, "efficiency", float)),
            top_by_size=_sites(data, "top_by_size"),
            top_by_count=_sites(data, "top_by_count"),
            by_component=_groups(data, "by_component"),
            by_operation=_groups(data, "by_operation"),
            size_classes=_groups(data, "size_classes"),
            recommendations=tuple(recommendations),
            stack_depth=_typed(data, "stack_depth", int),
            exact_sizes=_typed(data, "exact_sizes", bool),
            peak_sites=_sites(data, "peak_sites") if "peak_sites" in data else (),
            peak_snapshot_bytes=_typed(data, "peak_snapshot_bytes", int, optional=True),
            # Both newer than the rest: an analysis written before them has none.
            peak_by_operation=_groups(data, "peak_by_operation") if "peak_by_operation" in data else (),
            operations_labelled=bool(_typed(data, "operations_labelled", bool, optional=True)),
        )

    @classmethod
    def from_json(cls, text: str) -> AllocationAnalysis:
        """The inverse of :meth:`to_json`; ``ValueError`` for anything else (hand-edited, cut short, ...)."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
            raise ValueError(f"allocation analysis: not valid JSON ({type(exc).__name__}: {exc})") from None
        return cls.from_dict(data)

    def to_text(self, sites: Optional[int] = None) -> str:
        """A few lines for the terminal; ``sites``: rows per site table (default: all kept)."""
        head = [
            f"retained {format_size(self.retained_bytes, signed=True)} in {self.retained_blocks:+,} blocks",
            f"allocated {format_size(self.allocated_bytes)}, freed {format_size(self.freed_bytes)}",
        ]
        if self.peak_bytes is not None:
            head.append(f"peak {format_size(self.peak_bytes)}")
        if self.fragmentation is not None:
            head.append(f"RSS/traced {self.fragmentation:.1f}x")
        lines = ["allocation analysis: " + "; ".join([*head, f"efficiency {self.efficiency:.2f}"])]
        if self.peak_sites and self.peak_snapshot_bytes is not None:
            lines.append(f"held near the peak (snapshot at {format_size(self.peak_snapshot_bytes)}):")
            lines.append(_site_table(self.peak_sites[:sites], "peak site"))
        if self.top_by_size:
            lines.append(_site_table(self.top_by_size[:sites], "kept at" if self.peak_sites else "site"))
        grown = [f"{c.name} {c.count:,} ({format_size(c.size)})" for c in self.size_classes if c.count]
        if grown:
            lines.append("blocks gained: " + ", ".join(grown))
        if self.by_component:
            lines.append("by package: " + _shares(self.by_component))
        if self.operations_labelled:  # per-file totals (no mapping) would only repeat the sites
            if self.peak_by_operation:
                lines.append("by operation near the peak: " + _shares(self.peak_by_operation))
            if self.by_operation:
                lines.append("by operation: " + _shares(self.by_operation))
        lines += [f"- {text}" for text in self.recommendations]
        return "\n".join(lines)


_SITE_LISTS = ("top_by_size", "top_by_count", "peak_sites")


def _shares(groups: Sequence[GroupTotal]) -> str:
    return ", ".join(f"{g.name} {format_size(g.size, signed=True)}" for g in groups)


def _site_table(sites: Sequence[SiteStat], title: str) -> str:
    rows = [(s.where, format_size(s.size, signed=True), f"{s.count:+,}", format_size(s.average)) for s in sites]
    return tabulate(rows, headers=(title, "size", "blocks", "average"), disable_numparse=True)


def _typed(data: Mapping[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    """``data[name]`` if it is a ``kind`` (an int passes for a float; a bool is no int), else ``ValueError``."""
    value = data.get(name)
    if value is None and optional:
        return None
    kinds = (int, float) if kind is float else (kind,)
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kinds):
        raise ValueError(f"allocation analysis: {name!r} must be {kind.__name__}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not -(2**63) < value < 2**63:
        raise ValueError(f"allocation analysis: {name!r} is out of range")  # also inf and nan
    return value


def _entries(data: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    entries: list[Mapping[str, Any]] = _typed(data, name, list)
    if not all(isinstance(entry, Mapping) for entry in entries):
        raise ValueError(f"allocation analysis: {name!r} must be a list of objects")
    return entries


def _sites(data: Mapping[str, Any], name: str) -> tuple[SiteStat, ...]:
    return tuple(
        SiteStat(
            where=_typed(entry, "where", str),
            filename=_typed(entry, "filename", str),
            lineno=_typed(entry, "lineno", int),
            component=_typed(entry, "component", str),
            size=_typed(entry, "size", int),
            count=_typed(entry, "count", int),
        )
        for entry in _entries(data, name)
    )


def _groups(data: Mapping[str, Any], name: str) -> tuple[GroupTotal, ...]:
    return tuple(
        GroupTotal(_typed(entry, "name", str), _typed(entry, "size", int), _typed(entry, "count", int))
        for entry in _entries(data, name)
    )
