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


def test_hypothesis_strategy_cache_cleared_when_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    fake = types.ModuleType("hypothesis.strategies._internal.utils")
    fake.clear_cache = lambda: calls.append("hypothesis")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hypothesis.strategies._internal.utils", fake)
    clear_bounded_caches()
    assert calls == ["hypothesis"]


def test_a_failing_clearer_neither_raises_nor_stops_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("a private hook that changed")

    cleanups = getattr(typing, "_cleanups")  # noqa: B009 - private: mypy does not know it
    monkeypatch.setattr(typing, "_cleanups", [broken, lambda: calls.append("after"), *cleanups])
    clear_bounded_caches()
    assert calls == ["after"]
