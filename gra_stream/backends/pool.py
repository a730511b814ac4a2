"""The pool's backends, started on first use and kept for the whole run, and working at the same time."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gra_stream.backends import Backend, ChatRequest, Completion
from gra_stream.backends.vllm_engine import engines_work_at_once
from gra_stream.config import Config, ModelSpec


@dataclass
class ModelPool:
    """Backends for the pool's models, started on first use and kept for the whole run. `backends` may give
    some of them ready-made (a scripted backend in a test, say), by model name."""
    config: Config
    cache: object | None = None    # a CallCache: finished calls are reused instead of paid again
    loads: list[str] = field(default_factory=list)  # in-process engines started, in order
    backends: dict[str, Backend] = field(default_factory=dict)  # least recently used first

    def spec(self, name: str) -> ModelSpec:
        return next(m for m in self.config.models if m.name == name)

    def names(self) -> list[str]:
        return [m.name for m in self.config.models]

    def loaded(self, name: str) -> bool:
        return name in self.backends

    def backend(self, name: str) -> Backend:
        if name in self.backends:
            self.backends[name] = self.backends.pop(name)  # now the most recently used
            return self.backends[name]
        spec = self.spec(name)
        if spec.backend == "vllm":
            self._make_room()
            self.loads.append(name)
        self.backends[name] = self._make(spec)
        return self.backends[name]

    def _make(self, spec: ModelSpec) -> Backend:
        if spec.backend == "fake":
            from gra_stream.backends.fake import FakeBackend

            return FakeBackend(spec.name, latency_s=spec.latency_s)
        if spec.backend == "openai":
            from gra_stream.backends.openai_http import OpenAIBackend

            return OpenAIBackend(spec)
        from gra_stream.backends.vllm_engine import VllmBackend

        return VllmBackend(spec, self.config.vllm, seed=self.config.run_seed, engines=self._engine_count())

    def _engine_count(self) -> int:
        """How many of the pool's models run in in-process engines."""
        return sum(m.backend == "vllm" for m in self.config.models)

    def _make_room(self) -> None:
        """With `vllm.resident_engines = N`, stop the least recently used engines so N - 1 remain."""
        limit = self.config.vllm.resident_engines
        engines = [n for n in self.backends if self.spec(n).backend == "vllm"]
        while limit and len(engines) >= limit:
            self.backends.pop(engines.pop(0)).close()

    def complete(self, groups: dict[str, list[ChatRequest]]) -> dict[str, list[Completion]]:
        """Each model's requests, at the same time for every backend that waits on work done outside this
        interpreter (an HTTP endpoint, an engine core in a process of its own, a fake model with a latency):
        a batch then takes as long as its slowest model, not the sum. The rest take turns: in-process engines
        when they cannot all be loaded (`vllm.resident_engines`) or when their cores run in this process
        (`engines_work_at_once`), those already loaded first (the fewest swaps); and backends that compute
        in Python (the fake one without latency), which threads would only slow down. Engines start here one
        after another: loading is not made for threads."""
        todo = sorted(groups, key=lambda m: not self.loaded(m))
        engines = [m for m in todo if self.spec(m).backend == "vllm"]
        limit = self.config.vllm.resident_engines
        at_once = engines_work_at_once(self._engine_count())
        in_turns = engines if (limit and len(engines) > limit) or not at_once else []
        together = [m for m in todo if m not in in_turns and getattr(self.backend(m), "waits", True)]
        done: dict[str, list[Completion]] = {}
        if len(together) > 1:
            with ThreadPoolExecutor(max_workers=len(together)) as threads:
                done.update(zip(together, threads.map(lambda m: self.backend(m).complete(groups[m]), together)))
        for name in todo:
            if name not in done:
                done[name] = self.backend(name).complete(groups[name])
        return done

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.backends.clear()
