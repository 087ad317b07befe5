"""Machine-readable results (``--memguard-json``), read back by ``memguard compare``.

Schema 1 (a new key may appear in a minor release; a changed meaning bumps ``schema``)::

    {
      "schema": 1,
      "tool": "pytest-memguard",
      "version": "0.1.0",
      "environment": {"implementation": "CPython", "platform": "linux-x86_64", "python": "3.11"},
      "tests": {
        "<node id>": {
          "figures": {"rss_peak": 123, "rss_retained": 0, "heap_peak": 45, "heap_retained": 6, "fds_gained": 0},
          "verdict": "ok | over_limit | regression | improvement | new",
          "partial_run": true,
          "message": "why, when not ok",
          "findings": [{"figure": "rss_peak", "baseline": 100, "current": 123, "tolerance": 10, "kind": "regression"}],
          "leak": {"confirmed": true, "runs": 6, "bytes_per_run": 1024, "objects_per_run": 12.0, "fds_per_run": 0.0,
                   "rss_per_run": 0, "heap_per_run": 1024, "malloc_per_run": 0, "indicators": ["steady_growth"],
                   "pressure": 0.05, "sites": [{"where": "t.py:3", "bytes_per_run": 1024, "count_per_run": 1}],
                   "note": ""},
          "analysis": {"retained_bytes": 5006, "retained_blocks": 37, "allocated_bytes": 5006, "allocated_blocks": 37,
                       "freed_bytes": 0, "freed_blocks": 0, "traced_bytes": 35148, "peak_bytes": 31493975,
                       "rss_bytes": null, "fragmentation": null, "efficiency": 0.99,
                       "top_by_size": [{"where": "t.py:4 <- t.py:11", "filename": "/abs/t.py", "lineno": 4,
                                        "component": "t", "size": 458, "count": 1, "average": 458.0}],
                       "top_by_count": [...], "peak_sites": [...],
                       "by_component": [{"name": "t", "size": 534, "count": 3}],
                       "by_operation": [{"name": "fixture big", "size": 458, "count": 1}, ...],
                       "peak_by_operation": [...], "operations_labelled": true,
                       "size_classes": [{"name": "tiny", "size": 436, "count": 11}, ...],
                       "recommendations": ["..."], "stack_depth": 3, "exact_sizes": true,
                       "peak_snapshot_bytes": 31493807}
        }
      },
      "gate": null | {"baseline": "<path>", "failed": false,
               "regressions": 0, "improvements": 0, "new": 0, "not_run": 0}
    }

Figures are integers in bytes (``fds_gained``: a count); figures not measured are left out.
``partial_run`` (added in schema 1, present only when true): the test did not pass on its own
(failed, errored, skipped in its body, xfailed, a failed subtest), so its figures are of a run
cut short; ``memguard compare`` leaves it out, as the gate in the run does.

``analysis`` (added in schema 1; only for a test flagged ``over_limit``, ``leak`` or
``regression`` that could be re-run once more): ``AllocationAnalysis.as_dict()`` of that
run, at most five entries per list, ``size_classes`` all five; ``peak_sites`` are what was
held (above the start) in the snapshot nearest the peak, taken when the traced heap was
``peak_snapshot_bytes`` above the start. ``by_operation`` (kept) and ``peak_by_operation`` (near
the peak) total the test function (``test_x``, ``Class.test_x``), each fixture (``fixture big``)
and ``<other>``. Sizes in bytes (``*_sites`` and groups: signed growth), ``where`` innermost
frame first. docs/allocation-analysis.md has every field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Collection, Mapping, Optional, Sequence

from ..baseline import current_environment
from ..gate import GateResult
from ..record import MemoryRecord

__all__ = ["JSON_SCHEMA", "ResultsError", "load_results", "render_json"]

JSON_SCHEMA = 1


class ResultsError(ValueError):
    """A results file that cannot be read; the message names the file and the problem."""


def _figures(record: MemoryRecord) -> dict[str, int]:
    return {name: value for name, value in record.measurement._asdict().items() if value is not None}


def render_json(
    records: Sequence[MemoryRecord],
    *,
    version: str,
    gate: Optional[GateResult] = None,
    baseline: Optional[Path] = None,
    partial: Collection[str] = (),
) -> str:
    """``partial``: the tests that did not pass on their own (``partial_run``)."""
    tests: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: r.nodeid):
        entry: dict[str, Any] = {"figures": _figures(record), "verdict": record.verdict}
        if record.nodeid in partial:
            entry["partial_run"] = True
        if record.message:
            entry["message"] = record.message
        if record.findings:
            entry["findings"] = [
                {
                    "figure": f.figure,
                    "baseline": f.baseline,
                    "current": f.current,
                    "tolerance": f.threshold,
                    "kind": f.kind,
                }
                for f in record.findings
            ]
        if record.leak is not None:
            leak = record.leak
            entry["leak"] = {
                "confirmed": leak.confirmed,
                "runs": leak.runs,
                "bytes_per_run": leak.bytes_per_run,
                "rss_per_run": leak.rss_per_run,
                "heap_per_run": leak.heap_per_run,
                "malloc_per_run": leak.malloc_per_run,
                "objects_per_run": leak.blocks_per_run,
                "fds_per_run": leak.fds_per_run,
                "indicators": list(leak.indicators),
                "pressure": leak.pressure,
                "sites": [{"where": s.where, "bytes_per_run": s.size, "count_per_run": s.count} for s in leak.sites],
                "note": leak.note,
            }
        if record.analysis is not None:
            entry["analysis"] = record.analysis.as_dict()
        tests[record.nodeid] = entry
    gate_data = None
    if gate is not None:
        gate_data = {
            "baseline": str(baseline) if baseline else None,
            "failed": gate.failed,
            "regressions": len(gate.regressions),
            "improvements": len(gate.improvements),
            "new": len(gate.new),
            "not_run": len(gate.not_run),
        }
    document = {
        "schema": JSON_SCHEMA,
        "tool": "pytest-memguard",
        "version": version,
        "environment": current_environment(),
        "tests": tests,
        "gate": gate_data,
    }
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def load_results(path: Path) -> tuple[dict[str, dict[str, int]], Mapping[str, str], list[str]]:
    """``({nodeid: figures}, environment, partial)`` from a ``--memguard-json`` file; the tests
    marked ``partial_run`` are not among the figures but listed in ``partial``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such file (write one with pytest --memguard --memguard-json {path})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not a readable JSON results file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("tests"), dict):
        raise ResultsError(f"{path}: not a pytest-memguard results file (no 'tests' mapping)")
    schema = data.get("schema")
    if not isinstance(schema, int) or schema > JSON_SCHEMA:
        raise ResultsError(
            f"{path}: results schema {schema!r} is not one this pytest-memguard reads (<= {JSON_SCHEMA})"
        )
    tests: dict[str, dict[str, int]] = {}
    partial: list[str] = []
    for nodeid, entry in data["tests"].items():
        figures = entry.get("figures") if isinstance(entry, dict) else None
        if not isinstance(figures, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in figures.values()
        ):
            raise ResultsError(f"{path}: test {nodeid!r} has no valid 'figures' mapping of integers")
        if entry.get("partial_run") is True:
            partial.append(str(nodeid))
        else:
            tests[str(nodeid)] = figures
    environment = data.get("environment") if isinstance(data.get("environment"), dict) else {}
    return tests, {str(k): str(v) for k, v in (environment or {}).items()}, sorted(partial)
