"""The engine loop adds every caller's requests to the batch the engine is running (continuous batching),
and hands each caller its own replies. Driven here by a stand-in for `vllm.LLM` that counts steps; the
real engine is in tests/scenarios/test_real_model.py."""
import threading
import time
from types import SimpleNamespace

import pytest

from gra_stream.backends.engine_loop import EngineLoop


class SteppedEngine:
    """Stands in for `vllm.LLM`: a request asks for `steps` engine steps (its sampling params here) and its
    reply is its chat's text; each step notes how many requests it ran."""

    def __init__(self, fail_at_step=0, refuse="", pause_s=0.002):
        self.llm_engine = self
        self.running: dict[str, list] = {}
        self.batches: list[int] = []
        self.counter = 0
        self.fail_at_step, self.refuse, self.pause_s = fail_at_step, refuse, pause_s

    def enqueue_chat(self, chats, sampling_params, use_tqdm):
        if any(chat[0]["content"] == self.refuse for chat in chats):
            raise ValueError("refused")
        ids = []
        for chat, steps in zip(chats, sampling_params):
            self.counter += 1
            self.running[str(self.counter)] = [steps, chat[0]["content"]]
            ids.append(f"{self.counter}-1a2b3c4d")  # as vLLM returns them: its number, then a suffix
        return ids

    def step(self):
        self.batches.append(len(self.running))
        if len(self.batches) == self.fail_at_step:
            raise RuntimeError("engine died")
        time.sleep(self.pause_s)
        done = []
        for request_id, state in list(self.running.items()):
            state[0] -= 1
            if state[0] == 0:
                del self.running[request_id]
                done.append(SimpleNamespace(request_id=request_id, finished=True, text=state[1]))
        return done


def chats(*texts):
    return [[{"role": "user", "content": t}] for t in texts]


def in_thread(loop, texts, steps, out, key):
    def call():
        try:
            out[key] = [o.text for o in loop.chat(chats(*texts), steps)]
        except Exception as e:  # noqa: BLE001 - the test looks at it
            out[key] = e
    thread = threading.Thread(target=call)
    thread.start()
    return thread


def test_each_caller_gets_its_own_replies_in_order_while_both_share_the_engines_steps():
    engine = SteppedEngine()
    loop = EngineLoop(lambda: engine, "m")
    out = {}
    long = in_thread(loop, ["a1", "a2", "a3"], [200, 150, 100], out, "long")
    while len(engine.batches) < 2:  # the long call is running
        time.sleep(0.001)
    short = [o.text for o in loop.chat(chats("b1", "b2"), [5, 3])]
    assert short == ["b1", "b2"]
    assert "long" not in out, "the short call finished while the long one still ran"
    long.join()
    assert out["long"] == ["a1", "a2", "a3"]
    assert max(engine.batches) == 5, "the short call's requests ran in the long call's batch"
    assert len(engine.batches) == 200, "no step was spent on one call alone that the other could have shared"
    loop.close()


def test_a_request_the_engine_refuses_fails_its_own_call_only():
    engine = SteppedEngine(refuse="bad", pause_s=0.01)
    loop = EngineLoop(lambda: engine, "m")
    out = {}
    good = in_thread(loop, ["a"], [20], out, "good")
    with pytest.raises(ValueError, match="refused"):
        loop.chat(chats("x", "bad"), [1, 1])
    good.join()
    assert out["good"] == ["a"]
    loop.close()


def test_a_failed_step_fails_every_waiting_call_and_every_later_one():
    engine = SteppedEngine(fail_at_step=10)
    loop = EngineLoop(lambda: engine, "m")
    out = {}
    first = in_thread(loop, ["a"], [100], out, "first")
    while len(engine.batches) < 2:
        time.sleep(0.001)
    second = in_thread(loop, ["b"], [100], out, "second")
    first.join()
    second.join()
    assert all(isinstance(out[k], RuntimeError) for k in ("first", "second")), out
    with pytest.raises(RuntimeError, match="engine died"):
        loop.chat(chats("c"), [1])
    loop.close()


def test_closing_stops_the_loop_thread():
    loop = EngineLoop(SteppedEngine, "m")
    assert loop.chat(chats("a"), [2])[0].text == "a"
    loop.close()
    assert not loop._thread.is_alive()


def test_the_engine_starts_in_the_loops_thread_and_a_failed_start_raises_in_the_caller():
    threads = []

    def start():
        threads.append(threading.current_thread())
        return SteppedEngine()
    loop = EngineLoop(start, "m")
    assert threads == [loop._thread] and loop._thread is not threading.current_thread()
    loop.close()

    def broken():
        raise ValueError("no such model")
    with pytest.raises(ValueError, match="no such model"):
        EngineLoop(broken, "m")
