"""`--executor ray`: the same stages, the same run directory, batches spread over a Ray cluster.

- LLM stages run on a pool of `ray.workers` actors. Each actor opens its own context (model pool, SQL
  filters, lookups over the run directory) once, so an engine loads once per actor and stays loaded across
  stages and rounds. `ray.gpus_per_worker` GPUs per actor.
- CPU stages run as Ray Data `map_batches` tasks, `ray.workers` batches at a time. The actors keep their
  engines (and their CPU reservation) while a CPU stage runs, and Ray Data schedules nothing while less
  than one CPU is free, so the actors' reservation is capped to leave one CPU for the tasks.
- Ordered stages (the gate's near-duplicate removal and the diversity filter compare each batch with
  everything kept before it) run on the driver, one batch after another in id order: that sequential pass
  over the LSH band keys stored in the run's `gates` table is what keeps deduplication global across
  workers, and what makes a cluster run decide exactly what a local run decides.

Workers return outputs; only the driver, which holds the run lock, writes the stage tables. A killed
driver takes its actors with it (Ray ties non-detached actors to their owner), and nothing a worker had
in flight was committed, so a rerun resumes exactly like a local one. The run directory must be at the
same path on every node (a shared filesystem): workers read it for lookups and write the call cache.
"""
from __future__ import annotations

import io
import logging
import math
import os
import socket
from pathlib import Path
from collections.abc import Iterator

import polars as pl
import pyarrow as pa

from gra_stream.config import Config, share_budgets
from gra_stream.errors import Interrupted, UserError
from gra_stream.executors import (IN_FLIGHT_PER_WORKER, Finished, LocalExecutor, StopRequest, batch_ipc, close_worker_contexts, keep_in_flight,
                                  run_batch)
from gra_stream.progress import Progress
from gra_stream.stages import Context, Stage

try:
    import ray
    import ray.data
except ImportError:  # pragma: no cover - exercised by the error message test without Ray installed
    ray = None


def _data_batch(table: pa.Table, run_dir: str, config: Config, cwd: str, stage: Stage) -> pa.Table:
    ids, ipc = run_batch(run_dir, config, cwd, stage.run, table)
    return pa.table({"ids": [ids], "ipc": [ipc]})


class StageWorker:
    """A Ray actor that runs LLM-stage batches with engines it keeps loaded."""

    def __init__(self, run_dir: str, config: Config, cwd: str):
        # Ray sets OMP_NUM_THREADS to the actor's (capped) CPU reservation; a CPU engine gets what was asked.
        os.environ["OMP_NUM_THREADS"] = str(max(1, math.ceil(config.ray.cpus_per_worker)))
        self.args = (run_dir, config, cwd)

    def run(self, stage: Stage, batch: bytes) -> tuple[list[str], bytes]:
        return run_batch(*self.args, stage.run, batch)

    def close(self) -> None:
        close_worker_contexts()


def _failure(error: Exception, stop: StopRequest) -> Exception:
    """What to raise for a failed remote batch: the UserError a stage raised inside a worker (Ray keeps it
    as the cause), an interruption when Ctrl-C reached the workers too, else Ray's own error."""
    seen = error
    while seen is not None:
        if isinstance(seen, UserError):
            return seen
        seen = getattr(seen, "cause", None) or seen.__cause__
    return Interrupted() if stop.raised else error


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT nothing listens at (ray.init would retry for minutes)."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", ray:// client addresses: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}; "
                        f"start one with `ray start --head` or give its address") from None


class RayExecutor:
    overlaps = False  # one Ray Data pipeline at a time

    def __init__(self, run_dir: Path, config: Config, *, address: str = "", progress: Progress | None = None):
        if ray is None:
            raise UserError("--executor ray needs Ray: pip install 'gra-stream[ray]'")
        for name in ("ray", "ray.data"):
            logging.getLogger(name).setLevel(logging.ERROR)
        if address:
            _check_reachable(address)
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise UserError(f"cannot start or reach the Ray cluster{' at ' + address if address else ''}: "
                            f"{str(e).splitlines()[0]}") from None
        data_context = ray.data.DataContext.get_current()
        data_context.enable_progress_bars = False
        data_context.print_on_execution_start = False
        self.run_dir, self.cwd = str(Path(run_dir).resolve()), os.getcwd()
        self.config = share_budgets(config, config.ray.workers)
        self.progress = progress or Progress(quiet=True)
        self.workers: list = []
        self.local = LocalExecutor()
        resources, workers = ray.cluster_resources(), config.ray.workers
        cpus, gpus = resources.get("CPU", 1.0), resources.get("GPU", 0.0)
        self.actor_cpus = max(0.0, min(config.ray.cpus_per_worker, (cpus - 1) / workers))
        self.task_cpus = max(0.01, min(config.ray.cpus_per_worker, 1.0, (cpus - self.actor_cpus * workers) / workers))
        self.actor_gpus = self._gpus(config, gpus)
        self.progress.say(f"ray: {cpus:g} CPUs, {gpus:g} GPUs; {workers} workers "
                          f"({self.actor_cpus:.2g} CPU, {self.actor_gpus:g} GPU each)")

    # -- dispatch -----------------------------------------------------------------------------------
    def map(self, stage: Stage, batches: Iterator[pl.DataFrame], ctx: Context, stop: StopRequest) -> Iterator[Finished]:
        if stage.ordered:
            return self.local.map(stage, batches, ctx, stop)
        if stage.llm:
            return self._on_actors(stage, batches, stop)
        return self._on_data_tasks(stage, batches, stop)

    @staticmethod
    def _gpus(config: Config, cluster_gpus: float) -> float:
        if config.ray.gpus_per_worker >= 0:
            return config.ray.gpus_per_worker
        return float(config.vllm.tensor_parallel_size) if config.engines_in_process and cluster_gpus else 0.0

    def _actors(self) -> list:
        if not self.workers:
            cls = ray.remote(StageWorker).options(num_cpus=self.actor_cpus, num_gpus=self.actor_gpus)
            self.workers = [cls.remote(self.run_dir, self.config, self.cwd) for _ in range(self.config.ray.workers)]
        return self.workers

    def _on_actors(self, stage: Stage, batches: Iterator[pl.DataFrame], stop: StopRequest) -> Iterator[Finished]:
        """Keep every actor busy with up to IN_FLIGHT_PER_WORKER batches; yield results as they finish."""
        workers = self._actors()
        load = {i: 0 for i in range(len(workers))}
        owner: dict = {}  # the actor each batch in flight went to

        def submit(batch: pl.DataFrame):
            i = min(load, key=load.get)
            load[i] += 1
            ref = workers[i].run.remote(stage, batch_ipc(batch))
            owner[ref] = i
            return ref

        def next_done(in_flight: list) -> tuple:
            (ref,), _ = ray.wait(in_flight, num_returns=1)
            load[owner.pop(ref)] -= 1
            try:
                ids, ipc = ray.get(ref)
            except ray.exceptions.RayError as e:
                raise _failure(e, stop) from None
            return ref, (ids, pl.read_ipc(io.BytesIO(ipc)))
        return keep_in_flight(batches, stop, IN_FLIGHT_PER_WORKER * len(workers), submit, next_done)

    def _on_data_tasks(self, stage: Stage, batches: Iterator[pl.DataFrame], stop: StopRequest) -> Iterator[Finished]:
        """Windows of `ray.workers` batches, each window one Ray Data pass of `map_batches` tasks."""
        window: list[pa.Table] = []
        for batch in batches:
            if stop.raised:
                raise Interrupted()
            window.append(batch.to_arrow())
            if len(window) == self.config.ray.workers:
                yield from self._data_window(stage, window, stop)
                window = []
        if window:
            yield from self._data_window(stage, window, stop)

    def _data_window(self, stage: Stage, window: list[pa.Table], stop: StopRequest) -> Iterator[Finished]:
        dataset = ray.data.from_arrow(window).map_batches(
            _data_batch, fn_args=(self.run_dir, self.config, self.cwd, stage), batch_size=None,
            batch_format="pyarrow", num_cpus=self.task_cpus)
        try:
            for row in dataset.iter_rows():
                yield list(row["ids"]), pl.read_ipc(io.BytesIO(row["ipc"]))
        except ray.exceptions.RayError as e:
            raise _failure(e, stop) from None

    def close(self) -> None:
        for worker in self.workers:
            try:
                ray.get(worker.close.remote(), timeout=60)
            except Exception:  # noqa: BLE001 - an actor that died already has nothing left to close
                pass
            ray.kill(worker)
        self.workers = []
        ray.shutdown()
