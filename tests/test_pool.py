"""The pool's models work at the same time: a batch's groups go to their backends from threads of their
own, except engines beyond `vllm.resident_engines`, which take turns."""
import threading

import pytest

from gra_stream.backends import ChatRequest, Completion
from gra_stream.backends.fake import FakeBackend
from gra_stream.backends.pool import ModelPool
from tests.conftest import fake_config

REQUEST = ChatRequest(({"role": "user", "content": "hi"},), None, 8, 0.7, 0.95, 0)


class Meeting:
    """A backend that waits, inside `complete`, until `n` backends are inside at once (or `timeout` passes),
    and notes the most that ever were."""

    def __init__(self, barrier: threading.Barrier, inside: list):
        self.barrier, self.inside = barrier, inside

    def complete(self, requests):
        self.inside[0] += 1
        self.inside[1] = max(self.inside[1], self.inside[0])
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            pass
        self.inside[0] -= 1
        return [Completion("{}", 1, 1, "stop") for _ in requests]

    def close(self):
        pass


def pool_of(names, backend, timeout=10.0, **config):
    barrier, inside = threading.Barrier(len(names), timeout=timeout), [0, 0]
    models = [{"name": n, "backend": backend} for n in names]
    pool = ModelPool(fake_config(models=models, **config), backends={n: Meeting(barrier, inside) for n in names})
    return pool, barrier, inside


def test_every_model_of_a_batch_works_at_the_same_time():
    names = ["a", "b", "c", "d", "e"]
    pool, barrier, inside = pool_of(names, "fake")
    done = pool.complete({n: [REQUEST] * 3 for n in names})
    assert inside[1] == 5 and not barrier.broken, "all five inside complete() at once"
    assert {n: len(c) for n, c in done.items()} == {n: 3 for n in names}


def test_engines_work_at_once_with_their_cores_in_processes_of_their_own(monkeypatch):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)  # the pool's own choice: two engines, own processes
    pool, barrier, inside = pool_of(["a", "b"], "vllm")
    pool.complete({"a": [REQUEST], "b": [REQUEST]})
    assert inside[1] == 2 and not barrier.broken


@pytest.mark.parametrize("limit,own_processes", [(1, None), (0, "0")])
def test_engines_take_turns_beyond_the_resident_limit_or_with_their_cores_here(monkeypatch, limit, own_processes):
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    if own_processes is not None:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", own_processes)
    pool, barrier, inside = pool_of(["a", "b"], "vllm", timeout=0.5, vllm={"resident_engines": limit})
    pool.complete({"a": [REQUEST], "b": [REQUEST]})
    assert inside[1] == 1 and barrier.broken, "never two engines at once"


def test_backends_that_compute_in_python_take_turns():
    pool, barrier, inside = pool_of(["a", "b"], "fake", timeout=0.5)
    for backend in pool.backends.values():
        backend.waits = False  # as the fake backend without a latency: threads would only contend for the GIL
    pool.complete({"a": [REQUEST], "b": [REQUEST]})
    assert inside[1] == 1 and barrier.broken
    assert not FakeBackend("m").waits and FakeBackend("m", latency_s=0.1).waits
