"""gra_stream/memory.py: what DuckDB and malloc hold freed goes back to the system."""
import ctypes
import ctypes.util
import os
import sys

import duckdb
import polars as pl
import pytest

from gra_stream.executors import batch_ipc, close_worker_contexts, run_batch
from gra_stream.memory import MALLCTL_ARENAS_ALL, _duckdb_mallctl, release_freed_memory
from tests.conftest import fake_config

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="jemalloc in DuckDB and glibc: Linux")


def _stat(mallctl, name: str) -> int:
    epoch = ctypes.c_uint64(1)  # jemalloc's statistics are a snapshot, renewed by writing the epoch
    assert mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.c_size_t(8)) == 0
    value, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
    assert mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, ctypes.c_size_t(0)) == 0
    return value.value


def _anon_mib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:")) // 1024


def test_duckdb_pages_a_finished_query_freed_go_back():
    mallctl = _duckdb_mallctl()
    assert mallctl is not None, "this DuckDB build exports no duckdb_je_mallctl: peak RSS would swing again"
    con = duckdb.connect()
    con.execute("SET allocator_background_threads = false")  # nothing purges behind the test's back
    try:
        con.execute("SELECT sum(x) FROM (SELECT range AS x FROM range(5000000) ORDER BY random())").fetchall()
        dirty_pages, resident = _stat(mallctl, f"stats.arenas.{MALLCTL_ARENAS_ALL}.pdirty"), _stat(mallctl, "stats.resident")
        assert dirty_pages * 4096 > 16 << 20  # the sort's freed memory, still held
        release_freed_memory()
        # DuckDB's threads (of this or an earlier test's database) may free a few pages after the
        # purge, so the bound is 4 MiB, a quarter of what the sort left
        assert _stat(mallctl, f"stats.arenas.{MALLCTL_ARENAS_ALL}.pdirty") * 4096 < 4 << 20
        assert _stat(mallctl, "stats.resident") < resident - dirty_pages * 4096 // 2
    finally:
        con.execute("SET allocator_background_threads = true")
        con.close()


def test_heap_memory_freed_below_the_top_goes_back():
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(64 << 10) for _ in range(2048)]  # 128 MiB of heap, below the mmap threshold
    for block in blocks:
        ctypes.memset(block, 1, 64 << 10)
    held = _anon_mib()
    for block in blocks[:-1]:  # the last block keeps the heap's top: free() alone cannot shrink it
        libc.free(block)
    try:
        assert _anon_mib() > held - 32  # freed, still resident
        release_freed_memory()
        assert _anon_mib() < held - 96
    finally:
        libc.free(blocks[-1])


def test_a_worker_batch_gives_back_what_it_freed(tmp_path):
    """Worker processes run `run_batch`; what a batch freed goes back before the next batch comes, as in
    the runner (without it, each worker kept the peak of its largest batch)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    top: list[int] = []
    held: list[int] = []

    def step(frame, ctx):
        blocks = [libc.malloc(64 << 10) for _ in range(2048)]  # 128 MiB below the mmap threshold, as above
        for block in blocks:
            ctypes.memset(block, 1, 64 << 10)
        held.append(_anon_mib())
        for block in blocks[:-1]:
            libc.free(block)
        top.append(blocks[-1])
        return frame

    try:
        # the worker's cwd is this process's own: a worker context chdirs to it, and pytest must stay put
        ids, _ = run_batch(str(tmp_path / "run"), fake_config(), os.getcwd(), step,
                           batch_ipc(pl.DataFrame({"id": ["a", "b"]})))
        assert ids == ["a", "b"]
        assert _anon_mib() < held[0] - 96
    finally:
        libc.free(top[0])
        close_worker_contexts()
