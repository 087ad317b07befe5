"""glibc's C heap, read through ctypes: bytes in use, its per-thread cache, trimming. No pytest here.

Everything here is optional: each reader is ``None`` where it cannot work (not Linux, not glibc,
glibc older than 2.33 for ``mallinfo2``, a cache whose layout does not check out), and the
tracker then does without it.

glibc keeps up to 7 freed chunks of each size up to 1,040 B in a per-thread cache (tcache) and
``mallinfo2`` counts them as in use. Read plainly, a clean test's first use of a size parks
freed chunks there that read as kept, and a kept chunk the cache served does not move the
reading. :func:`tcache_bytes_reader` reads what the cache holds from the cache itself, so the
two can be told apart at any reading; :func:`tcache_filler` fills the cache's bins for the sizes
Python mallocs, so that a test's frees of those sizes cannot be parked there (and, where the
counts cannot be read, so that two readings after a fill differ by what was kept).
"""

from __future__ import annotations

import ctypes
import operator
import os
import struct
import sys
import tracemalloc
from typing import Callable, Optional

__all__ = ["malloc_in_use_reader", "malloc_trim", "tcache_bytes_reader", "tcache_count", "tcache_filler"]


def malloc_trim() -> Optional[Callable[[], object]]:
    """glibc's ``malloc_trim(0)``: returns free heap pages to the OS (~1 µs when there are none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


# Python asks malloc itself for requests over 512 B (pymalloc serves the rest), so the sizes
# it uses there are the chunks of 528..1,040 B. A bytes object of n bytes is a request of
# n + 33 B, a chunk of n + 41 B rounded up to 16. (Under PYTHONMALLOC=malloc, objects of 512 B
# and less go to malloc too, into bins the filler leaves alone.)
_TCACHE_FILL_SIZES = tuple(chunk - 41 for chunk in range(528, 1041, 16))
_ZERO_BYTES = b"\0".__mul__  # map()ped over the sizes: ~2x faster than a comprehension; malloc, not calloc


def tcache_count() -> int:
    """Chunks the tcache keeps per size: 7 unless ``GLIBC_TUNABLES`` says otherwise (the last
    setting wins; decimal or 0x hex, as glibc reads it)."""
    count = 7
    for tunable in os.environ.get("GLIBC_TUNABLES", "").split(":"):
        name, _, value = tunable.partition("=")
        if name.strip() == "glibc.malloc.tcache_count":
            try:
                count = int(value.strip(), 0)
            except ValueError:  # glibc ignores what it cannot read too
                continue
    return count


def tcache_filler() -> Optional[Callable[[], None]]:
    """Fills the tcache's bins for Python's malloc'd sizes (30-60 µs): then a chunk of those sizes
    freed by a test does not hide in it, and (the next fill takes a new chunk from the heap to
    replace it) one kept shows in glibc's bytes in use even when it came from that cache."""
    count = tcache_count()
    if not 0 < count <= 16:  # no tcache, or one too big to fill at every reading
        return None

    sizes = tuple(size for size in _TCACHE_FILL_SIZES for _ in range(count))

    def fill() -> None:
        # All at once: each size's chunks come from its bin first. A tuple this long is freed
        # outright; a list would stay in the list free list, one block more than was read.
        held = tuple(map(_ZERO_BYTES, sizes))
        del held

    return fill


# The main thread's cache is the first chunk glibc hands out on the main heap (it sets the cache
# up on the first malloc): ``struct tcache_perthread_struct { uint16_t counts[64]; tcache_entry
# *entries[64]; }`` since glibc 2.30, a chunk of 0x290 bytes on 64-bit, so its size field reads
# 0x291 (the low bit: the chunk before it is in use). Bin i holds chunks of 32 + 16 i bytes.
_TCACHE_BINS = 64
_TCACHE_SIZE_FIELD = 0x291
_TCACHE_CHUNK_SIZES = tuple(32 + 16 * index for index in range(_TCACHE_BINS))
_TCACHE_COUNTS = struct.Struct(f"{_TCACHE_BINS}H")
_PROBE_REQUEST, _PROBE_BIN = 990, 61  # malloc(990) is a chunk of 1,008 B: bin 61


def _main_heap_start() -> Optional[int]:
    """Where the main heap (``[heap]`` in ``/proc/self/maps``) begins, if there is one."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[heap]"):
                    return int(line.split("-", 1)[0], 16)
    except (OSError, ValueError):
        pass
    return None


def tcache_bytes_reader() -> Optional[Callable[[], int]]:
    """A reader of the bytes the first chunk of the main heap says its tcache holds (~3-7 µs), or
    ``None``. That is the cache of the thread that made the process's first malloc, normally the
    main thread; it is only returned after checking, in the calling thread, that it is this
    thread's cache: the chunk's size field, then mallocs of one size that must empty that bin's
    count and frees that must fill it again. A thread whose cache is elsewhere gets ``None``
    (and where glibc moves more chunks of that size into the cache meanwhile, so may a thread
    whose cache it is: the reader is then lost, never wrong).
    """
    capacity = tcache_count()
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8 or not 0 < capacity <= 64:
        return None
    base = _main_heap_start()
    if base is None:
        return None
    try:
        libc = ctypes.CDLL(None)
        malloc, free = libc.malloc, libc.free
    except (OSError, AttributeError):
        return None
    malloc.restype, malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    # [heap] is at least a page long and mapped: reading its first bytes cannot fault.
    if ctypes.c_size_t.from_address(base + 8).value != _TCACHE_SIZE_FIELD:
        return None
    counts = (ctypes.c_uint16 * _TCACHE_BINS).from_address(base + 16)
    held = [malloc(_PROBE_REQUEST) for _ in range(capacity + 1)]  # more than the bin can hold
    try:
        emptied = counts[_PROBE_BIN] == 0 and all(held)
    finally:
        for pointer in held:
            if pointer:
                free(pointer)
    if not emptied or counts[_PROBE_BIN] != capacity:
        return None
    read_counts, address, string_at = _TCACHE_COUNTS.unpack_from, base + 16, ctypes.string_at
    sizes, mul = _TCACHE_CHUNK_SIZES, operator.mul

    def read() -> int:
        return sum(map(mul, read_counts(string_at(address, _TCACHE_COUNTS.size)), sizes))

    return read


def malloc_in_use_reader(cached: Optional[Callable[[], int]] = None) -> Optional[Callable[[], int]]:
    """glibc's bytes in use (heap + mmapped chunks) via ``mallinfo2`` (glibc 2.33+): 0.7 µs (more
    in a fragmented heap: it walks the free chunks), less what ``cached`` (a
    :func:`tcache_bytes_reader`) says the tcache holds. Sees C allocations tracemalloc cannot;
    tracemalloc's own bookkeeping is taken off."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []

    def read() -> int:
        info = mallinfo2()
        own = tracemalloc.get_tracemalloc_memory() if tracemalloc.is_tracing() else 0
        return int(info.uordblks + info.hblkhd) - own - (cached() if cached is not None else 0)

    return read
