"""Every ``--memguard-*`` option and its ``memguard_*`` ini twin, resolved once into frozen settings."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Optional

import pytest

from .limits import Limit, LimitError, parse_limit_lines

__all__ = ["Settings", "add_options"]

DEFAULT_TOP = 10


@dataclass(frozen=True)
class Settings:
    """What the user asked for; command line beats ini, ini beats defaults."""

    enabled: bool = False
    trace: bool = False
    top: int = DEFAULT_TOP
    limits: dict[str, Optional[Limit]] = field(default_factory=dict)

    @property
    def measure_all(self) -> bool:
        """Every test is measured: ``--memguard`` or a global limit asks for it."""
        return self.enabled or bool(self.limits)

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        def flag(name: str) -> bool:
            value = config.getoption(name)
            return bool(config.getini(name)) if value is None else bool(value)

        top_option = config.getoption("memguard_top")
        top = top_option if top_option is not None else _non_negative_int(config.getini("memguard_top"), "memguard_top")
        try:
            limits = parse_limit_lines(config.getini("memguard_limits"), "ini option memguard_limits")
            limits.update(parse_limit_lines(config.getoption("memguard_limit") or [], "--memguard-limit"))
        except LimitError as exc:
            raise pytest.UsageError(f"memguard: {exc}") from None
        return cls(enabled=flag("memguard"), trace=flag("memguard_trace"), top=top, limits=limits)


def _non_negative_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise pytest.UsageError(f"memguard: {name} must be a whole number >= 0, got {value!r}")
    return number


def _top_type(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value!r}")
    return number


def add_options(parser: pytest.Parser) -> None:
    """Register the flags and their ini twins (each flag's help names its twin)."""
    group = parser.getgroup("memguard", "memory measurement and limits (pytest-memguard)")
    group.addoption(
        "--memguard",
        action="store_true",
        default=None,
        help="measure peak and retained memory of every test. ini: memguard",
    )
    group.addoption(
        "--memguard-trace",
        action="store_true",
        default=None,
        dest="memguard_trace",
        help="also measure the Python heap with tracemalloc (slower). ini: memguard_trace",
    )
    group.addoption(
        "--memguard-top",
        type=_top_type,
        default=None,
        metavar="N",
        dest="memguard_top",
        help=f"show the N heaviest tests by peak and by retained memory (0: none; default {DEFAULT_TOP}). "
        "ini: memguard_top",
    )
    group.addoption(
        "--memguard-limit",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        dest="memguard_limit",
        help="a limit for every test, e.g. 'peak=500 MB'; repeatable; keys: peak, retained, heap_peak, "
        "heap_retained, fds. Markers override it. ini: memguard_limits (one per line)",
    )
    parser.addini("memguard", "measure the memory of every test (like --memguard)", type="bool", default=False)
    parser.addini("memguard_trace", "also measure the Python heap with tracemalloc", type="bool", default=False)
    parser.addini("memguard_top", "how many heaviest tests the summary shows", default=str(DEFAULT_TOP))
    parser.addini("memguard_limits", "limits for every test, one KEY=VALUE per line", type="linelist", default=[])
