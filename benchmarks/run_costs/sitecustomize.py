"""Benchmark-only instrumentation, loaded by every Python process of a `scale.py` run (this folder is on
their PYTHONPATH, which spawned workers inherit). With GRA_STREAM_RUN_COSTS_DIR set, each process writes
there what it spent on two things scale.py reports apart from the rest of the run:

- `fake-<pid>-<model>.json` ({"calls": N, "cpu_s": S}): the CPU the fake backend spent building replies,
  which a real backend spends elsewhere (on a GPU, in a server);
- `drains-<pid>.json` ({stage: {"drains": N, "s": S, "rows": R}}): the wall time of each stage's pending
  queries run to their end (`gra_stream.pending.drain_under`, a carry's included), which the runner
  spends on one DuckDB thread.

The product itself carries no such accounting."""
import json
import os
import time

_DIR = os.environ.get("GRA_STREAM_RUN_COSTS_DIR")

if _DIR:
    from gra_stream import pending
    from gra_stream.backends import fake

    _complete = fake.FakeBackend.complete

    def _counted(self, requests):
        start = time.thread_time()
        out = _complete(self, requests)
        calls, cpu_s = getattr(self, "_bench_cpu", (0, 0.0))
        self._bench_cpu = calls + len(requests), cpu_s + time.thread_time() - start
        with open(os.path.join(_DIR, f"fake-{os.getpid()}-{self.name}.json"), "w") as f:  # a worker may end unclosed
            json.dump({"calls": self._bench_cpu[0], "cpu_s": self._bench_cpu[1]}, f)
        return out

    fake.FakeBackend.complete = _counted

    _drain_under = pending.drain_under
    _drains: dict[str, dict] = {}  # per stage: drains, seconds, rows

    def _timed(limit, con, query, path):
        start = time.perf_counter()
        rows = _drain_under(limit, con, query, path)
        stage = path.name.split("-")[1]  # pending-<stage>-<pid>.arrow; one drain at a time (memory.LARGE_STEPS)
        done = _drains.setdefault(stage, {"drains": 0, "s": 0.0, "rows": 0})
        done["drains"] += 1
        done["s"] += time.perf_counter() - start
        done["rows"] += rows
        with open(os.path.join(_DIR, f"drains-{os.getpid()}.json"), "w") as f:
            json.dump(_drains, f)
        return rows

    pending.drain_under = _timed
