"""Executors decide where a stage's batches run; the runner decides what is pending and commits results.

An executor maps a stage over an iterator of pending batches and yields `(batch ids, output frame)` pairs
as they finish, in any order. Only the runner writes the stage's table, always from the process that holds
the run lock, so a run is as crash-safe on a cluster as on one machine: a batch counts once its segment
is renamed into place, and whatever was in flight elsewhere is simply pending again.

`LocalExecutor` runs every batch in this process, one after another. `ProcessExecutor`
(executors/processes.py, `--executor processes`) runs them in worker processes on this machine, and
`RayExecutor` (executors/ray.py, imported only for `--executor ray`) spreads them over a Ray cluster.
Both keep a few batches per worker in flight (`keep_in_flight`) and hand a worker `run_batch`, which opens
the worker's context once and keeps it.
"""
from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Protocol

import duckdb
import polars as pl
import pyarrow as pa

from gra_stream import carry
from gra_stream.backends.pool import ModelPool
from gra_stream.call_cache import CallCache
from gra_stream.config import Config
from gra_stream.embeddings import MINILM, get_embedder
from gra_stream.errors import Interrupted
from gra_stream.memory import DUCKDB_MEMORY, release_freed_memory
from gra_stream.sql_filters import load_filters
from gra_stream.stages import Context, Stage
from gra_stream.store import Store

Finished = tuple[list[str], pl.DataFrame]


class StopRequest(Protocol):
    raised: bool


class Executor(Protocol):
    overlaps: bool  # whether passes may call `map` from threads of their own at once (gra_stream/passes.py)

    def map(self, stage: Stage, batches: Iterator[pl.DataFrame], ctx: Context,
            stop: StopRequest) -> Iterator[Finished]: ...

    def close(self) -> None: ...


def open_context(store: Store, config: Config, con: duckdb.DuckDBPyConnection | None = None) -> Context:
    """What a stage needs to run a batch: the model pool (engines load on first use), lookups over the
    run's tables (`con`, or a connection of its own), the SQL filters, and the kept versions whose work a
    batch may reuse. Built once per process that runs batches."""
    return Context(config, ModelPool(config, cache=CallCache(store)),
                   con if con is not None else store.connect(memory_limit=DUCKDB_MEMORY), load_filters(config), store,
                   carry.reusable(store, config))


IN_FLIGHT_PER_WORKER = 2  # one batch running, one queued: a worker never waits for the runner's commit


def keep_in_flight(batches: Iterator[pl.DataFrame], stop: StopRequest, limit: int,
                   submit: Callable[[pl.DataFrame], Hashable],
                   next_done: Callable[[list[Hashable]], tuple[Hashable, Finished]]) -> Iterator[Finished]:
    """Keep up to `limit` batches submitted (`submit(batch)` returns a handle) and yield each result as it
    finishes (`next_done(handles)` waits for one of them). A stop request submits nothing more: the batches
    in flight finish, then `Interrupted` is raised if any batch was left."""
    in_flight: list[Hashable] = []
    exhausted = False
    while True:
        while not exhausted and not stop.raised and len(in_flight) < limit:
            batch = next(batches, None)
            if batch is None:
                exhausted = True
                break
            in_flight.append(submit(batch))
        if not in_flight:
            break
        handle, result = next_done(in_flight)
        in_flight.remove(handle)
        yield result
    if stop.raised and not exhausted:
        raise Interrupted()


class LocalExecutor:
    """Every batch in this process, in order; a stop request is honoured before the next batch starts.
    Passes take turns: they would share this process's one core of Python and the stages' lookups."""

    overlaps = False

    def map(self, stage: Stage, batches: Iterator[pl.DataFrame], ctx: Context,
            stop: StopRequest) -> Iterator[Finished]:
        for batch in batches:
            if stop.raised:
                raise Interrupted()
            yield batch["id"].to_list(), stage.run(batch, ctx)

    def close(self) -> None:
        pass


# Per worker process: one context per (run directory, config), reused by every batch that lands there.
_CONTEXTS: dict[tuple[str, str], Context] = {}


def worker_context(run_dir: str, config: Config, cwd: str) -> Context:
    key = (run_dir, config.fingerprint())
    if key not in _CONTEXTS:
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative paths in the config (references, prompts, filters) mean what they meant
        _CONTEXTS[key] = open_context(Store(run_dir), config)
    return _CONTEXTS[key]


LOADING_THREAD = "load-embedder"


def warm_worker(run_dir: str, config: Config, cwd: str) -> None:
    """A worker's first task, as it starts: its context, opened before its first batch comes rather than
    while the first wave waits for it; and MiniLM, loaded on a thread of its own while the worker takes
    batches (a small corpus's seeds are embedded in one batch, by one worker, and the first wave's filter
    batch may land on another, which would then wait seconds for the load). Not after a config change
    whose filter reads the embeddings back from a kept version (`Context.reusable`): its batches then
    embed only what that version lacks, often nothing, and the model loads when a batch first needs it.
    It returns nothing: the context stays in the worker, and a future would otherwise try to send it back."""
    ctx = worker_context(run_dir, config, cwd)
    d = config.diversity
    if d.enabled and d.model == MINILM and "diversity" not in ctx.reusable:
        threading.Thread(target=get_embedder, args=(d.model,), name=LOADING_THREAD, daemon=True).start()


def close_worker_contexts() -> None:
    for ctx in _CONTEXTS.values():
        ctx.pool.close()
    _CONTEXTS.clear()


def batch_ipc(batch: pl.DataFrame) -> bytes:
    """A batch as Arrow IPC bytes, to send to a worker: only its own rows. (A batch is a slice of the
    pending rows' record batches, and a pickled Arrow slice of a list column carries its whole parent.)"""
    buffer = io.BytesIO()
    batch.write_ipc(buffer)
    return buffer.getvalue()


def run_batch(run_dir: str, config: Config, cwd: str, step: Callable[[pl.DataFrame, Context], pl.DataFrame],
              batch: bytes | pa.Table) -> tuple[list[str], bytes]:
    """Run one batch (`batch_ipc` bytes, or a table Ray Data hands over) through `step` (a stage's `run`,
    or the `prepare` of an ordered one) in a worker; the output travels back as Arrow IPC bytes too."""
    frame = pl.read_ipc(io.BytesIO(batch)) if isinstance(batch, bytes) else pl.from_arrow(batch)
    done = frame["id"].to_list(), batch_ipc(step(frame, worker_context(run_dir, config, cwd)))
    release_freed_memory()  # what the batch freed, before the next one comes in (as the runner does)
    return done
