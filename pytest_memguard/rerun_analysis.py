"""Where a flagged test's bytes went: one more hidden run of it under the allocation analyzer.

Only a test whose verdict is ``over_limit``, ``leak`` or ``regression`` pays for this, after it
has been judged, so tests that need no explanation cost nothing. The run is a full
setup/call/teardown with its reports, warnings and output dropped (:func:`rerun_unlogged`), and
watched by :func:`memory_analysis` with ``peak_sites=True``: a peak limit is usually broken by
memory the test no longer holds at teardown, so retained sites alone would name nothing.
"""

from __future__ import annotations

import gc
from typing import Optional

import pytest

from .allocation_analyzer import AllocationAnalysis, memory_analysis
from .leak_check import rerun_unlogged
from .record import ANALYSIS_TOP, Verdict
from .tracker import Tracker

__all__ = ["ANALYSED_VERDICTS", "analyse_flagged"]

ANALYSED_VERDICTS = frozenset({Verdict.OVER_LIMIT, Verdict.LEAK, Verdict.REGRESSION})
_MARKER = "memguard"  # session.MARKER (session imports this module)


def _rerun_forbidden(item: pytest.Item) -> bool:
    """``@pytest.mark.memguard(leak=False)`` (or ``leak="off"``) on the nearest marker that says ``leak``:
    the test has side effects and must never run twice. ``--memguard-leaks=off`` does not forbid it."""
    for mark in item.iter_markers(_MARKER):
        if "leak" in mark.kwargs:
            return mark.kwargs["leak"] in (False, "off")
    return False


def analyse_flagged(
    item: pytest.Item, nextitem: Optional[pytest.Item], verdict: str, tracker: Tracker, *, stack_depth: int
) -> tuple[Optional[AllocationAnalysis], str]:
    """The analysis of one more run of a test that passed its own run, and a note when there is none.

    ``(None, "")``: not analysed by design (a verdict that needs no explanation, or a marker that
    forbids re-running). ``(None, note)``: the re-run failed or the analysis broke; never raises
    (but lets ``pytest.exit`` through).
    """
    if verdict not in ANALYSED_VERDICTS or _rerun_forbidden(item):
        return None, ""
    try:
        with memory_analysis(top=ANALYSIS_TOP, stack_depth=stack_depth, peak_sites=True) as measured:
            reports = rerun_unlogged(item, nextitem)
    except pytest.exit.Exception:
        raise
    except Exception as exc:  # an analysis that breaks must never end the session
        return None, f"no allocation analysis ({type(exc).__name__}: {exc})"
    finally:
        # As after a leak-check run: what this run freed must not sit in the allocator, or the
        # next test reuses resident pages and its peak RSS reads as nothing.
        gc.collect()
        tracker.trim()
    if not all(report.passed for report in reports):
        return None, "no allocation analysis: the test did not pass when re-run"
    return measured.result, ""
