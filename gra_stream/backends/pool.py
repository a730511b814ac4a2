"""The pool's backends, started on first use and kept for the whole run."""
from __future__ import annotations

from dataclasses import dataclass, field

from gra_stream.backends import Backend
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

        return VllmBackend(spec, self.config.vllm, seed=self.config.run_seed)

    def _make_room(self) -> None:
        """With `vllm.resident_engines = N`, stop the least recently used engines so N - 1 remain."""
        limit = self.config.vllm.resident_engines
        engines = [n for n in self.backends if self.spec(n).backend == "vllm"]
        while limit and len(engines) >= limit:
            self.backends.pop(engines.pop(0)).close()

    def close(self) -> None:
        for backend in self.backends.values():
            backend.close()
        self.backends.clear()
