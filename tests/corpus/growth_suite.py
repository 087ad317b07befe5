"""The growth corpus: one suite in two versions, v1 and v2 (``MEMGUARD_CORPUS=v1|v2``).

v2 regresses some tests (by 1.05x, 1.2x, 2x, 10x, +1 MiB, +50 MiB; in peak and in
retained memory; through Python objects and through raw native ``malloc``) and
leaves the others alone, or changes their code without changing their memory.
Each test's name says what v2 does to it, so a script can score the gate:
``regress_<kind>_<figure>_<change>`` must be caught, ``same_*`` must not.

Run it by path (its name does not match ``test_*.py`` on purpose, so the project's
own suite does not collect it): ``pytest --memguard tests/corpus/growth_suite.py``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

import pytest

V2 = os.environ.get("MEMGUARD_CORPUS", "v1") == "v2"
MIB = 1024 * 1024
BASE = 8 * MIB
CHANGES = {
    "x1.05": (1.05, 0),
    "x1.2": (1.2, 0),
    "x2": (2, 0),
    "x10": (10, 0),
    "plus1MiB": (1, MIB),
    "plus50MiB": (1, 50 * MIB),
}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]
_KEPT: list[object] = []


def python_memory(size: int) -> list[bytes]:
    """Python objects tracemalloc sees: 64 KiB bytes objects with every page written
    (``bytes(n)`` would come from calloc and might never touch its pages)."""
    chunk = 64 * 1024
    return [b"\x01" * chunk for _ in range(max(1, size // chunk))]


def native_memory(size: int) -> int:
    """Raw C memory tracemalloc cannot see: malloc + memset, never registered with Python."""
    pointer = _libc.malloc(size)
    assert pointer
    ctypes.memset(pointer, 1, size)
    return int(pointer)


def use(kind: str, figure: str, *sizes: int) -> None:
    """Allocate every size (all alive at once), then keep or release them."""
    if kind == "python":
        blocks: list[object] = [python_memory(size) for size in sizes]
        if figure == "retained":
            _KEPT.extend(blocks)
        del blocks
    else:
        pointers = [native_memory(size) for size in sizes]
        for pointer in pointers:
            if figure == "retained":
                _KEPT.append(pointer)  # never freed: a native leak
            else:
                _libc.free(pointer)


@pytest.mark.parametrize("kind", ["python", "native"])
@pytest.mark.parametrize("figure", ["peak", "retained"])
@pytest.mark.parametrize("change", list(CHANGES))
def test_regress(kind: str, figure: str, change: str) -> None:
    factor, extra = CHANGES[change]
    size = int(BASE * factor) + extra if V2 else BASE
    use(kind, figure, size)


@pytest.mark.parametrize("kind", ["python", "native"])
@pytest.mark.parametrize("figure", ["peak", "retained"])
def test_same(kind: str, figure: str) -> None:
    use(kind, figure, BASE)


@pytest.mark.parametrize("kind", ["python", "native"])
@pytest.mark.parametrize("figure", ["peak", "retained"])
def test_same_memory_new_code(kind: str, figure: str) -> None:
    """v2 reaches the same memory in two allocations instead of one."""
    if V2:
        use(kind, figure, BASE // 2, BASE // 2)
    else:
        use(kind, figure, BASE)


def test_same_small() -> None:
    assert sum(range(1000)) == 499500


def test_same_small_new_code() -> None:
    assert (sum(i for i in range(1000)) if V2 else sum(range(1000))) == 499500
