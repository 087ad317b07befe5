"""Bounded caches emptied before each leak-check sample (pure units)."""

from __future__ import annotations

import gc
import sys
import types
import typing
import weakref

import pytest

from pytest_memguard.interpreter_caches import clear_bounded_caches


def test_typing_cache_lets_go_of_what_it_held() -> None:
    made = type("Made", (), {})
    assert typing.List[made] is typing.List[made]  # memoised: the cache holds the class
    gone = weakref.ref(made)
    del made
    gc.collect()
    assert gone() is not None
    clear_bounded_caches()
    gc.collect()
    assert gone() is None


def test_type_attribute_cache_lets_go_of_names_built_at_run_time() -> None:
    """CPython's type cache keeps a reference to each looked-up name (hypothesis builds
    ``f"draw_{kind}"`` at every call: a new string each time, kept until its slot is reused)."""
    holder = type("Holder", (), {})
    name = "".join(["draw_", "boolean"])  # built at run time: a string of its own, not interned
    alone = sys.getrefcount(name)
    getattr(holder, name, None)  # a miss is cached too
    assert sys.getrefcount(name) > alone
    clear_bounded_caches()
    assert sys.getrefcount(name) == alone


@pytest.mark.parametrize("name", ["clear_strategy_cache", "clear_cache"])  # hypothesis 6.170, 6.130
def test_hypothesis_strategy_cache_cleared_when_loaded(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    calls: list[str] = []
    fake = types.ModuleType("hypothesis.strategies._internal.utils")
    setattr(fake, name, lambda: calls.append(name))
    monkeypatch.setitem(sys.modules, "hypothesis.strategies._internal.utils", fake)
    clear_bounded_caches()
    assert calls == [name]


def test_hypothesis_strategy_cache_really_cleared() -> None:
    strategies = pytest.importorskip("hypothesis.strategies")
    made = strategies.integers()
    assert strategies.integers() is made  # memoised
    clear_bounded_caches()
    assert strategies.integers() is not made


@pytest.mark.parametrize("name", ["POOLED_CONSTRAINTS_CACHE", "POOLED_KWARGS_CACHE"])  # hypothesis 6.170, 6.130
def test_hypothesis_constraint_pool_emptied_when_loaded(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """An LRU of 4,096 that fills as hypothesis meets new examples: python-dateutil's
    test_timespec_auto was confirmed as leaking 1.5 KiB a run while it filled."""
    pool = types.SimpleNamespace(cache={"constraints": 1})
    fake = types.ModuleType("hypothesis.internal.conjecture.data")
    setattr(fake, name, pool)
    monkeypatch.setitem(sys.modules, "hypothesis.internal.conjecture.data", fake)
    clear_bounded_caches()
    assert pool.cache == {}


def test_hypothesis_constants_cache_emptied_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    """An LRU of 1,024 (the constants each set of constraints permits) that fills as hypothesis
    meets new bounds: python-dateutil's test_rrule_roundtrip[pickle-disabled] (``st.datetimes``
    draws integers between bounds that change with each example) was confirmed as leaking
    ~600 B a run while it filled."""
    constants = types.SimpleNamespace(cache={("integer", (0, 9)): ((), ())})
    fake = types.ModuleType("hypothesis.internal.conjecture.providers")
    setattr(fake, "CONSTANTS_CACHE", constants)  # noqa: B010 - mypy does not know a module's attributes
    monkeypatch.setitem(sys.modules, "hypothesis.internal.conjecture.providers", fake)
    clear_bounded_caches()
    assert constants.cache == {}


def test_hypothesis_constants_cache_really_emptied() -> None:
    providers = pytest.importorskip("hypothesis.internal.conjecture.providers")
    constants = getattr(providers, "CONSTANTS_CACHE", None)
    if constants is None:
        pytest.skip("a hypothesis release without a constants cache")
    constants[("integer", ("memguard",))] = ((), ())
    clear_bounded_caches()
    assert len(constants.cache) == 0


def test_a_failing_clearer_neither_raises_nor_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("a private hook that changed")

    cleanups = getattr(typing, "_cleanups")  # noqa: B009 - private: mypy does not know it
    monkeypatch.setattr(typing, "_cleanups", [broken, lambda: calls.append("after"), *cleanups])
    clear_bounded_caches()
    assert calls == ["after"]


def test_patterns_compiled_since_a_mark_are_told_and_taken_back() -> None:
    import re

    from pytest_memguard.interpreter_caches import forget_patterns, mark_patterns, patterns_since

    re.compile("memguard-before-the-mark")  # in the cache before the mark
    mark = mark_patterns()
    assert mark is not None
    assert patterns_since(mark) == []
    re.search("memguard-before-the-mark", "x")  # a hit is not new
    first = re.compile("memguard-first-new-[0-9]+")
    second = re.compile("memguard-second-new-[a-z]+")
    added = patterns_since(mark)
    assert [key[1] for key in added] == ["memguard-second-new-[a-z]+", "memguard-first-new-[0-9]+"]  # type: ignore[index]
    gone = weakref.ref(first)
    del first
    forget_patterns(added)
    assert gone() is None  # the cache held it; nothing else does
    assert re.compile("memguard-second-new-[a-z]+") is not second  # compiled afresh: it was taken out
    assert re.compile("memguard-before-the-mark") in re._cache.values()  # type: ignore[attr-defined]


def test_patterns_since_a_mark_gives_nothing_when_the_cache_was_purged() -> None:
    import re

    from pytest_memguard.interpreter_caches import mark_patterns, patterns_since

    re.compile("memguard-marked-then-purged")
    mark = mark_patterns()
    re.purge()
    re.compile("memguard-after-the-purge")
    assert patterns_since(mark) == []  # the marked entry is gone: what is new cannot be told
    assert patterns_since(None) == []


def test_patterns_since_a_mark_gives_nothing_when_the_cache_changes_while_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import re

    from pytest_memguard.interpreter_caches import mark_patterns, patterns_since

    mark = mark_patterns()
    assert mark is not None

    class Changing(dict):  # type: ignore[type-arg]
        def __reversed__(self):  # type: ignore[no-untyped-def]
            raise RuntimeError("dictionary changed size during iteration")

    changing = Changing(mark.in_order)
    monkeypatch.setattr(re, "_cache2" if hasattr(re, "_cache2") else "_cache", changing)  # the in-order half
    assert patterns_since(mark._replace(in_order=changing)) == []  # and no error
