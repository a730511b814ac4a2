"""The runner: ingest seeds, then drive every stage over its pending rows in batches, committing each
batch as one Parquet segment, wave by wave (gra_stream/waves.py). Stopping at any moment loses at most
the batch in flight; running the same command again computes what is still pending and finishes it."""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from gra_stream import carry, kept_versions, run_log, stage_versions, waves
from gra_stream.backends.openai_http import check_credentials
from gra_stream.config import Config
from gra_stream.embeddings import MINILM
from gra_stream.errors import Interrupted, UserError
from gra_stream.executors import Executor, LocalExecutor, open_context
from gra_stream.ids import content_id
from gra_stream.ingest import check_seed_files, ingest_files
from gra_stream.memory import DUCKDB_MEMORY, release_freed_memory
from gra_stream.model_assets import check_engine_setup
from gra_stream.passes import PASSES_AT_ONCE, Pass, declared_waits, run_passes
from gra_stream.pending import batches, drain, idle_stages
from gra_stream.plan import change_plan, more_rounds, planned_moves, with_recorded_fields
from gra_stream.progress import Progress
from gra_stream.query import damage_named
from gra_stream.seed_paths import left_out_splits
from gra_stream.sql_filters import load_filters
from gra_stream.stages import Context, Stage, all_stages
from gra_stream.store import RunLock, Store, check_run_dir
from gra_stream.waves import Scope

__all__ = ["Interrupted", "RunSummary", "run_pipeline"]


@dataclass
class RunSummary:
    new_seeds: int = 0
    rows_by_stage: dict[str, int] = field(default_factory=dict)
    llm_calls: int = 0
    switched: bool = False  # tables were kept aside or brought back for a changed config
    stopped_at: int | None = None  # samples kept when --max-samples stopped the run before its end

    @property
    def did_work(self) -> bool:
        return self.new_seeds > 0 or any(self.rows_by_stage.values())


class _StopFlag:
    """Turns SIGTERM/SIGINT into a request to stop after the batch in flight is committed."""

    def __init__(self):
        self.raised = False
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def reinstall(self) -> None:
        """Take the signals back from a library that installed its own handlers (Ray does, in ray.init)."""
        for sig in self._old:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.raised:  # a second signal: stop now
            raise KeyboardInterrupt
        self.raised = True

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _switch_config(store: Store, config: Config, stages: list[Stage], progress: Progress,
                   seed_files: list[Path]) -> tuple[Config, bool]:
    """Bring the tables to this config: finish a switch a killed run left, then keep aside the tables of
    the stages whose results this config changes (or bring back kept ones of the same version). Returns
    the config to run under (`with_recorded_fields`) and whether any table moved."""
    finished = kept_versions.finish_switch(store)
    if finished:
        progress.say("finished the switch to a changed config that a stopped run began (its plan said what it recomputes)",
                     even_if_quiet=True)  # as the plan itself is said
    recorded, recorded_config = finished or run_log.tables_config(store)
    same = with_recorded_fields(store, recorded_config, config, seed_files)
    if same.fields != config.fields:
        progress.say("[fields] is written differently from the config these tables were made under, but maps "
                     "every seed file the same way: the seeds stand")
        config = same
    moves = planned_moves(store, recorded, config, stages)
    if not moves:
        if added := more_rounds(store, recorded_config, config):
            progress.say(added, even_if_quiet=True)  # what the raised rounds add, as a plan is said
        return config, False
    progress.say(change_plan(recorded, config, moves, store.root), even_if_quiet=True)  # what the run is about to redo
    carried = carry.planned(recorded, config, moves)
    bar = progress.stage("carry", sum(m.rows for m in moves if m.stage in carried))  # it reads every review kept aside
    try:
        kept_versions.switch(store, moves, (recorded, recorded_config), (stage_versions.record(config), config.to_json()),
                             carried, bar.advance)
    finally:
        bar.close()
    return config, True


def preflight(stages: list[Stage], con, config: Config) -> None:
    """Every stage's pending query runs and yields the columns the stage declares, before any model loads."""
    for stage in stages:
        columns = con.sql(f"SELECT * FROM ({stage.pending(config, Scope(rounds_open=config.rounds))}) LIMIT 0").columns
        missing = [c for c in stage.inputs if c not in columns]
        if missing:
            raise RuntimeError(f"stage {stage.name}: pending rows lack declared input columns {missing}")


def check_inputs(seed_files: list[Path], config: Config) -> list[Path]:
    """What can fail before the run directory is touched and any model loads: seed files, SQL filters, API
    keys, the embedded models' packages. Returns the seed files to read (folders expanded)."""
    files = check_seed_files(seed_files, config)
    load_filters(config)
    check_credentials(config)
    check_engine_setup([m.path for m in config.models if m.backend == "vllm"],
                       needs_minilm=config.diversity.enabled and config.diversity.model == MINILM)
    return files


def run_pipeline(seed_files: list[Path], run_dir: Path, config: Config, *, progress: Progress | None = None,
                 stages: list[Stage] | None = None, executor: str = "local", ray_address: str = "",
                 max_samples: int = 0) -> RunSummary:
    """Ingest `seed_files` into `run_dir` and run every stage over what is pending there. `executor` is
    "local" (this process), "processes" (worker processes on this machine), "ray" (a Ray cluster at
    `ray_address`, or a local one started for the run) or "auto" (`choose_executor`). With `max_samples`,
    the run stops after the wave that brings the kept samples to that many (0: no limit)."""
    progress = progress or Progress()
    for note in left_out_splits(seed_files):
        progress.say(note)
    seed_files = check_inputs(seed_files, config)
    stages = stages or all_stages()
    check_run_dir(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create run directory {run_dir}: {e.strerror}") from None
    try:
        with damage_named(Store(run_dir)):  # a file cut short by a copy: one line, whichever reader met it
            return _run_locked(seed_files, run_dir, config, progress, stages, executor, ray_address, max_samples)
    except OSError as e:
        if e.filename and Path(e.filename).resolve() in {path.resolve() for path in seed_files}:
            raise UserError(f"cannot read {e.filename}: {e.strerror or e}") from None
        where = e.filename or run_dir
        raise UserError(f"cannot write the run: {e.strerror or e} ({where}); fix that and run the same command "
                        f"again to resume") from None


def choose_executor(kind: str, config: Config) -> str:
    """What "auto" means: worker processes where there is more than one core to put to work and no model
    runs in an in-process engine (each worker would load its own copy; one engine already uses every core,
    or the GPU); else this process."""
    if kind != "auto":
        return kind
    return "processes" if (os.cpu_count() or 1) > 1 and not config.engines_in_process else "local"


def _make_executor(kind: str, run_dir: Path, config: Config, ray_address: str, progress: Progress) -> Executor:
    kind = choose_executor(kind, config)
    if kind == "local":
        return LocalExecutor()
    if kind == "processes":
        from gra_stream.executors.processes import ProcessExecutor

        return ProcessExecutor(run_dir, config)
    # Ray is an optional extra: the local path never imports it.
    from gra_stream.executors.ray import RayExecutor

    return RayExecutor(run_dir, config, address=ray_address, progress=progress)


def _start_executor(kind: str, run_dir: Path, config: Config, ray_address: str, progress: Progress,
                    stop: _StopFlag) -> Executor:
    executor = _make_executor(kind, run_dir, config, ray_address, progress)
    stop.reinstall()
    return executor


def _run_locked(seed_files, run_dir, config, progress, stages, executor_kind, ray_address, max_samples) -> RunSummary:
    store = Store(run_dir)
    summary = RunSummary()
    with RunLock(run_dir), _StopFlag() as stop:
        store.init()
        for leftover in (run_dir / ".tmp").glob("pending-*.arrow"):  # of a run killed mid-stage
            leftover.unlink(missing_ok=True)
        config, summary.switched = _switch_config(store, config, stages, progress, seed_files)
        t0, started = time.monotonic(), run_log.now()
        run_id = content_id("run", started, os.getpid(), time.time_ns())
        names = [s.name for s in stages]
        run_log.record(store, run_id, started, t0, "running", config, seed_files, names)
        kept_versions.switched(store)  # the run log now names the config the tables are under
        outcome = "failed"
        ctx: Context | None = None
        executor: Executor | None = None
        try:
            # The executor's workers start while the seeds are read, unless a finished run left these
            # tables under this config: then only new seeds can make work, and none may come.
            if not run_log.nothing_changed(store, config, names):
                executor = _start_executor(executor_kind, run_dir, config, ray_address, progress, stop)
            bar = progress.stage("ingest", 0)
            try:
                for stats in ingest_files(store, seed_files, config, on_progress=bar.advance):
                    summary.new_seeds += stats.seeds
                    if not stats.skipped:
                        progress.say(f"ingest     {stats.describe()}")
            finally:
                bar.close()
            if not summary.new_seeds and run_log.nothing_changed(store, config, names):
                outcome = "finished"
                return summary
            kept = _samples(store) if max_samples else 0
            if max_samples and kept >= max_samples:  # enough already: no wave
                summary.stopped_at = kept
                outcome = "stopped"
                return summary
            executor = executor or _start_executor(executor_kind, run_dir, config, ray_address, progress, stop)
            needed = config.committee.reviewers + 2
            if len(config.models) < needed:
                progress.say(f"note: the pool has {len(config.models)} model(s), fewer than reviewers + 2 = {needed}: "
                             f"some roles go to the same model (see docs/config.md, 'Roles with a small pool')")
            con = store.connect(memory_limit=DUCKDB_MEMORY)
            preflight(stages, con, config)
            # The stages' lookups run on a cursor of the same database: one memory limit for both.
            ctx = open_context(store, config, con.cursor())
            donors = carry.donors(store, config, stages)
            finished = _run_waves(stages, store, con, ctx, executor, progress, stop, summary, max_samples, donors)
            outcome = "finished" if finished else "stopped"
        except Interrupted:
            outcome = "interrupted"
            raise
        finally:
            progress.close()
            if executor is not None:
                executor.close()
            if ctx is not None:
                ctx.pool.close()
            try:
                run_log.record(store, run_id, started, t0, outcome, config, seed_files, names)
            except OSError:
                pass  # the run log is informative only; the error that stopped the run is the one to show
    return summary


def _samples(store: Store) -> int:
    return kept_versions.count_rows(store.table_dir("samples"))


def _run_waves(stages: list[Stage], store: Store, con, ctx: Context, executor: Executor, progress: Progress,
               stop: _StopFlag, summary: RunSummary, max_samples: int, donors: dict[str, str]) -> bool:
    """Every stage over what is pending, round by round and, within a round, wave by wave, in passes
    (gra_stream/passes.py): two at once where the executor takes batches from more than one thread and
    `[waves] overlap` is on; stage by stage once generation is done. Round r's tasks are dealt only once
    round r - 1 has been through every stage, so its samples are in the pool. False when `max_samples`
    stopped the run before its last wave."""
    plan = waves.plan(con, ctx.config.waves.first_seeds)
    rounds, last_stage = ctx.config.rounds, len(stages) - 1
    halt = _Halt(stop)
    lock = threading.Lock()  # the summary, counted from every pass's thread
    worked: dict[tuple[int, int], int] = {}

    idle = idle_stages(stages, con, ctx.config)
    # Waves stream what generation makes through the later stages. Once it has nothing left to do (a config
    # change that re-decides, a run resumed after its last generation batch), the passes go stage by stage,
    # and each stage takes every wave in one pass: the same rows, from one pending query instead of one per
    # wave; an ordered stage's come wave by wave, in the batches of one pass per wave (`Scope.cuts`), and
    # its workers prepare the next wave's while it finishes one. Not with `max_samples`, which stops after
    # a wave.
    by_stage = not max_samples and _generation_done(stages, idle)
    cuts = tuple(w.below for w in plan[:-1])

    def every_wave(stage: Stage) -> bool:
        """Whether the stage's pass over the first wave takes every wave."""
        return by_stage and not stage.streams

    def run(p: Pass) -> None:
        if p.stage in idle:
            return
        stage = stages[p.stage]
        whole = every_wave(stage)
        if whole and p.wave:
            return  # its pass over the first wave took every wave

        def tally(rows: int, calls: int) -> None:
            with lock:
                summary.rows_by_stage[stage.name] = summary.rows_by_stage.get(stage.name, 0) + rows
                summary.llm_calls += calls
                worked[p.round, p.wave] = worked.get((p.round, p.wave), 0) + rows
        if whole:  # every wave; an ordered stage's wave by wave
            scope = Scope(p.round, None, cuts if stage.ordered else ())
        else:
            scope = Scope(p.round, plan[p.wave].below)
        lookups = ctx.con.cursor()  # a pass's own: a DuckDB connection is not shared between threads
        try:
            _run_stage(stage, store, con, replace(ctx, con=lookups), executor, progress, halt, scope, tally,
                       donors.get(stage.name, ""))
        except Interrupted:
            if stop.raised or not halt.enough:
                raise  # the run stops here; with enough samples, a pass of a later wave just ends early
        finally:
            lookups.close()

    def finished(p: Pass, _) -> bool:
        if p.stage != last_stage:
            return True
        # Stage by stage, one headline for the round, once its last wave is through.
        whole = every_wave(stages[last_stage])
        if whole and p.wave < len(plan) - 1:
            return True
        through = range(len(plan)) if whole else (p.wave,)
        if not any(worked.get((p.round, w)) for w in through):
            return True
        kept = _samples(store)
        wave = f"wave {p.wave + 1}/{len(plan)}"
        progress.wave(f"round {p.round}, {wave}" if rounds > 1 else wave, plan[p.wave].through, plan[-1].through, kept,
                      round=p.round, rounds=rounds)
        last = p.round == rounds and p.wave == len(plan) - 1
        if max_samples and kept >= max_samples and not last:
            summary.stopped_at, halt.enough = kept, True
            return False
        return True

    at_once = PASSES_AT_ONCE if ctx.config.waves.overlap and executor.overlaps else 1

    def fail(error: BaseException) -> None:  # said at once: the passes still running may take minutes to stop
        halt.fail()
        if not isinstance(error, Interrupted):  # a stop signal: the run says so itself
            why = (str(error) or repr(error)).splitlines()[0]
            progress.say(f"stopping once the batches in flight are committed: {why}")

    run_passes(len(plan), len(stages), rounds, run, finished, fail, at_once, by_stage, declared_waits(stages))
    return not halt.enough


def _generation_done(stages: list[Stage], idle: set[int]) -> bool:
    """Whether the stages that make the rows the waves stream have nothing pending in any wave or round."""
    streaming = [i for i, stage in enumerate(stages) if stage.streams]
    return bool(streaming) and all(i in idle for i in streaming)


class _Halt:
    """What a pass checks between batches: a stop signal, or the run asking its passes to stop (enough
    samples kept, or another pass failed)."""

    def __init__(self, stop: _StopFlag):
        self.stop, self.enough, self.failed = stop, False, False

    @property
    def raised(self) -> bool:
        return self.stop.raised or self.enough or self.failed

    def fail(self) -> None:
        self.failed = True


def _run_stage(stage: Stage, store: Store, con, ctx: Context, executor: Executor, progress: Progress,
               stop, scope: Scope, tally, donor: str = "") -> None:
    """One pass of `stage` over the rows `scope` takes; `tally(rows, llm_calls)` counts its work. With a
    `donor` (a kept version), the rows it made there of the same input rows are carried first."""
    pending = store.root / ".tmp" / f"pending-{stage.name}-{os.getpid()}.arrow"
    try:
        if donor:
            tally(carry.carry_rows(con, store, stage, donor, stage.pending(ctx.config, scope), pending,
                                   stage.rows_per_batch(ctx.config)), 0)
        total = drain(con, stage.pending(ctx.config, scope), pending)
        release_freed_memory()  # the query's sort is over; the stage's peak comes next
        if total == 0:
            return
        tally(total, 0)
        size = stage.rows_per_batch(ctx.config)
        bar = progress.stage(stage.name, total)
        try:
            if stage.setup is not None:
                stage.setup(ctx)
            for ids, out in executor.map(stage, batches(pending, size, "wave" if stage.ordered else None), ctx, stop):
                store.write_segment(stage.table, f"{stage.name}-{content_id(*ids)}", out)
                release_freed_memory()  # what the batch freed, before the next one comes in
                tally(0, out.height if stage.llm else 0)
                bar.advance(len(ids), int(out["completion_tokens"].sum()) if "completion_tokens" in out.columns else 0)
        finally:
            bar.close()
    finally:
        pending.unlink(missing_ok=True)
