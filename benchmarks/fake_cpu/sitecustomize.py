"""Benchmark-only instrumentation, loaded by every Python process of a `scale.py` run (this folder is on
their PYTHONPATH, which spawned workers inherit): with GRA_STREAM_FAKE_CPU_DIR set, each process counts the
CPU time the fake backend spends building replies, CPU that a real backend spends elsewhere (on a GPU, in a
server), in its own file there, `<pid>-<model>.json` ({"calls": N, "cpu_s": S}), so that scale.py can tell
that cost from the pipeline's own. The product itself carries no such accounting."""
import json
import os
import time

_DIR = os.environ.get("GRA_STREAM_FAKE_CPU_DIR")

if _DIR:
    from gra_stream.backends import fake

    _complete = fake.FakeBackend.complete

    def _counted(self, requests):
        start = time.thread_time()
        out = _complete(self, requests)
        calls, cpu_s = getattr(self, "_bench_cpu", (0, 0.0))
        self._bench_cpu = calls + len(requests), cpu_s + time.thread_time() - start
        with open(os.path.join(_DIR, f"{os.getpid()}-{self.name}.json"), "w") as f:  # a worker may end unclosed
            json.dump({"calls": self._bench_cpu[0], "cpu_s": self._bench_cpu[1]}, f)
        return out

    fake.FakeBackend.complete = _counted
