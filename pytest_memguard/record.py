"""The per-test record: plain numbers that travel on ``report.user_properties``.

Basic types only, so records cross pytest-xdist's wire and land in pytest's own
``--junitxml`` as ``<property>`` elements. No pytest here.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Optional

from .allocation_analyzer import AllocationAnalysis
from .baseline import Finding
from .leak_detector import AllocationSite, LeakReport
from .tolerance import FIGURES
from .tracker import Measurement

__all__ = ["ANALYSIS_TOP", "PREFIX", "MemoryRecord", "Verdict", "is_ours"]

PREFIX = "memguard_"
ANALYSIS_TOP = 5  # sites, components and operations an analysis keeps on the record


def is_ours(name: object) -> bool:
    """Whether a report property of this name is one :meth:`MemoryRecord.from_properties` reads."""
    return isinstance(name, str) and name.startswith(PREFIX)


class Verdict:
    """The short words ``memguard_verdict`` may hold (other tools read them)."""

    OK = "ok"
    OVER_LIMIT = "over_limit"
    LEAK = "leak"
    REGRESSION = "regression"
    IMPROVEMENT = "improvement"
    NEW = "new"


# property name -> Measurement field, in the order they are written
_FIGURES = (
    ("memguard_rss_peak", "rss_peak"),
    ("memguard_rss_retained", "rss_retained"),
    ("memguard_heap_peak", "heap_peak"),
    ("memguard_heap_retained", "heap_retained"),
    ("memguard_fds_gained", "fds_gained"),
)


def measurement_from(figures: Mapping[str, Optional[int]]) -> Measurement:
    """A measurement from ``{field: value}`` (JSON results, report properties); RSS figures
    default to 0, the others to "not measured"."""
    return Measurement(
        rss_peak=figures.get("rss_peak") or 0,
        rss_retained=figures.get("rss_retained") or 0,
        heap_peak=figures.get("heap_peak"),
        heap_retained=figures.get("heap_retained"),
        fds_gained=figures.get("fds_gained"),
    )


def figures_of(measurement: Measurement) -> dict[str, int]:
    """The figures a baseline keeps (``rss_peak``, ...), leaving out those not measured."""
    return {name: value for name in FIGURES if (value := getattr(measurement, name)) is not None}


class MemoryRecord(NamedTuple):
    """One measured test: its figures, its verdict, why, what moved against the baseline, where its
    bytes went (``analysis``: flagged tests only, see :mod:`pytest_memguard.rerun_analysis`)."""

    nodeid: str
    measurement: Measurement
    verdict: str = Verdict.OK
    message: str = ""
    findings: tuple[Finding, ...] = ()
    leak: Optional[LeakReport] = None
    analysis: Optional[AllocationAnalysis] = None

    @property
    def plain(self) -> bool:
        """No findings, leak or analysis: :meth:`from_properties` gives this very record back from
        :meth:`to_properties` (unless other ``memguard_*`` properties ride along: the session
        checks for a test's own)."""
        return not self.findings and self.leak is None and self.analysis is None

    def to_properties(self) -> list[tuple[str, object]]:
        """``(name, value)`` pairs for ``report.user_properties``; unmeasured figures are left out."""
        # _FIGURES lists Measurement's fields in their order (the round-trip test would see a swap)
        props: list[tuple[str, object]] = [
            (name, value) for (name, _), value in zip(_FIGURES, self.measurement) if value is not None
        ]
        for finding in self.findings:
            props.append((f"memguard_baseline_{finding.figure}", finding.baseline))
            props.append((f"memguard_tolerance_{finding.figure}", finding.threshold))
        if self.leak is not None:
            props += _leak_properties(self.leak)
        props.append(("memguard_verdict", self.verdict))
        if self.message:
            props.append(("memguard_message", self.message))
        if self.analysis is not None:  # one compact JSON string: basic types cross xdist and junitxml
            props.append(("memguard_analysis", self.analysis.compact(ANALYSIS_TOP).to_json()))
        return props

    @classmethod
    def from_properties(cls, nodeid: str, properties: Iterable[tuple[str, object]]) -> Optional[MemoryRecord]:
        """Rebuild a record from a report's properties; ``None`` if the test was not measured."""
        found = {name: value for name, value in properties if is_ours(name)}
        if "memguard_verdict" not in found:
            return None
        figures = {field: _as_int(found.get(name)) for name, field in _FIGURES}
        measurement = measurement_from(figures)
        findings = []
        for name, current in figures_of(measurement).items():
            baseline = _as_int(found.get(f"memguard_baseline_{name}"))
            threshold = _as_int(found.get(f"memguard_tolerance_{name}"))
            if baseline is not None and threshold is not None:
                findings.append(Finding(nodeid, name, baseline, current, threshold))
        return cls(
            nodeid=nodeid,
            measurement=measurement,
            verdict=str(found["memguard_verdict"]),
            message=str(found.get("memguard_message", "")),
            findings=tuple(findings),
            leak=_leak_from_properties(found),
            analysis=_analysis_from(found.get("memguard_analysis")),
        )


def _as_int(value: object) -> Optional[int]:
    """Property values come back as given in-process, or as strings from elsewhere."""
    if isinstance(value, bool) or value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str):
        return int(float(value))
    return None


def _analysis_from(value: object) -> Optional[AllocationAnalysis]:
    """The analysis, or ``None`` when there is none or it does not read (hand-edited, cut short):
    a report we cannot explain must not stop the controller."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return AllocationAnalysis.from_json(value)
    except (ValueError, TypeError, OverflowError):  # OverflowError: float() of a huge int
        return None


def _leak_properties(leak: LeakReport) -> list[tuple[str, object]]:
    """A confirmation's outcome as basic values (sites as ``where|bytes|count`` joined by ``;``)."""
    props: list[tuple[str, object]] = [
        ("memguard_leak_confirmed", int(leak.confirmed)),
        ("memguard_leak_runs", leak.runs),
        ("memguard_leak_rss_per_run", leak.rss_per_run),
        ("memguard_leak_blocks_per_run", round(leak.blocks_per_run, 1)),
        ("memguard_leak_fds_per_run", round(leak.fds_per_run, 1)),
        ("memguard_pressure", leak.pressure),
    ]
    if leak.heap_per_run is not None:
        props.append(("memguard_leak_heap_per_run", leak.heap_per_run))
    if leak.malloc_per_run is not None:
        props.append(("memguard_leak_malloc_per_run", leak.malloc_per_run))
    if leak.indicators:
        props.append(("memguard_leak_indicators", ",".join(leak.indicators)))
    if leak.sites:
        props.append(("memguard_leak_sites", ";".join(f"{s.where}|{s.size}|{s.count}" for s in leak.sites)))
    if leak.note:
        props.append(("memguard_leak_note", leak.note))
    return props


def _leak_from_properties(found: dict[str, object]) -> Optional[LeakReport]:
    if "memguard_leak_runs" not in found:
        return None
    sites = []
    for part in str(found.get("memguard_leak_sites", "")).split(";"):
        where, _, rest = part.rpartition("|")
        where, _, size = where.rpartition("|")
        if where:
            sites.append(AllocationSite(where, int(size), int(rest)))
    indicators = str(found.get("memguard_leak_indicators", ""))
    return LeakReport(
        confirmed=bool(_as_int(found.get("memguard_leak_confirmed"))),
        runs=_as_int(found.get("memguard_leak_runs")) or 0,
        rss_per_run=_as_int(found.get("memguard_leak_rss_per_run")) or 0,
        heap_per_run=_as_int(found.get("memguard_leak_heap_per_run")),
        malloc_per_run=_as_int(found.get("memguard_leak_malloc_per_run")),
        blocks_per_run=float(str(found.get("memguard_leak_blocks_per_run", 0))),
        fds_per_run=float(str(found.get("memguard_leak_fds_per_run", 0))),
        indicators=tuple(name for name in indicators.split(",") if name),
        pressure=float(str(found.get("memguard_pressure", 0))),
        sites=tuple(sites),
        note=str(found.get("memguard_leak_note", "")),
    )
