"""The per-test record: plain numbers that travel on ``report.user_properties``.

Basic types only, so records cross pytest-xdist's wire and land in pytest's own
``--junitxml`` as ``<property>`` elements. No pytest here.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

from .tracker import Measurement

__all__ = ["PREFIX", "MemoryRecord", "Verdict"]

PREFIX = "memguard_"


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


class MemoryRecord(NamedTuple):
    """One measured test: its figures, its verdict, and why (for failures)."""

    nodeid: str
    measurement: Measurement
    verdict: str = Verdict.OK
    message: str = ""

    def to_properties(self) -> list[tuple[str, object]]:
        """``(name, value)`` pairs for ``report.user_properties``; unmeasured figures are left out."""
        props: list[tuple[str, object]] = [
            (name, getattr(self.measurement, field))
            for name, field in _FIGURES
            if getattr(self.measurement, field) is not None
        ]
        props.append(("memguard_verdict", self.verdict))
        if self.message:
            props.append(("memguard_message", self.message))
        return props

    @classmethod
    def from_properties(cls, nodeid: str, properties: Iterable[tuple[str, object]]) -> Optional[MemoryRecord]:
        """Rebuild a record from a report's properties; ``None`` if the test was not measured."""
        found = {name: value for name, value in properties if isinstance(name, str) and name.startswith(PREFIX)}
        if "memguard_verdict" not in found:
            return None
        figures: dict[str, Optional[int]] = {}
        for name, field in _FIGURES:
            value = found.get(name)
            figures[field] = int(value) if isinstance(value, (int, float, str)) and value != "" else None
        return cls(
            nodeid=nodeid,
            measurement=Measurement(
                rss_peak=figures["rss_peak"] or 0,
                rss_retained=figures["rss_retained"] or 0,
                heap_peak=figures["heap_peak"],
                heap_retained=figures["heap_retained"],
                fds_gained=figures["fds_gained"],
            ),
            verdict=str(found["memguard_verdict"]),
            message=str(found.get("memguard_message", "")),
        )
