"""Where a flagged test's bytes went: one more hidden run of it under the allocation analyzer.

Only a test whose verdict is ``over_limit``, ``leak`` or ``regression`` pays for this, after it
has been judged, so tests that need no explanation cost nothing. The run is a full
setup/call/teardown with its reports, warnings and output dropped (:func:`rerun_unlogged`), and
watched by :func:`memory_analysis` with ``peak_sites=True``: a peak limit is usually broken by
memory the test no longer holds at teardown, so retained sites alone would name nothing.

Its ``operations`` (:func:`operations_of`) map every source line of the test function and of
each fixture it uses to ``test_x`` / ``Class.test_x`` / ``fixture name``, so the analysis totals
bytes per test function and fixture, also for what a library allocated on their behalf.
"""

from __future__ import annotations

import dis
import gc
import inspect
from types import CodeType
from typing import Any, Iterator, Mapping, Optional

import pytest

from .allocation_analyzer import AllocationAnalysis, memory_analysis, traced_from_start
from .leak_check import rerun_unlogged
from .record import ANALYSIS_TOP, Verdict
from .tracker import Tracker

__all__ = ["ANALYSED_VERDICTS", "analyse_flagged", "operations_of"]

ANALYSED_VERDICTS = frozenset({Verdict.OVER_LIMIT, Verdict.LEAK, Verdict.REGRESSION})


def _code_of(function: object) -> Optional[CodeType]:
    """The code object of a function, through decorators (``functools.wraps``) and bound methods."""
    if not callable(function):
        return None
    try:
        function = inspect.unwrap(function)
    except ValueError:  # a cycle of __wrapped__
        return None
    code = getattr(getattr(function, "__func__", function), "__code__", None)
    return code if isinstance(code, CodeType) else None


def _lines(code: CodeType) -> range:
    """From the ``def`` (or its first decorator) to the last line of the body or of anything nested in it."""
    last, nested = code.co_firstlineno, [code]
    while nested:
        inner = nested.pop()
        last = max([last, *(line for _, line in dis.findlinestarts(inner) if line is not None)])
        nested += [const for const in inner.co_consts if isinstance(const, CodeType)]
    return range(code.co_firstlineno, last + 1)


def _functions(item: pytest.Item) -> Iterator[tuple[object, str]]:
    """``(function, label)``: each fixture the item uses, then its test function; nothing for other items."""
    # pytest keeps the resolved FixtureDefs only here (private); anything unexpected gives no labels.
    info = getattr(item, "_fixtureinfo", None)
    definitions: Any = getattr(info, "name2fixturedefs", None)
    if isinstance(definitions, Mapping):
        for name, chain in definitions.items():
            for definition in chain if isinstance(chain, (list, tuple)) else ():  # overrides: the chain
                yield getattr(definition, "func", None), f"fixture {name}"
    if isinstance(item, pytest.Function):
        # Not item.obj: after teardown (unittest) it would make a new instance and re-read its markers.
        function = getattr(item, "_obj", None) or getattr(item.cls or item.module, item.originalname, None)
        yield function, f"{item.cls.__qualname__}.{item.originalname}" if item.cls else item.originalname
        # unittest's own set-up and tear-down are the fixtures of a TestCase
        for hook in ("setUp", "tearDown", "setUpClass", "tearDownClass", "asyncSetUp", "asyncTearDown"):
            defined = getattr(item.cls, hook, None) if item.cls is not None else None
            if defined is not None and not getattr(defined, "__module__", "").startswith("unittest"):
                yield defined, f"{item.cls.__qualname__}.{hook}"


def operations_of(item: pytest.Item) -> dict[str, str]:
    """``{"file:line": label}`` for every line of the item's test function and fixtures; ``{}`` if none.

    Keys as tracemalloc records frames (``co_filename``). Cheap (code objects, no source read),
    and only flagged tests pay for it.
    """
    operations: dict[str, str] = {}
    try:
        for function, label in _functions(item):
            code = _code_of(function)
            if code is not None:
                operations.update((f"{code.co_filename}:{line}", label) for line in _lines(code))
    except Exception:  # a custom item or a pytest internal that changed: fewer labels, never a broken run
        return operations
    return operations


def analyse_flagged(
    item: pytest.Item, nextitem: Optional[pytest.Item], verdict: str, tracker: Tracker, *, stack_depth: int
) -> tuple[Optional[AllocationAnalysis], str]:
    """The analysis of one more run of a test that passed its own run, and a note when there is none.

    ``(None, "")``: not analysed by design (a verdict that needs no explanation); the caller does
    not call it for a test that must not be re-run (``leak=False``). ``(None, note)``: the re-run
    failed or the analysis broke; never raises (but lets ``pytest.exit`` through).
    """
    if verdict not in ANALYSED_VERDICTS:
        return None, ""
    operations = operations_of(item) or None  # before tracing starts: its cost is not the test's
    try:
        with memory_analysis(
            top=ANALYSIS_TOP,
            stack_depth=stack_depth,
            operations=operations,
            peak_sites=True,
            read_rss=traced_from_start(),  # --memguard-trace starts at the first test: RSS/traced is moot
        ) as measured:
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
