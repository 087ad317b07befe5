"""pytest-memguard: memory measurement, limits and a regression gate for pytest."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .allocation_analyzer import AllocationAnalysis, analyze, analyze_snapshots, memory_analysis
from .limits import Breach, Limit, LimitError
from .record import MemoryRecord, Verdict
from .tracker import Measurement, Tracker
from .units import SizeError, format_size, parse_size

try:
    __version__ = version("pytest-memguard")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "AllocationAnalysis",
    "Breach",
    "Limit",
    "LimitError",
    "Measurement",
    "MemoryRecord",
    "SizeError",
    "Tracker",
    "Verdict",
    "__version__",
    "analyze",
    "analyze_snapshots",
    "format_size",
    "memory_analysis",
    "parse_size",
]
