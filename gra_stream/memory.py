"""Memory tuning, in one place: how much DuckDB may hold, and giving freed memory back to the system, so
that a long run's RSS follows its work instead of its history (benchmarks/README.md has the figures).

- DuckDB's limits. `DUCKDB_MEMORY` holds per database (the runner's pending stream and the stages' lookups
  share one); sorts and joins beyond it spill to DIR/.tmp. A pending query is drained on one thread under
  the smaller `DRAIN_MEMORY`: between two stages the workers sit idle holding what the last stage left
  them, so a drain is where a large run's memory would otherwise peak. What a query needs grows with the
  wave and the width of its rows, so a drain that runs out is run again under the next, larger limit: the
  first limit sets the usual peak, and a large run never fails on it.
- Peaks take turns. The runner's two largest passing allocations are a pending query's drain (DuckDB's
  sort, up to its drain limit) and an ordered stage's `finish` (the diversity walk: its batch's
  similarities and the kept samples' reference blocks). Both grow with the wave, and two overlapping passes
  (gra_stream/passes.py) would stack them, so they hold `LARGE_STEPS` in turn: one drain, or one ordered
  batch's finish, at a time.
- Freed memory. DuckDB's Linux builds allocate with their own jemalloc, which returns freed pages only as
  its threads get to them, and a finished query's threads sit idle; glibc's malloc (numpy, Python) keeps
  freed heap for reuse. `release_freed_memory`, after every drain and every batch (in the runner and in
  each worker process), purges the first through DuckDB's exported `mallctl` and trims the second
  (`malloc_trim`); every connection also sets `allocator_background_threads`. Where a build has neither
  allocator, it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import importlib
import threading

import duckdb

DUCKDB_MEMORY = "320MB"
DRAIN_MEMORY = ("200MB", "1GB", "4GB")  # tried in turn; see the docstring
LARGE_STEPS = threading.Lock()  # held by a drain and by an ordered batch's finish; see the docstring
MALLCTL_ARENAS_ALL = 4096  # jemalloc's "every arena" index in a mallctl name


def out_of_memory(error: Exception) -> bool:
    """Whether `error` is DuckDB's out-of-memory error: raised as itself by the query, or as an OSError
    carrying its message when it happens while an Arrow reader fetches the result."""
    return isinstance(error, duckdb.OutOfMemoryException) or str(error).startswith("Out of Memory Error")


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
