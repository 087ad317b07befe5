"""Memory limits: parsing them from markers and options, and checking a test. No pytest.

Keywords (the marker's and ``--memguard-limit``'s):

==================  ==============================================  ========
keyword             what it bounds                                  value
==================  ==============================================  ========
``peak``            peak RSS above the RSS the test started at      a size
``retained``        RSS after teardown minus RSS before setup       a size
``heap_peak``       peak Python heap (tracemalloc) above the start  a size
``heap_retained``   Python heap after teardown minus before setup   a size
``fds``             open file descriptors gained                    a count
==================  ==============================================  ========

``None`` as a value removes a limit set further out (e.g. on the class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from .tracker import Measurement
from .units import SizeError, format_size, parse_size

__all__ = ["LIMIT_KEYS", "Breach", "Limit", "LimitError", "check_limits", "parse_limit_lines", "parse_limits"]

#: keyword -> what a person calls the figure
LIMIT_KEYS: dict[str, str] = {
    "peak": "peak RSS",
    "retained": "retained RSS",
    "heap_peak": "peak Python heap",
    "heap_retained": "retained Python heap",
    "fds": "file descriptors gained",
}
HEAP_KEYS = frozenset({"heap_peak", "heap_retained"})
RETAINED_KEYS = frozenset({"retained", "heap_retained", "fds"})


class LimitError(ValueError):
    """A limit that cannot be understood; the message names the value and the fix."""


def describe_amount(key: str, amount: int) -> str:
    """A figure as people read it: a count of fds, else a size in binary units."""
    return str(amount) if key == "fds" else format_size(amount)


@dataclass(frozen=True)
class Limit:
    """One bound on one figure, and where it was set (for the failure message)."""

    key: str
    value: int
    source: str
    written: str = ""  # as the user wrote it ("20 MB"), so they recognise their own limit

    def describe(self, amount: int) -> str:
        return describe_amount(self.key, amount)

    def shown(self) -> str:
        """The limit as written, with its binary size when that differs (``20 MB (19.1 MiB)``)."""
        canonical = self.describe(self.value)
        if not self.written or self.written == canonical:
            return canonical
        return self.written if self.key == "fds" else f"{self.written} ({canonical})"


@dataclass(frozen=True)
class Breach:
    """A measured figure above its limit."""

    limit: Limit
    measured: int

    def message(self) -> str:
        """One line: which figure, how much, the limit, where the limit came from."""
        limit = self.limit
        over = limit.describe(self.measured - limit.value)
        return (
            f"{LIMIT_KEYS[limit.key]} {limit.describe(self.measured)} exceeds the limit of "
            f"{limit.shown()} by {over} (limit from {limit.source})"
        )


def _parse_value(key: str, value: object) -> Optional[int]:
    if value is None:
        return None
    if key == "fds":
        is_count = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not is_count and not (isinstance(value, str) and value.strip().isdigit()):
            raise LimitError(f"fds={value!r} is not a whole number of file descriptors, e.g. fds=0")
        return int(str(value))
    try:
        return parse_size(value)
    except SizeError as exc:
        raise LimitError(f"{key}={value!r}: {exc}") from None


def parse_limits(
    values: Mapping[str, object], source: str, also_known: Sequence[str] = ()
) -> dict[str, Optional[Limit]]:
    """Parse ``{"peak": "50 MB"}`` into limits; ``None`` values mean "no limit here".
    ``also_known``: the other keywords where they come from (the marker's), named in the error."""
    unknown = sorted(set(values) - set(LIMIT_KEYS))
    if unknown:
        raise LimitError(f"unknown keyword {', '.join(unknown)}; known: {', '.join([*LIMIT_KEYS, *also_known])}")
    limits: dict[str, Optional[Limit]] = {}
    for key, raw in values.items():
        parsed = _parse_value(key, raw)
        written = raw.strip() if isinstance(raw, str) else str(raw)
        limits[key] = None if parsed is None else Limit(key, parsed, source, written)
    return limits


def parse_limit_lines(lines: Iterable[str], source: str) -> dict[str, Optional[Limit]]:
    """Parse ``["peak = 50 MB", "fds=0"]`` (ini lines or ``--memguard-limit`` values)."""
    values: dict[str, object] = {}
    for line in lines:
        key, sep, raw = line.partition("=")
        if not sep or not key.strip() or not raw.strip():
            raise LimitError(f"{line!r} is not KEY=VALUE, e.g. 'peak=50 MB'")
        values[key.strip()] = raw.strip()
    return parse_limits(values, source)


def merge_limits(layers: Iterable[Mapping[str, Optional[Limit]]]) -> dict[str, Limit]:
    """Nearest layer first: the first layer that names a keyword decides it."""
    decided: dict[str, Optional[Limit]] = {}
    for layer in layers:
        for key, limit in layer.items():
            decided.setdefault(key, limit)
    return {key: limit for key, limit in decided.items() if limit is not None}


def measured_value(measurement: Measurement, key: str) -> Optional[int]:
    """The figure a limit keyword bounds, or ``None`` if it was not measured."""
    return {
        "peak": measurement.rss_peak,
        "retained": measurement.rss_retained,
        "heap_peak": measurement.heap_peak,
        "heap_retained": measurement.heap_retained,
        "fds": measurement.fds_gained,
    }[key]


def check_limits(measurement: Measurement, limits: Mapping[str, Limit]) -> list[Breach]:
    """Every limit the measurement exceeds, in keyword order."""
    if not limits:
        return []
    breaches = []
    for key in LIMIT_KEYS:
        limit = limits.get(key)
        value = measured_value(measurement, key)
        if limit is not None and value is not None and value > limit.value:
            breaches.append(Breach(limit, value))
    return breaches
