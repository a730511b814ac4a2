"""One small backend protocol: a list of chat requests in, one completion per request out.

Implementations: `fake` (deterministic, no model; for tests and dry runs), `vllm` (in-process engine) and
`openai` (OpenAI-compatible servers such as `vllm serve`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gra_stream.config import Config, ModelSpec


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[dict, ...]
    schema: dict | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    repetition_penalty: float = 1.0


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str          # "stop", "length" when the reply hit max_tokens, "error" when none came
    latency_s: float = 0.0
    retries: int = 0            # transport-level retries (HTTP backends)
    error: str = ""             # why no reply came (finish_reason "error")


class Backend(Protocol):
    def complete(self, requests: list[ChatRequest]) -> list[Completion]: ...

    def close(self) -> None: ...


@dataclass
class ModelPool:
    """Backends for the pool's models, started on first use and kept for the whole run."""
    config: Config
    cache: object | None = None    # a CallCache: finished calls are reused instead of paid again
    _backends: dict[str, Backend] = field(default_factory=dict)

    def spec(self, name: str) -> ModelSpec:
        return next(m for m in self.config.models if m.name == name)

    def names(self) -> list[str]:
        return [m.name for m in self.config.models]

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            spec = self.spec(name)
            if spec.backend == "fake":
                from gra_stream.backends.fake import FakeBackend

                self._backends[name] = FakeBackend(spec.name, latency_s=spec.latency_s)
            elif spec.backend == "openai":
                from gra_stream.backends.openai_http import OpenAIBackend

                self._backends[name] = OpenAIBackend(spec)
            else:
                from gra_stream.backends.vllm_engine import VllmBackend

                self._backends[name] = VllmBackend(spec, self.config.vllm, seed=self.config.run_seed)
        return self._backends[name]

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
