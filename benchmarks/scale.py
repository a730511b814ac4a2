"""Scale with flat memory: the whole pipeline with the fake backend (instant replies) over seed corpora
of growing size, built by cycling the real Alpaca 52k with row numbers appended.

Prints rows/s per stage, end-to-end seed rows/s and peak RSS of each run, then the time of a re-run of
the largest finished run (which must do no work). Each run is a separate `gra-stream run` process with
the defaults a user gets (`--executor auto`: worker processes on every core of a machine with more than
one; `--executor local` for one process). Peak RSS
is sampled every 0.1 s over the whole process tree: the runner's own peak and the peak of the sum of the
runner and its workers, which is the run's memory, and that sum without file-backed pages (RssAnon: the
heap, leaving out shared libraries and memory-mapped indexes, which every process counts again). Also printed: the CPU time of the whole process tree,
as a share of every core over the wall time (how close the run is to CPU-bound), and how much of it the
fake backend spent building its replies (GRA_STREAM_RUN_COSTS_DIR, benchmarks/run_costs/sitecustomize.py): CPU a
real backend spends on a GPU or in a server, which the goal's "instant replies" leaves out, but which
this benchmark's 2 cores pay; and the wall time of the stages' pending queries (drains, on one DuckDB thread
in the runner), by stage. And per part of the run (ingest, then each wave through every stage): its
wall time, the CPU of the runner and of its workers in it, how busy that kept the cores, and the peak RSS
of the run and of the runner while it ran (which wave sets the run's peak).

    python benchmarks/scale.py                                  # 10k and 100k rows
    python benchmarks/scale.py --sizes 10000,100000,1000000

The diversity filter runs with its default search, `index = "ivf"` (exact up to ~10k references, then
cells; `--diversity exact` for the paper's exact search at every size, whose time grows with the square
of the corpus: about 4 TFLOP per 4,096-row batch at 1M seeds, over an hour on 2 cores; `--diversity off`
to leave the filter out). `--overlap off` takes the passes one at a time, to compare with the default.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALPACA = ROOT / "data" / "seeds" / "alpaca_52k_en.jsonl.gz"
RUN_COSTS = Path(__file__).resolve().parent / "run_costs"  # counts the fake backend's CPU and the drains in the run
GOALS = "goals: peak RSS at the largest size <= 1.3 x the next smaller; >= 2,000 seed rows/s end to end; re-run < 5 s"


def fake_config(path: Path, top: str = "", diversity: str = "", latency: float = 0.0, tables: str = "",
                embedder: str = "hashing") -> Path:
    """A config of the five-model fake pool (a `latency` in seconds per batch of calls) and the hashing
    embedder (or `embedder`): `top` holds top-level keys and tables before the pool, `diversity` more
    [diversity] keys, `tables` tables after it."""
    path.write_text(top + "".join(f'[[models]]\nname = "fake-{c}"\nbackend = "fake"\nlatency_s = {latency}\n'
                                  for c in "abcde") + f'[diversity]\nmodel = "{embedder}"\n' + diversity + tables)
    return path


def build_corpus(n: int, path: Path) -> Path:
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            r = rows[i % len(rows)]
            out.write(json.dumps({"instruction": f"{r['en_instruction']} (#{i})", "input": r["en_input"],
                                  "output": r["en_output"]}, ensure_ascii=False) + "\n")
    return path


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory; field "RssFile" is the part that maps files (page cache the kernel
    can drop and read again, such as the memory-mapped indexes), "RssAnon" its own heap."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024
    except (OSError, StopIteration):
        return 0.0


_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of one process so far, or None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError):
        return None


def _machine_s() -> tuple[float, float]:
    """(steal, idle) CPU seconds of the whole machine since boot, over all cores (/proc/stat). Steal is
    time the hypervisor gave this machine's cores to another guest: a run cannot use it, and on a noisy
    host it explains a slow run better than the code does."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / _TICKS, int(fields[4]) / _TICKS
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def _children(pid: int) -> list[int]:
    """The child processes of `pid`, started from any of its threads."""
    children = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return children


def wave_mark(line: str) -> str | None:
    """"ingest" or "wave k/N" when `line` says that part of the run is over (the run's stderr prints a line
    when each seed file is ingested and when each wave has been through every stage); else None."""
    if line.startswith("ingest ") and ": " in line:
        return "ingest"
    if line.startswith("wave "):
        return " ".join(line.split()[:2])
    return None


def progress_line(line: str) -> tuple[str, float] | None:
    """(stage, rows/s) of a stage's line at the end of the run's stderr; None for any other line."""
    parts = line.split()
    if len(parts) > 4 and "rows/s" in parts:
        return parts[0], float(parts[parts.index("rows/s") - 1])
    return None


@dataclass
class StageCpu:
    wall_s: float
    runner_s: float     # CPU of the runner process
    workers_s: float    # CPU of its worker processes
    peak_mib: float = 0.0       # peak RSS of the run (the runner with its workers) while the stage ran
    runner_peak_mib: float = 0.0


class TreeWatch:
    """Samples a run's process tree every 0.1 s: the peak RSS of the runner and of the sum over it and its
    descendants (the run's memory), and the CPU of the runner and of its workers, split by stage.

    A progress line on stderr names the stage that is running (without a terminal, a stage prints one
    every 10 s and when it ends), so the time and CPU since the previous line belong to the stage it
    names; the process's start counts with the first stage that prints. A worker's CPU is sampled
    while it lives, so the last 0.1 s of a worker that exits can be missed."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.own, self.tree = proc, 0.0, 0.0
        self.tree_anon = 0.0                             # peak of the run's heap: RSS less file-backed pages
        self.t0 = time.perf_counter()
        self.totals = (0.0, 0.0, 0.0)                   # wall, runner CPU, workers CPU so far
        self.rss: list[tuple[float, float, float]] = []  # every sample: wall, runner RSS, run RSS
        self.marks: list[tuple[str, tuple[float, float, float]]] = []
        self.lines: list[str] = []
        self._workers: dict[int, float] = {}            # every worker seen: its CPU when last sampled
        self.threads = [threading.Thread(target=self._sample, daemon=True),
                        threading.Thread(target=self._read, daemon=True)]
        for t in self.threads:
            t.start()

    def _sample(self) -> None:
        pid = self.proc.pid
        while os.path.exists(f"/proc/{pid}"):
            own, runner = _rss_mib(pid), _cpu_s(pid)
            todo, total, anon = _children(pid), own, _rss_mib(pid, "RssAnon")
            while todo:
                p = todo.pop()
                cpu = _cpu_s(p)
                if cpu is not None:
                    self._workers[p] = cpu
                total += _rss_mib(p)
                anon += _rss_mib(p, "RssAnon")
                todo += _children(p)
            self.own, self.tree, self.tree_anon = max(self.own, own), max(self.tree, total), max(self.tree_anon, anon)
            self.rss.append((time.perf_counter() - self.t0, own, total))
            if runner is not None:
                self.totals = (time.perf_counter() - self.t0, runner, sum(self._workers.values()))
            time.sleep(0.1)

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line)
            mark = wave_mark(line)
            if mark is not None:
                self.marks.append((mark, self.totals))

    def wait(self) -> tuple[str, dict[str, StageCpu]]:
        """The run's stderr, and per part of the run (ingest, then each wave) its wall time and CPU, then
        what came after the last wave (the summary, closing the workers); a part's peak RSS is that of the
        samples taken while it ran."""
        self.proc.wait()
        for t in self.threads:
            t.join()
        stages: dict[str, StageCpu] = {}
        before = (0.0, 0.0, 0.0)
        marks = self.marks + [("after the last wave", self.totals)]
        samples = iter(self.rss)
        sample = next(samples, None)
        for i, (name, now) in enumerate(marks):
            wall, runner, workers = (a - b for a, b in zip(now, before))
            s = stages.setdefault(name, StageCpu(0.0, 0.0, 0.0))
            s.wall_s, s.runner_s, s.workers_s = s.wall_s + wall, s.runner_s + runner, s.workers_s + workers
            while sample is not None and (sample[0] <= now[0] or i == len(marks) - 1):
                s.runner_peak_mib, s.peak_mib = max(s.runner_peak_mib, sample[1]), max(s.peak_mib, sample[2])
                sample = next(samples, None)
            before = now
        return "".join(self.lines), stages


@dataclass
class Run:
    elapsed: float          # wall seconds
    watch: TreeWatch        # its peak RSS (own, tree)
    stderr: str             # the run's progress output
    cpu_s: float            # user + system CPU of the whole process tree
    fake_cpu_s: float       # ... of which the fake backend spent building replies
    fake_calls: int
    drains: dict[str, dict[str, float]]  # per stage: its pending queries' count, wall seconds and rows
    stages: dict[str, StageCpu]
    steal_s: float          # CPU seconds the hypervisor took from this machine's cores meanwhile
    idle_s: float           # ... that no process used


def run(seeds: Path, run_dir: Path, config: Path, executor: str) -> Run:
    """One `gra-stream run` child process: its wall time, peak RSS, CPU (by stage too), the fake
    backend's share, and its drains."""
    with tempfile.TemporaryDirectory(prefix="gra-run-costs-") as costs_dir:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        machine = _machine_s()
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                                 "--config", str(config), *(["--executor", executor] if executor else [])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "GRA_STREAM_RUN_COSTS_DIR": costs_dir,
                                     "PYTHONPATH": os.pathsep.join(filter(None, [str(RUN_COSTS),
                                                                                os.environ.get("PYTHONPATH")]))})
        watch = TreeWatch(proc)
        stderr, stages = watch.wait()
        elapsed = time.perf_counter() - t0
        steal, idle = (b - a for a, b in zip(machine, _machine_s()))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers too: each process waits for its own
        if proc.returncode:
            sys.exit(stderr[-2000:])
        fake = [json.loads(f.read_text()) for f in Path(costs_dir).glob("fake-*.json")]
        drains = {}
        for f in Path(costs_dir).glob("drains-*.json"):  # the runner's
            drains.update(json.loads(f.read_text()))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Run(elapsed, watch, stderr, cpu, sum(f["cpu_s"] for f in fake), sum(f["calls"] for f in fake), drains,
               stages, steal, idle)


def stage_rates(stderr: str) -> dict[str, float]:
    """Each stage's rows/s, from its last progress line."""
    return dict(filter(None, map(progress_line, stderr.splitlines())))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--executor", choices=["auto", "processes", "local"], default="",
                    help="default: none given, so the run's own default (auto)")
    ap.add_argument("--diversity", choices=["default", "ivf", "exact", "off"], default="default")
    ap.add_argument("--overlap", choices=["default", "off"], default="default",
                    help="off: [waves] overlap = false, passes one at a time (the default overlaps two)")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gra-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    diversity = {"off": "enabled = false\n", "exact": 'index = "exact"\n', "ivf": 'index = "ivf"\n', "default": ""}[args.diversity]
    waves = "[waves]\noverlap = false\n" if args.overlap == "off" else ""
    config = fake_config(work / "fake.toml", "", diversity, tables=waves)
    print(f"workdir {work}; {os.cpu_count()} cores; --executor {args.executor or 'not given (auto)'}; "
          f"diversity search {args.diversity}; overlap {args.overlap}")
    print(GOALS)
    peaks = []
    for n in sizes:
        seeds = build_corpus(n, work / f"seeds_{n}.jsonl")
        run_dir = work / f"run_{n}"
        if run_dir.exists():  # a run left by an earlier benchmark in this workdir: it would only resume
            print(f"removing the earlier {run_dir}")
            shutil.rmtree(run_dir)
        done = run(seeds, run_dir, config, args.executor)
        peaks.append(done.watch)
        rates = "  ".join(f"{k} {v:,.0f}" for k, v in stage_rates(done.stderr).items())
        print(f"{n:>9,} seeds: {done.elapsed:8.1f} s  {n / done.elapsed:8,.0f} seed rows/s end to end  "
              f"peak RSS {done.watch.tree:6.0f} MiB (the runner alone {done.watch.own:5.0f} MiB; "
              f"without file-backed pages {done.watch.tree_anon:6.0f} MiB)")
        print(f"           rows/s per stage: {rates}")
        cores = os.cpu_count() or 1
        print(f"           CPU of the whole process tree {done.cpu_s:,.0f} s: {done.cpu_s / (cores * done.elapsed):.0%} "
              f"of {cores} cores over the wall time; of it the fake backend building replies {done.fake_cpu_s:,.0f} s "
              f"({done.fake_cpu_s / done.cpu_s:.0%}; {done.fake_calls:,} calls, "
              f"{1e6 * done.fake_cpu_s / max(1, done.fake_calls):.0f} us each)")
        drained = sum(d["s"] for d in done.drains.values())
        by_stage = ", ".join(f"{k} {d['s']:.1f}" for k, d in sorted(done.drains.items(), key=lambda kv: -kv[1]["s"]))
        print(f"           pending queries drained (one DuckDB thread in the runner): {drained:,.1f} s in "
              f"{sum(d['drains'] for d in done.drains.values())} drains ({drained / done.elapsed:.0%} of the wall time); "
              f"by stage: {by_stage}")
        print(f"           the machine meanwhile: {done.steal_s:,.0f} s of its cores' time stolen by the hypervisor "
              f"({done.steal_s / (cores * done.elapsed):.0%}), {done.idle_s:,.0f} s idle "
              f"({done.idle_s / (cores * done.elapsed):.0%})")
        print(f"           {'by part':<22} {'wall s':>7} {'CPU s: runner':>14} {'workers':>8} {'busy (' + str(cores) + ' cores)':>14}"
              f" {'peak MiB: run':>14} {'runner':>7}")
        for name, c in done.stages.items():
            busy = (c.runner_s + c.workers_s) / (cores * max(c.wall_s, 1e-9))
            print(f"           {name:<22} {c.wall_s:7.1f} {c.runner_s:14.1f} {c.workers_s:8.1f} {busy:14.0%}"
                  f" {c.peak_mib:14.0f} {c.runner_peak_mib:7.0f}")
    if len(peaks) > 1:
        print(f"peak RSS ratio {sizes[-1]:,} / {sizes[-2]:,}: {peaks[-1].tree / peaks[-2].tree:.2f} with its workers, "
              f"{peaks[-1].own / peaks[-2].own:.2f} runner alone, {peaks[-1].tree_anon / peaks[-2].tree_anon:.2f} "
              f"without file-backed pages (goal <= 1.30)")
    again = run(work / f"seeds_{sizes[-1]}.jsonl", work / f"run_{sizes[-1]}", config, args.executor)
    print(f"re-run of the finished {sizes[-1]:,}-row run: {again.elapsed:.2f} s (goal < 5 s); "
          f"{'did no work' if 'nothing to do' in again.stderr else 'DID WORK'}")


if __name__ == "__main__":
    main()
