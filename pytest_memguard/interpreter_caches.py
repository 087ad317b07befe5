"""Bounded caches that fill over many runs, emptied before each reading of a leak check. No pytest here.

A cache with a size limit that gains an entry or two per run keeps growing for as many runs
as it has room: typing's caches (``functools.lru_cache``, 128 entries per function: a class
made per run and put in ``typing.List[...]`` adds one), ``re``'s compiled patterns (512),
hypothesis' strategy cache (1,024) and its pool of choice constraints (4,096: a property test
of python-dateutil's was confirmed as leaking while it filled, as hypothesis met new
examples), and CPython's type attribute cache (4,096 slots), which
keeps the name of each lookup it caches alive: a name built at run time (hypothesis'
``getattr(data, f"draw_{kind}")``, ``"cached_" + name``) is a new string at every call and can
take a slot of its own, so its tests kept ~20 more strings a run for some 80 runs, up to
~256 KiB in all. Over the few re-runs of a leak check that growth is
steady and looks like a leak: on attrs' own suite 24 tests were confirmed as leaking.
CPython's own leak hunter (``regrtest -R``) empties such caches between its runs for the
same reason; so do we, before each sample. They are memoisations: emptied, they are only
filled again. Unbounded caches are left alone: one of those growing is a leak.
"""

from __future__ import annotations

import sys
from typing import Callable

__all__ = ["clear_bounded_caches"]


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
