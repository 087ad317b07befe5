"""Sizes as people write them, and as we print them.

One convention, everywhere:

* Parsing accepts a plain integer (bytes) or a string ``"<number> <unit>"``.
  ``kB``/``KB``, ``MB``, ``GB``, ``TB`` are decimal (powers of 1000), as SI says;
  ``KiB``, ``MiB``, ``GiB``, ``TiB`` are binary (powers of 1024), as IEC says.
  Units are case-insensitive (``"50 mb"`` is 50 MB). Bare ``K``/``M``/``G`` are
  refused because people mean different things by them.
* Formatting always uses binary units (``"1.5 MiB"``), so a figure reads the same
  in the terminal, markdown, JUnit and error messages.
"""

from __future__ import annotations

import re

__all__ = ["SizeError", "format_size", "parse_size"]

_UNITS: dict[str, int] = {
    "b": 1,
    "byte": 1,
    "bytes": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*(?P<unit>[a-z]*)\s*$", re.I)
_ACCEPTED = "B, KB, MB, GB, TB (x1000) or KiB, MiB, GiB, TiB (x1024)"
_FORMAT_STEPS = (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


class SizeError(ValueError):
    """A size that cannot be understood; the message says what is accepted."""


def parse_size(value: object, *, allow_negative: bool = False) -> int:
    """Return ``value`` in bytes: ``"50 MB"`` → 50_000_000, ``"1 MiB"`` → 1_048_576.

    Raises :class:`SizeError` with a message a person can act on.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SizeError(f"{value!r} is not a size: use a number of bytes or a string such as '50 MB' or '512 KiB'")
    if isinstance(value, (int, float)):
        number, multiplier = float(value), 1
    else:
        match = _SIZE_RE.match(value)
        if match is None:
            raise SizeError(f"{value!r} is not a size: write a number and a unit, such as '50 MB' or '512 KiB'")
        unit = match["unit"].lower() or "b"
        if unit not in _UNITS:
            raise SizeError(f"{value!r}: unknown unit {match['unit']!r}; use {_ACCEPTED}")
        number, multiplier = float(match["number"]), _UNITS[unit]
    if number != number or number in (float("inf"), float("-inf")):
        raise SizeError(f"{value!r} is not a finite size")
    if number < 0 and not allow_negative:
        raise SizeError(f"{value!r}: a size cannot be negative")
    return round(number * multiplier)


def format_size(num_bytes: int | float, *, signed: bool = False) -> str:
    """Format bytes with binary units: 1536 → ``"1.5 KiB"``; ``signed`` adds ``+``."""
    sign = "-" if num_bytes < 0 else ("+" if signed and num_bytes > 0 else "")
    magnitude = abs(num_bytes)
    for unit, factor in _FORMAT_STEPS:
        if magnitude >= factor:
            return f"{sign}{magnitude / factor:.1f} {unit}"
    return f"{sign}{int(magnitude)} B"
