"""A small suite to see pytest-memguard at work: ``pytest --memguard examples/demo``.

One heavy test, one leaking test (re-run and confirmed as a leak) and one test that
breaks its memory limit: two failures on purpose, so the run ends with exit code 1
and says why.
"""

import unittest

import pytest

_CACHE = []


def test_heavy_but_tidy():
    """Peaks at ~120 MiB, gives it all back."""
    frames = [bytearray(8 * 1024 * 1024) for _ in range(15)]
    assert sum(len(frame) for frame in frames) == 120 * 1024 * 1024
    del frames


def test_leaks_into_a_module_cache():
    """Keeps 32 MiB alive in a module-level list after it ends."""
    _CACHE.append(bytearray(32 * 1024 * 1024))
    assert _CACHE


@pytest.mark.memguard(peak="50 MB")
def test_breaks_its_limit():
    """Allocates ~64 MiB against a 50 MB limit: fails with one readable line."""
    rows = bytearray(64 * 1024 * 1024)
    assert len(rows) == 64 * 1024 * 1024


@pytest.mark.memguard(peak="10 MiB", fds=0)
@pytest.mark.parametrize("count", [1_000, 10_000])
def test_within_limits(count):
    assert len(list(range(count))) == count


class TestUnittestStyleIsMeasuredToo(unittest.TestCase):
    def test_unittest_case(self):
        buffer = bytearray(24 * 1024 * 1024)
        self.assertEqual(len(buffer), 24 * 1024 * 1024)
