"""OpenAI-compatible servers (`vllm serve`, or anything with /v1/chat/completions).

Requests of a batch run concurrently on one asyncio loop, at most `max_in_flight` at a time per
endpoint. A request that fails at the transport level (connection error, timeout, HTTP 429 or 5xx, or a
200 whose body is not a chat completion) is retried with exponential backoff, honouring `Retry-After`,
up to `max_retries` times; every retry is counted on the completion. What still fails comes back as an
empty completion with finish_reason "error", which the caller re-asks and finally quarantines: a broken
server never stops the run and never loses a row.
"""
from __future__ import annotations

import asyncio
import json
import random
import time

import httpx

from gra_stream.backends import ChatRequest, Completion
from gra_stream.config import ModelSpec

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend:
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.url = spec.url.rstrip("/") + "/chat/completions"
        self.model = spec.api_model or spec.path

    def close(self) -> None:
        pass

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        return asyncio.run(self._all(requests))

    async def _all(self, requests: list[ChatRequest]) -> list[Completion]:
        limit = asyncio.Semaphore(self.spec.max_in_flight)
        timeout = httpx.Timeout(self.spec.timeout_s, connect=min(10.0, self.spec.timeout_s))
        async with httpx.AsyncClient(timeout=timeout) as client:
            return list(await asyncio.gather(*(self._one(client, limit, r) for r in requests)))

    def body(self, r: ChatRequest) -> dict:
        body = {"model": self.model, "messages": list(r.messages), "max_tokens": r.max_tokens,
                "temperature": r.temperature, "top_p": r.top_p, "seed": r.seed}
        if r.repetition_penalty != 1.0:
            body["repetition_penalty"] = r.repetition_penalty  # a vLLM extension of the API
        if r.schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": r.schema, "strict": True}}
        return body

    async def _one(self, client: httpx.AsyncClient, limit: asyncio.Semaphore, r: ChatRequest) -> Completion:
        retries = 0
        last_error = ""
        body = self.body(r)
        for attempt in range(self.spec.max_retries + 1):
            wait = min(30.0, 0.25 * 2 ** attempt) * (0.5 + random.random())
            async with limit:
                started = time.perf_counter()
                try:
                    response = await client.post(self.url, json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    last_error = f"{type(e).__name__}"
                else:
                    latency = time.perf_counter() - started
                    if response.status_code == 200:
                        done = _parse(response.content, latency, retries)
                        if done is not None:
                            return done
                        last_error = "malformed response body"
                    elif response.status_code in RETRYABLE_STATUS:
                        last_error = f"HTTP {response.status_code}"
                        wait = _retry_after(response) or wait
                    else:  # 4xx other than the above: the request itself is wrong; retrying cannot help
                        return Completion("", 0, 0, "error", 0.0, retries=retries,
                                          error=f"HTTP {response.status_code}: {response.text[:200]}")
            if attempt < self.spec.max_retries:
                retries += 1
                await asyncio.sleep(wait)
        return Completion("", 0, 0, "error", 0.0, retries=retries,
                          error=f"gave up after {retries} retries: {last_error}")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(60.0, max(0.0, float(value))) if value is not None else None
    except ValueError:
        return None


def _parse(content: bytes, latency: float, retries: int) -> Completion | None:
    try:
        data = json.loads(content)
        choice = data["choices"][0]
        text = choice["message"]["content"] or ""
        usage = data.get("usage") or {}
        return Completion(text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                          choice.get("finish_reason") or "stop", latency, retries=retries)
    except (ValueError, KeyError, IndexError, TypeError):
        return None
