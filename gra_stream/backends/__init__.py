"""One small backend protocol: a list of chat requests in, one completion per request out.

Implementations: `fake` (deterministic, no model; for tests and dry runs), `vllm` (in-process engine) and
`openai` (OpenAI-compatible servers such as `vllm serve`); `pool.ModelPool` starts the pool's backends.
"""
from __future__ import annotations

from typing import NamedTuple, Protocol


class ChatRequest(NamedTuple):
    """One chat call. A tuple, not a dataclass: a run builds millions, and tuples are the cheapest to build."""
    messages: tuple[dict, ...]
    schema: dict | None
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    repetition_penalty: float = 1.0


class Completion(NamedTuple):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str          # "stop", "length" when the reply hit max_tokens, "error" when none came
    latency_s: float = 0.0
    retries: int = 0            # transport-level retries (HTTP backends)
    wait_s: float = 0.0         # seconds held back by rate limits and backoff (HTTP backends)
    error: str = ""             # why no reply came (finish_reason "error")

    @property
    def rejected(self) -> bool:
        """Whether the endpoint refused the request itself (an HTTP 400 or 422), which retrying cannot change."""
        return self.error.startswith(REJECTED)


REJECTED = "rejected: "         # how the error of a request the endpoint refused begins


class Backend(Protocol):
    def complete(self, requests: list[ChatRequest]) -> list[Completion]: ...

    def close(self) -> None: ...
