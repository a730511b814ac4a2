"""The benchmarks' own instrumentation: scale.py counts the fake backend's CPU in every process of a run
through benchmarks/fake_cpu/sitecustomize.py, which the product never loads."""
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
import os; print(os.getpid())
"""


def run(env):
    return python_child(SCRIPT, env={**os.environ, "PYTHONPATH": str(ROOT / "benchmarks" / "fake_cpu"), **env}).stdout


def test_the_fake_backends_cpu_is_counted_per_process_only_when_asked(tmp_path):
    run({})
    assert list(tmp_path.iterdir()) == []
    pid = run({"GRA_STREAM_FAKE_CPU_DIR": str(tmp_path)}).strip()
    written = json.loads((tmp_path / f"{pid}-fake-a.json").read_text())
    assert written["calls"] == 203 and 0 < written["cpu_s"] < 10
