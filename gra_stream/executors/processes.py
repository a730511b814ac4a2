"""`--executor processes`: batches of the unordered stages run in worker processes on this machine.

What it is for: with replies that come back fast (HTTP endpoints of a large server pool, the fake backend),
rendering prompts, parsing and validating replies and building output frames is Python work that holds
one core; workers put the other cores to work. Each worker opens its own context once (model pool, SQL
filters) and keeps it for the whole run, like a Ray actor. Ordered stages (gate, diversity) read what their
own earlier batches committed, so their `finish` runs in this process, one batch after another, in id
order, while the workers `prepare` the next batches (filters and signatures for the gate, embeddings for
the diversity filter).

Only this process, which holds the run lock, writes the tables: a worker returns its output frame, and a
batch counts once its segment is renamed into place. Workers ignore Ctrl-C (this process finishes the
batches in flight and stops) and die with this process (PR_SET_PDEATHSIG), so a SIGKILL leaves nothing
running; whatever they had in flight is pending again on the next run.

An in-process vLLM engine would load once per worker: with the `vllm` backend, keep the local executor
(one engine uses every core or the GPU already) or serve the models with `vllm serve`.
"""
from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import signal
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import polars as pl

from gra_stream.blas import one_blas_thread
from gra_stream.config import Config, share_budgets
from gra_stream.errors import Interrupted, UserError
from gra_stream.executors import (IN_FLIGHT_PER_WORKER, Finished, LocalExecutor, StopRequest, batch_ipc, keep_in_flight, run_batch,
                                  warm_worker)
from gra_stream.memory import LARGE_STEPS
from gra_stream.stages import Context, Stage

PR_SET_PDEATHSIG = 1


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the runner decides when to stop, at a batch boundary
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:  # Linux: the kernel kills the worker when the runner dies, even by SIGKILL
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        pass


def _result(future: Future) -> Finished:
    try:
        ids, ipc = future.result()
    except BrokenProcessPool:
        raise UserError("a worker process died (out of memory, or killed); run the same command again to "
                        "resume") from None
    return ids, pl.read_ipc(io.BytesIO(ipc))


def worker_count(config: Config) -> int:
    return config.processes.workers or os.cpu_count() or 1


class ProcessExecutor:
    overlaps = True  # the pool takes batches from every pass's thread; ordered finishes share one BLAS limit

    def __init__(self, run_dir: Path, config: Config):
        self.workers = worker_count(config)
        self._lock = threading.Lock()
        self.run_dir, self.cwd = str(Path(run_dir).resolve()), os.getcwd()
        self.config = share_budgets(config, self.workers)
        self.local = LocalExecutor()
        self.pool: ProcessPoolExecutor | None = None
        # BLAS and OpenMP read these once, when a worker imports numpy (before any initializer runs), and
        # workers start with this process's environment: a thread pool per worker as wide as the machine
        # would make the workers' threads fight over the cores.
        threads = str(max(1, (os.cpu_count() or 1) // self.workers))
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, threads)
        self._pool()

    def map(self, stage: Stage, batches: Iterator[pl.DataFrame], ctx: Context, stop: StopRequest) -> Iterator[Finished]:
        if stage.ordered and stage.prepare is None:
            return self.local.map(stage, batches, ctx, stop)
        if stage.ordered:
            return self._prepared_in_workers(stage, batches, ctx, stop)
        return self._in_workers(stage, batches, stop)

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self.pool is None:
                # spawn, not fork: this process has DuckDB and Polars thread pools running
                self.pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_init_worker)
                # Every worker starts now, from this thread (a pool starts a worker per task submitted while
                # none is idle): PR_SET_PDEATHSIG ties a worker's life to the thread that started it, and
                # overlapping passes run in threads that end before the run does.
                for _ in range(self.workers):
                    self.pool.submit(warm_worker, self.run_dir, self.config, self.cwd)
            return self.pool

    def _in_workers(self, stage: Stage, batches: Iterator[pl.DataFrame], stop: StopRequest) -> Iterator[Finished]:
        """Keep IN_FLIGHT_PER_WORKER batches per worker submitted; yield results as they finish."""
        def next_done(in_flight: list[Future]) -> tuple[Future, Finished]:
            future = next(iter(wait(in_flight, return_when=FIRST_COMPLETED).done))
            return future, _result(future)
        return keep_in_flight(batches, stop, IN_FLIGHT_PER_WORKER * self.workers,
                              lambda batch: self._submit(stage.run, batch), next_done)

    def _prepared_in_workers(self, stage: Stage, batches: Iterator[pl.DataFrame], ctx: Context,
                             stop: StopRequest) -> Iterator[Finished]:
        """Workers prepare batches ahead; this process finishes them one by one, in the order they came.

        Its matrix products run on one BLAS thread meanwhile: the workers hold every core, and a second
        thread here only waits for one (OpenBLAS threads spin while they wait)."""
        ahead: deque[Future] = deque()
        with one_blas_thread():
            for batch in batches:
                ahead.append(self._submit(stage.prepare, batch))
                if len(ahead) > IN_FLIGHT_PER_WORKER * self.workers:
                    yield self._finish(stage, ahead.popleft(), ctx, stop)
            while ahead:
                yield self._finish(stage, ahead.popleft(), ctx, stop)

    @staticmethod
    def _finish(stage: Stage, prepared: Future, ctx: Context, stop: StopRequest) -> Finished:
        if stop.raised:
            raise Interrupted()
        ids, frame = _result(prepared)
        with LARGE_STEPS:  # not while the other pass drains its pending rows (gra_stream/memory.py)
            return ids, stage.finish(frame, ctx)

    def _submit(self, step, batch: pl.DataFrame) -> Future:
        return self._pool().submit(run_batch, self.run_dir, self.config, self.cwd, step, batch_ipc(batch))

    def close(self) -> None:
        if self.pool is None:
            return
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.pool = None
