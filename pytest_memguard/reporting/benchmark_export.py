"""Per-test figures for github-action-benchmark (``--memguard-benchmark-json``). No pytest here.

`benchmark-action/github-action-benchmark`_ charts a value per benchmark over commits
and alerts when one gets worse. Its ``tool: customSmallerIsBetter`` input is a JSON
list of entries, each::

    {"name": str, "unit": str, "value": number, "range": str (optional), "extra": str (optional)}

``name`` identifies the series (one chart each), ``value`` must be a number, ``extra``
is free text shown in the chart's tooltip (lines separated by ``\\n``); the action
keeps only these five keys. We write one entry per test and figure, with no ``range``::

    [
      {
        "name": "tests/test_io.py::test_load (peak RSS)",
        "unit": "bytes",
        "value": 20971520,
        "extra": "20.0 MiB\\nverdict: regression\\nbaseline: 10.0 MiB (tolerance 768.0 KiB)"
      },
      ...
    ]

Figures: peak RSS and retained RSS always, the peak and retained Python heap when
tracing was on (``--memguard-trace``). Values are integers in bytes (retained figures
may be negative; smaller is still better). Entries are sorted by test id, then in the
order above, so the file diffs well. The action refuses an empty list, so a run that
measured nothing gives ``[]`` and the workflow step should be skipped for it.

.. _benchmark-action/github-action-benchmark: https://github.com/benchmark-action/github-action-benchmark
"""

from __future__ import annotations

import json
from typing import Sequence, Union

from ..record import MemoryRecord
from ..tolerance import FIGURES
from ..units import format_size

__all__ = ["UNIT", "benchmark_entries", "render_benchmark_json"]

UNIT = "bytes"

Entry = dict[str, Union[str, int]]


def benchmark_entries(records: Sequence[MemoryRecord]) -> list[Entry]:
    """The entries, as Python objects (one per test and measured figure)."""
    entries: list[Entry] = []
    for record in sorted(records, key=lambda r: r.nodeid):
        moved = {finding.figure: finding for finding in record.findings}
        for figure, label in FIGURES.items():
            value = getattr(record.measurement, figure)
            if value is None:
                continue
            extra = [format_size(value, signed=figure.endswith("retained")), f"verdict: {record.verdict}"]
            finding = moved.get(figure)
            if finding is not None:
                extra.append(f"baseline: {format_size(finding.baseline)} (tolerance {format_size(finding.threshold)})")
            entries.append(
                {"name": f"{record.nodeid} ({label})", "unit": UNIT, "value": int(value), "extra": "\n".join(extra)}
            )
    return entries


def render_benchmark_json(records: Sequence[MemoryRecord]) -> str:
    """The JSON text for ``tool: customSmallerIsBetter``.

    Non-ASCII is written as ``\\u`` escapes, so any test id (even one holding a lone
    surrogate) gives valid UTF-8 JSON.
    """
    return json.dumps(benchmark_entries(records), indent=2, ensure_ascii=True) + "\n"
