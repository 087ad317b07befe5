"""The leak corpus: real leaks (``test_leak_*``) and the usual false alarms (``test_clean_*``).

Run it by path (its name does not match ``test_*.py``, so the project's own suite does not
collect it): ``pytest --memguard tests/corpus/leak_suite.py``. benchmarks/leak_corpus.py
scores precision and recall from the ``memguard_verdict`` of each test.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import gc
import itertools
import logging
import os
import socket
import sys
import tempfile
import threading
import typing
from pathlib import Path
from typing import ClassVar

import pytest

try:
    from hypothesis import given, settings, strategies
except ImportError:
    given = None

KIB = 1024
MIB = 1024 * KIB
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]
# Keys start above CPython's small-int cache (-5..256): a cache keyed by small ints would
# slowly swap shared ints for allocated ones as its keys grow, which is not what we test.
_unbounded_keys = itertools.count(10_000)
_bounded_keys = itertools.count(10_000)
_dict_keys = itertools.count(10_000)

# -- leaks: each run keeps more ---------------------------------------------------------
LEAKED_LIST: list[object] = []
LEAKED_DICT: dict[int, object] = {}
CALLBACKS: list[object] = []
REGISTRY: list[object] = []
NATIVE: list[int] = []
HANDLES: list[object] = []


def test_leak_list_1kib_per_run_slow() -> None:
    LEAKED_LIST.append(os.urandom(KIB))


def test_leak_list_64kib_per_run() -> None:
    LEAKED_LIST.append(os.urandom(64 * KIB))


def test_leak_dict_1mib_per_run() -> None:
    LEAKED_DICT[next(_dict_keys)] = b"\x01" * MIB


def test_leak_list_50mib_per_run() -> None:
    LEAKED_LIST.append(b"\x02" * (50 * MIB))


def test_leak_many_small_objects() -> None:
    LEAKED_LIST.append([{"n": i} for i in range(2000)])


@functools.cache
def _unbounded(key: int) -> str:
    return f"{key:08d}" * 256


def test_leak_unbounded_lru_cache() -> None:
    for _ in range(10):
        _unbounded(next(_unbounded_keys))


class _WithDel:
    def __init__(self) -> None:
        self.me = self
        self.payload = os.urandom(16 * KIB)

    def __del__(self) -> None:
        pass


def test_leak_cycles_with_del_in_a_registry() -> None:
    REGISTRY.append(_WithDel())


def test_leak_closures_appended_to_a_global() -> None:
    captured = os.urandom(8 * KIB)
    CALLBACKS.append(lambda: captured)


class _Accumulator:
    items: ClassVar[list[bytes]] = []


def test_leak_class_attribute_accumulation() -> None:
    _Accumulator.items.append(os.urandom(32 * KIB))


_tls = threading.local()


def test_leak_thread_local_accumulation() -> None:
    if not hasattr(_tls, "items"):
        _tls.items = []
    _tls.items.append(os.urandom(32 * KIB))


def test_leak_ctypes_buffers_kept_alive() -> None:
    HANDLES.append(ctypes.create_string_buffer(64 * KIB))


def test_leak_raw_malloc_1mib_never_freed() -> None:
    pointer = _libc.malloc(MIB)
    ctypes.memset(pointer, 1, MIB)
    NATIVE.append(pointer)


def test_leak_raw_malloc_4mib_never_freed() -> None:
    pointer = _libc.malloc(4 * MIB)
    ctypes.memset(pointer, 1, 4 * MIB)
    NATIVE.append(pointer)


def test_leak_open_files_kept() -> None:
    HANDLES.append(open(os.devnull, "rb"))  # noqa: SIM115 - the leak under test


def test_leak_sockets_kept() -> None:
    HANDLES.extend(socket.socketpair())


def test_leak_hidden_in_freed_memory() -> None:
    """The first run's RSS does not move: the leak reuses memory the test just freed."""
    scratch = bytearray(16 * MIB)
    del scratch
    LEAKED_LIST.append(b"\x03" * (2 * MIB))


# -- clean: grows once, or not at all -------------------------------------------------------
SLOT: list[object] = [None]
WARM: dict[str, object] = {}


def test_clean_first_call_import() -> None:
    import xml.dom.minidom

    assert xml.dom.minidom.parseString("<a/>").documentElement.tagName == "a"


def test_clean_first_call_import_with_tmp_path(tmp_path: Path) -> None:
    # tmp_path comes from the session's tmp_path_factory, and pytest adds a finalizer of it to
    # that session fixture at every run (kept until the session ends): a suspect's re-runs kept
    # ~800 B more each, read as a leak, until they took those off again
    import plistlib

    path = tmp_path / "settings.plist"
    path.write_bytes(plistlib.dumps({"name": "memguard"}))
    assert plistlib.loads(path.read_bytes()) == {"name": "memguard"}


@pytest.fixture(scope="module")
def module_resource() -> bytearray:
    return bytearray(8 * MIB)


@pytest.fixture(scope="session")
def session_resource() -> bytes:
    return os.urandom(2 * MIB)


def test_clean_module_fixture_created_here(module_resource: bytearray) -> None:
    assert len(module_resource) == 8 * MIB


def test_clean_session_fixture_created_here(session_resource: bytes) -> None:
    assert len(session_resource) == 2 * MIB


class TestClassFixture:
    @pytest.fixture(scope="class")
    def class_resource(self) -> list[bytes]:
        return [os.urandom(KIB) for _ in range(1000)]

    def test_clean_class_fixture_created_here(self, class_resource: list[bytes]) -> None:
        assert len(class_resource) == 1000


@functools.lru_cache(maxsize=128)
def _bounded(key: int) -> str:
    return f"{key:08d}" * 64


def test_clean_bounded_lru_cache_filling_up() -> None:
    for _ in range(50):
        _bounded(next(_bounded_keys))


def test_clean_typing_cache_filling_slowly() -> None:
    # typing memoises List[X] in a 128-entry lru_cache: one new class a run (with 8 KiB in its
    # namespace) grows it for 128 runs, steadily over a leak check's few re-runs
    made = type("Made", (), {"payload": "x" * (8 * KIB)})
    assert typing.List[made] is typing.List[made]


if given is not None:  # hypothesis is optional here: without it the corpus has one case less

    @settings(database=None, derandomize=True)
    @given(strategies.booleans(), strategies.booleans())
    def test_clean_hypothesis_test(first: bool, second: bool) -> None:
        # hypothesis looks up getattr(data, f"draw_{kind}") for each value it draws: a new
        # string each time, which CPython's type cache (4,096 slots) keeps alive in a slot of
        # its own until that slot is reused, so the test kept ~20 strings more a run for ~80 runs
        assert {first, second} <= {True, False}


def test_clean_warm_up_cache_fills_once() -> None:
    if "table" not in WARM:
        WARM["table"] = [os.urandom(KIB) for _ in range(5000)]
    assert len(WARM["table"]) == 5000


def test_clean_garbage_only_the_cycle_collector_frees() -> None:
    gc.disable()
    try:
        for _ in range(500):
            node: dict[str, object] = {"payload": os.urandom(4 * KIB)}
            node["self"] = node
    finally:
        gc.enable()


def test_clean_large_temporary_freed() -> None:
    block = b"\x04" * (100 * MIB)
    assert len(block) == 100 * MIB
    del block


def test_clean_many_small_objects_freed() -> None:
    objects = [(i, str(i)) for i in range(300_000)]
    assert len(objects) == 300_000
    del objects


def test_clean_module_slot_replaced() -> None:
    SLOT[0] = bytearray(4 * MIB)


def test_clean_dict_emptied_key_by_key() -> None:
    table = {i: str(i) for i in range(100_000)}
    for key in list(table):
        del table[key]
    assert not table


def test_clean_interned_strings() -> None:
    names = [sys.intern(f"memguard_name_{i}") for i in range(5000)]
    assert len(names) == 5000


def test_clean_finished_threads() -> None:
    threads = [threading.Thread(target=lambda: os.urandom(64 * KIB)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_clean_temp_files() -> None:
    with tempfile.TemporaryFile() as handle:
        handle.write(os.urandom(MIB))


def test_clean_asyncio_event_loops() -> None:
    async def work() -> int:
        await asyncio.sleep(0)
        return 1

    assert asyncio.run(work()) == 1


def test_clean_pytest_captures_output() -> None:
    print("x" * (512 * KIB))
    logging.getLogger("memguard.corpus").warning("y" * (64 * KIB))
    sys.stderr.write("z" * (64 * KIB))
