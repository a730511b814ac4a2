"""One thread steps an in-process vLLM engine; calls from any thread join the batch it is running.

`vllm.LLM.chat` runs its requests to the last one: the engine's batch shrinks to that call's slowest
replies, and a call made meanwhile (another pass's batch, a re-ask) waits for the next one. Here a call's
requests are added to the engine between two of its steps, beside those already running (continuous
batching, as vLLM's server does for its HTTP clients), and each caller gets its replies once they are
finished. Only the loop's thread touches the engine, from its start on: vLLM's CPU worker binds the
OpenMP threads of the thread that starts it, and an engine stepped from another thread ran slower
(benchmarks/README.md, *Saturation*).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future


class EngineLoop:
    def __init__(self, start: Callable[[], object], name: str):
        """Start the engine (`start()` returns a `vllm.LLM`) in the loop's thread; raises what it raised."""
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # (chats, sampling params, futures), or None: stop
        self._error: BaseException | None = None  # once a step failed, every later call fails with it
        started: Future = Future()
        self._thread = threading.Thread(target=self._run, args=(start, started), name=f"engine-{name}", daemon=True)
        self._thread.start()
        started.result()

    def chat(self, chats: list[list[dict]], params: list) -> list:
        """vLLM's RequestOutput of each chat, in order, once every one is finished."""
        futures = [Future() for _ in chats]
        self._jobs.put((chats, params, futures))
        return [f.result() for f in futures]

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _run(self, start: Callable[[], object], started: Future) -> None:
        try:
            self.llm = start()
            started.set_result(None)
        except BaseException as e:  # noqa: BLE001 - raised in the thread that made the loop
            started.set_exception(e)
            return
        running: dict[str, Future] = {}  # by the request's number in vLLM
        while True:
            try:  # wait for work while the engine has none; else take what came since the last step
                job = self._jobs.get(block=not running)
                while True:
                    if job is None:
                        self._fail(running, RuntimeError("the engine was closed"))
                        return
                    self._add(job, running)
                    job = self._jobs.get_nowait()
            except queue.Empty:
                pass
            if not running:
                continue
            try:
                outputs = self.llm.llm_engine.step()
            except Exception as e:  # noqa: BLE001 - handed to every caller waiting on this engine
                self._error = e
                self._fail(running, e)
                continue
            for out in outputs:
                if out.finished:
                    running.pop(out.request_id).set_result(out)

    def _add(self, job, running: dict[str, Future]) -> None:
        chats, params, futures = job
        if self._error is not None:
            self._fail(dict(enumerate(futures)), self._error)
            return
        try:
            ids = self.llm.enqueue_chat(chats, sampling_params=params, use_tqdm=False)
        except Exception as e:  # noqa: BLE001 - a request the engine refuses fails its own call only
            self._fail(dict(enumerate(futures)), e)
            return
        # vLLM names a request by LLM's counter (a number) and returns that name with a random suffix of its
        # own ("7-1a2b3c4d"); its outputs carry the number alone.
        running.update((i.split("-", 1)[0], f) for i, f in zip(ids, futures))

    @staticmethod
    def _fail(futures: dict, error: BaseException) -> None:
        for f in futures.values():
            f.set_exception(error)
        futures.clear()
