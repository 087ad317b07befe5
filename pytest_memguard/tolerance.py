"""How much a figure may move before it counts as a regression or an improvement. No pytest.

A tolerance has three parts, per figure:

* ``relative``: a share of the baseline value (``10%``);
* ``absolute``: a change this large always counts, however large the baseline;
* ``floor``: a change smaller than this never counts (the noise floor).

A change counts when ``|change| >= max(floor, min(relative * baseline, absolute))``.
So small tests are judged relatively, large tests absolutely, and nothing under
the noise floor ever fails CI. RSS figures are noisier than tracemalloc's, so
their defaults are wider (see :data:`DEFAULTS`).

Written as a string: ``"10%"``, ``"10% floor=256KiB absolute=1MiB"``. A floor left
out keeps the default; a percentage given without ``absolute=`` is meant as said
(``"25%"`` is 25% however large the test), so it turns the absolute trigger off.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, Optional

from .units import SizeError, format_size, parse_size

__all__ = ["DEFAULTS", "FIGURES", "Tolerance", "ToleranceError", "TolerancePolicy", "parse_tolerance"]

#: the figures a baseline records, with what a person calls them
FIGURES: dict[str, str] = {
    "rss_peak": "peak RSS",
    "rss_retained": "retained RSS",
    "heap_peak": "peak Python heap",
    "heap_retained": "retained Python heap",
}
#: shorthands accepted where a figure is named
FIGURE_GROUPS: dict[str, tuple[str, ...]] = {
    "all": tuple(FIGURES),
    "rss": ("rss_peak", "rss_retained"),
    "heap": ("heap_peak", "heap_retained"),
    **{name: (name,) for name in FIGURES},
}
KIB = 1024
NO_ABSOLUTE = 2**62  # "no absolute trigger": larger than any memory figure


class ToleranceError(ValueError):
    """A tolerance that cannot be understood; the message says what is accepted."""


@dataclass(frozen=True)
class Tolerance:
    """Relative margin, absolute trigger and noise floor for one figure."""

    relative: float
    floor: int
    absolute: int

    def threshold(self, baseline: int) -> int:
        """The smallest change (either way) that counts against ``baseline``."""
        return max(self.floor, min(round(self.relative * max(baseline, 0)), self.absolute))

    def describe(self) -> str:
        always = "" if self.absolute >= NO_ABSOLUTE else f", always from {format_size(self.absolute)}"
        return f"{self.relative:.0%} (floor {format_size(self.floor)}{always})"


DEFAULTS: dict[str, Tolerance] = {
    # RSS moves with the allocator and the kernel; pages are 4 KiB and arenas larger.
    "rss_peak": Tolerance(relative=0.10, floor=256 * KIB, absolute=768 * KIB),
    "rss_retained": Tolerance(relative=0.10, floor=256 * KIB, absolute=768 * KIB),
    # tracemalloc counts the bytes Python asked for: nearly deterministic.
    "heap_peak": Tolerance(relative=0.03, floor=4 * KIB, absolute=512 * KIB),
    "heap_retained": Tolerance(relative=0.03, floor=4 * KIB, absolute=512 * KIB),
}

_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]*)?)\s*%$")
_HELP = "write e.g. '10%', '10% floor=256KiB', '5% absolute=1MiB'"


def parse_tolerance(text: object, base: Tolerance) -> Tolerance:
    """Parse a tolerance string on top of ``base`` (parts not given keep ``base``'s)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if 0 < text < 1:  # a fraction to some (0.2 for 20%), a percentage to others
            raise ToleranceError(
                f"{text!r} is ambiguous: a number is read as a percentage ({text}%); "
                f"write '{text * 100:g}%' for {text * 100:g} percent, or '{text}%'"
            )
        text = f"{text}%"
    if not isinstance(text, str) or not text.strip():
        raise ToleranceError(f"{text!r} is not a tolerance: {_HELP}")
    result = base
    gave_percentage = gave_absolute = False
    # "absolute = 4 MB" -> "absolute=4MB", so parts split cleanly on spaces and commas
    compact = re.sub(r"(\d)\s+([A-Za-z])", r"\1\2", re.sub(r"\s*=\s*", "=", text))
    for part in compact.replace(",", " ").split():
        key, sep, value = part.partition("=")
        if not sep:
            match = _PERCENT.match(part)
            if match is None:
                raise ToleranceError(f"{part!r} in tolerance {text!r} is neither a percentage nor KEY=SIZE: {_HELP}")
            result = replace(result, relative=float(match[1]) / 100)
            gave_percentage = True
            continue
        if key not in ("floor", "absolute"):
            raise ToleranceError(f"unknown tolerance part {key!r} in {text!r}; use floor= or absolute=")
        try:
            size = parse_size(value)
        except SizeError as exc:
            raise ToleranceError(f"{key}= in tolerance {text!r}: {exc}") from None
        result = replace(result, **{key: size})
        gave_absolute = gave_absolute or key == "absolute"
    if gave_percentage and not gave_absolute:
        result = replace(result, absolute=NO_ABSOLUTE)
    return result


def parse_figure_tolerances(
    values: Mapping[str, object], base: Mapping[str, Tolerance], where: str
) -> dict[str, Tolerance]:
    """``{"rss": "15%", "heap_peak": "2%"}`` → a tolerance for every figure named."""
    result: dict[str, Tolerance] = {}
    for name, spec in values.items():
        figures = FIGURE_GROUPS.get(str(name))
        if figures is None:
            raise ToleranceError(f"{where}: unknown figure {name!r}; use one of {', '.join(FIGURE_GROUPS)}")
        for figure in figures:
            try:
                result[figure] = parse_tolerance(spec, result.get(figure, base[figure]))
            except ToleranceError as exc:
                raise ToleranceError(f"{where}: {exc}") from None
    return result


@dataclass(frozen=True)
class ToleranceRule:
    """Tolerances for the tests whose node id matches a glob (``tests/slow/*``)."""

    pattern: str
    tolerances: Mapping[str, Tolerance]


@dataclass(frozen=True)
class TolerancePolicy:
    """Defaults, then rules (later rules win), then a test's own marker."""

    defaults: Mapping[str, Tolerance]
    rules: tuple[ToleranceRule, ...] = ()

    def for_test(self, nodeid: str, marker: Optional[Mapping[str, Tolerance]] = None) -> dict[str, Tolerance]:
        chosen = dict(self.defaults)
        for rule in self.rules:
            # brackets are literal: in node ids they hold parameters (test_p[big]), not sets
            if fnmatch.fnmatchcase(nodeid, rule.pattern.replace("[", "[[]")):
                chosen.update(rule.tolerances)
        if marker:
            chosen.update(marker)
        return chosen


def default_policy(overrides: Iterable[tuple[str, str]] = ()) -> TolerancePolicy:
    """The documented defaults with ``(figure, spec)`` overrides applied in order."""
    defaults = dict(DEFAULTS)
    for figure, spec in overrides:
        defaults.update(parse_figure_tolerances({figure: spec}, defaults, "tolerance"))
    return TolerancePolicy(defaults)
