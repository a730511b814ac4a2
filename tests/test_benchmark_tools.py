"""The benchmarks' own instrumentation: scale.py counts the fake backend's CPU in every process of a run,
and the runner's drains, through benchmarks/run_costs/sitecustomize.py, which the product never loads."""
import json
import os

from tests.conftest import ROOT, python_child

SCRIPT = """
from gra_stream.backends import ChatRequest
from gra_stream.backends.fake import FakeBackend
request = ChatRequest(({"role": "user", "content": "hello there"},), {"type": "string"}, 100, 0.7, 1.0, 1)
backend = FakeBackend("fake-a")
backend.complete([request] * 3)
backend.complete([request] * 200)
import os, duckdb
from pathlib import Path
from gra_stream.pending import drain
drain(duckdb.connect(), "SELECT * FROM range(5000)", Path(os.environ["SCRATCH"]) / "pending-gate-7.arrow")
print(os.getpid())
"""


def run(env, scratch):
    return python_child(SCRIPT, env={**os.environ, "PYTHONPATH": str(ROOT / "benchmarks" / "run_costs"),
                                      "SCRATCH": str(scratch), **env}).stdout


def test_the_fake_backends_cpu_and_the_drains_are_counted_per_process_only_when_asked(tmp_path):
    costs, scratch = tmp_path / "costs", tmp_path / "scratch"
    costs.mkdir()
    scratch.mkdir()
    run({}, scratch)
    assert list(costs.iterdir()) == []
    pid = run({"GRA_STREAM_RUN_COSTS_DIR": str(costs)}, scratch).strip()
    written = json.loads((costs / f"fake-{pid}-fake-a.json").read_text())
    assert written["calls"] == 203 and 0 < written["cpu_s"] < 10
    drains = json.loads((costs / f"drains-{pid}.json").read_text())
    assert list(drains) == ["gate"] and drains["gate"]["drains"] == 1 and drains["gate"]["rows"] == 5000
    assert 0 < drains["gate"]["s"] < 10
