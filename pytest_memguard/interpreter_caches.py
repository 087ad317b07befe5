"""Bounded caches that fill over many runs, emptied before each reading of a leak check. No pytest here.

A cache with a size limit that gains an entry or two per run keeps growing for as many runs
as it has room: typing's caches (``functools.lru_cache``, 128 entries per function: a class
made per run and put in ``typing.List[...]`` adds one), ``re``'s compiled patterns (512),
hypothesis' strategy cache (1,024), its pool of choice constraints (4,096) and its cache of
the constants each set of constraints permits (1,024; two property tests of python-dateutil's
were confirmed as leaking while these filled, as hypothesis met new examples), and CPython's
type attribute cache (4,096 slots), which keeps the name of each lookup it caches alive: a
name built at run time (hypothesis' ``getattr(data, f"draw_{kind}")``, ``"cached_" + name``)
is a new string at every call and can take a slot of its own, so its tests kept ~20 more
strings a run for some 80 runs, up to ~256 KiB in all. Over the few re-runs of a leak check
that growth is steady and looks like a leak: on attrs' own suite 24 tests were confirmed as
leaking.
CPython's own leak hunter (``regrtest -R``) empties such caches between its runs for the
same reason; so do we, before each sample. They are memoisations: emptied, they are only
filled again. Unbounded caches are left alone: one of those growing is a leak.

``re``'s cache also makes suspects of tests run once: a test that matches a pattern new to the
session (``pytest.raises(match=...)``, ``assertRaisesRegex``) keeps its compiled form, 1-2.5 KiB
of C heap, where the screening bar is 1 KiB (3 of more-itertools' 15 suspects). Its entries are
kept in the order they were compiled, so those a test added since a mark (:func:`mark_patterns`)
can be told (:func:`patterns_since`) and taken back (:func:`forget_patterns`) before the test is
judged, without re-running it.
"""

from __future__ import annotations

import sys
from typing import Callable, NamedTuple, Optional

__all__ = ["PatternMark", "clear_bounded_caches", "forget_patterns", "mark_patterns", "patterns_since"]


def _clearers() -> list[Callable[[], object]]:
    """The clear functions of the caches named above that the process has loaded."""
    clearers: list[Callable[[], object]] = []
    typing = sys.modules.get("typing")
    clearers += getattr(typing, "_cleanups", [])  # each of typing's caches registers its cache_clear there
    # 3.13 empties the type cache (and others) in _clear_internal_caches; _clear_type_cache
    # before (deprecated there). regrtest -R calls them between its runs.
    clear_type_cache = getattr(sys, "_clear_internal_caches", None) or getattr(sys, "_clear_type_cache", None)
    if callable(clear_type_cache):
        clearers.append(clear_type_cache)
    re = sys.modules.get("re")
    if re is not None:
        clearers.append(re.purge)
    # hypothesis' pool of choice constraints (an LRU of 4,096, one per thread, under .cache):
    # POOLED_CONSTRAINTS_CACHE in recent releases, POOLED_KWARGS_CACHE in older ones
    conjecture_data = sys.modules.get("hypothesis.internal.conjecture.data")
    for name in ("POOLED_CONSTRAINTS_CACHE", "POOLED_KWARGS_CACHE"):
        clear_pool = getattr(getattr(getattr(conjecture_data, name, None), "cache", None), "clear", None)
        if callable(clear_pool):
            clearers.append(clear_pool)
            break
    # and its cache of the constants each set of constraints permits (an LRU of 1,024, one per
    # thread, under .cache; in 6.170, not in 6.131), which hypothesis empties when it finds new ones
    constants = getattr(sys.modules.get("hypothesis.internal.conjecture.providers"), "CONSTANTS_CACHE", None)
    clear_constants = getattr(getattr(constants, "cache", None), "clear", None)
    if callable(clear_constants):
        clearers.append(clear_constants)
    strategy_cache = sys.modules.get("hypothesis.strategies._internal.utils")
    # clear_strategy_cache in recent releases (6.170), clear_cache in older ones (6.130)
    for name in ("clear_strategy_cache", "clear_cache"):
        clear = getattr(strategy_cache, name, None)
        if callable(clear):
            clearers.append(clear)
            break
    return clearers


def clear_bounded_caches() -> None:
    """Empty the bounded caches listed in the module's docstring that the process has loaded."""
    for clear in _clearers():
        try:
            clear()
        except Exception:  # another library's private hook: it must never end a check
            continue


class PatternMark(NamedTuple):
    """Where ``re``'s cache stood: ``in_order``, the dict that keeps its entries in the order they
    were compiled (``_cache2`` from 3.12, ``_cache`` before); ``newest``, its last key then
    (``None``: it was empty); ``compiled``, the length of ``_cache`` then."""

    in_order: dict[object, object]
    newest: object
    compiled: int


def mark_patterns() -> Optional[PatternMark]:
    """Mark ``re``'s cache now (~0.5 µs); ``None`` where it is not laid out as expected."""
    re = sys.modules.get("re")
    cache = getattr(re, "_cache", None)
    in_order = getattr(re, "_cache2", cache)
    if not isinstance(cache, dict) or not isinstance(in_order, dict):
        return None
    return PatternMark(in_order, next(reversed(in_order), None), len(cache))


def patterns_since(mark: Optional[PatternMark]) -> list[object]:
    """The keys of the patterns compiled since ``mark``, newest first. Empty where that cannot be
    told for sure: the marked entry gone (the cache cycled or was purged), or, from 3.12, entries
    put back from its LRU half (``_cache``) rather than compiled, which ``_cache``'s length tells."""
    re = sys.modules.get("re")
    cache = getattr(re, "_cache", None)
    if mark is None or not isinstance(cache, dict) or getattr(re, "_cache2", cache) is not mark.in_order:
        return []
    added = []
    try:
        for key in reversed(mark.in_order):
            if key is mark.newest:  # the very key object: one dropped and compiled again is new
                break
            added.append(key)
        else:
            if mark.newest is not None:  # the marked entry is gone: cycled out or purged
                return []
    except RuntimeError:  # another thread compiled one meanwhile ("changed size during iteration")
        return []
    if mark.in_order is not cache and len(cache) - mark.compiled != len(added):
        return []
    return added


def forget_patterns(keys: list[object]) -> None:
    """Take these keys' patterns out of ``re``'s cache (both halves from 3.12)."""
    re = sys.modules.get("re")
    for name in ("_cache", "_cache2"):
        cache = getattr(re, name, None)
        if isinstance(cache, dict):
            for key in keys:
                cache.pop(key, None)
