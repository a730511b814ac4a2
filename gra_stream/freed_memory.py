"""Give memory the runner has freed back to the system, so that a long run's RSS stays where its work is.

Two allocators in the runner keep what they free:
- DuckDB's Linux builds allocate with their own jemalloc, which returns freed pages only as its threads get
  to them, and a finished query's threads sit idle. After the 1M-seed gate's pending query (a sort of 993k
  rows under the 320 MB limit) the runner kept 290 to 340 MB it had freed in about one run in three: the
  peak-RSS misses of the scale benchmark. `allocator_background_threads` (set on every connection) purges
  such pages within about ten seconds; `release_freed_memory` purges them at once (25 to 30 ms).
- glibc's malloc (numpy, Python) keeps freed heap memory for reuse; a stage's batches leave it fragmented,
  and at 1M seeds the runner's heap held 100 to 160 MB more through the gate than at its start.
  `malloc_trim` hands the free pages back (a millisecond or two a batch).
Where a build has neither (another platform, a DuckDB without jemalloc), this does nothing."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib

MALLCTL_ARENAS_ALL = 4096  # jemalloc's "every arena" index in a mallctl name


def release_freed_memory() -> None:
    mallctl = _duckdb_mallctl()
    if mallctl is not None:
        mallctl(f"arena.{MALLCTL_ARENAS_ALL}.purge".encode(), None, None, None, ctypes.c_size_t(0))
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _duckdb_mallctl():
    """`mallctl` of the jemalloc linked into DuckDB's extension module (`_duckdb` from DuckDB 2.0,
    `duckdb.duckdb` before), or None."""
    for name in ("_duckdb", "duckdb.duckdb"):
        try:
            return ctypes.CDLL(importlib.import_module(name).__file__).duckdb_je_mallctl
        except (ImportError, OSError, AttributeError, TypeError):
            continue
    return None


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
