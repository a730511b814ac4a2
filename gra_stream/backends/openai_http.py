"""OpenAI-compatible servers: `vllm serve` on your own machines, or a hosted provider.

Each endpoint has one event loop, in a thread of its own, for the whole run: its HTTP connections and its
throttle (backends/throttle.py: adaptive requests in flight, shared pauses after 429s, per-minute budgets)
carry over from batch to batch. A request that fails at the transport level (connection error, timeout,
HTTP 429 or 5xx, or a 200 whose body is not a chat completion) is retried with exponential backoff, or
after the server's `Retry-After`, up to `max_retries` times; retries and the seconds spent waiting on rate
limits are counted on the completion. What still fails comes back as an empty completion with
finish_reason "error", which the caller re-asks and finally quarantines: a flaky server never stops the
run and never loses a row. What says that no request can succeed stops the run instead, before the batch
commits, so that its rows stay pending for the same command to resume: a refused key (HTTP 401 or 403), a
server that cannot be connected to after every retry, a batch of which no request got a reply, and HTTP
404 (no such path or model). Another 4xx comes back as a `rejected` completion: `llm.ask` stops the run
when a model's whole batch is rejected at its first attempt.

Credentials come from the environment only (`api_key_env`, `headers`), are read once at start, and never
leave this module: not in the call cache, the run directory, logs or messages.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time

import httpx

from gra_stream.backends import REJECTED, ChatRequest, Completion
from gra_stream.backends.throttle import OK, OTHER, OVERLOADED, Throttle, parse_duration
from gra_stream.config import Config, ModelSpec
from gra_stream.errors import UserError

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
OVERLOAD_STATUS = {429, 503}   # the endpoint asks for less: the adaptive limit is cut
REFUSED_STATUS = {401, 403}    # the key is missing, wrong or not allowed this model: stop the run
NOT_FOUND = 404                # no such path or model: the config is wrong, whatever the request; stop the run
MAX_RETRY_AFTER_S = 120.0
GAVE_UP = "gave up after"      # how the error of a request whose every retry failed begins
SCHEMA_IN_PROMPT = "\n\nReply with one JSON object that follows this JSON schema:\n"
STOPPED = "the run stopped with what was committed before; run the same command again once the endpoint answers"


def credential_variables(spec: ModelSpec) -> list[tuple[str, str]]:
    """(header, environment variable) for each header a model's endpoint needs: its key, then `headers`."""
    return ([("Authorization", spec.api_key_env)] if spec.api_key_env else []) + list(spec.headers)


def credential_headers(spec: ModelSpec) -> dict[str, str]:
    """The headers a model's endpoint needs, read from the environment; an unset or empty variable is a
    one-line error naming it and the model."""
    headers = {}
    for header, variable in credential_variables(spec):
        value = os.environ.get(variable, "").strip()
        if not value:
            raise UserError(f"model {spec.name!r}: the environment variable {variable} "
                            f"({'its API key' if header == 'Authorization' else 'header ' + header}) is not set")
        headers[header] = f"Bearer {value}" if header == "Authorization" else value
    return headers


def chat_completions_url(base: str) -> str:
    """The chat endpoint under a model's base URL; a query (Azure OpenAI's `?api-version=`) stays last."""
    url = httpx.URL(base)
    return str(url.copy_with(path=url.path.rstrip("/") + "/chat/completions"))


def check_credentials(config: Config) -> None:
    """Every key and header variable of the pool's HTTP models is set: checked before any request."""
    for spec in config.models:
        if spec.backend == "openai":
            credential_headers(spec)


class OpenAIBackend:
    def __init__(self, spec: ModelSpec):
        self.spec = spec
        self.url = chat_completions_url(spec.url)
        self.model = spec.api_model or spec.path
        self.headers = credential_headers(spec)
        self._secrets = [v.removeprefix("Bearer ") for v in self.headers.values()]
        self.throttle = Throttle(ceiling=spec.max_in_flight, adaptive=spec.adaptive,
                                 requests_per_minute=spec.requests_per_minute,
                                 tokens_per_minute=spec.tokens_per_minute)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"http-{spec.name}", daemon=True)
        self._thread.start()
        self._client: httpx.AsyncClient | None = None

    def complete(self, requests: list[ChatRequest]) -> list[Completion]:
        return asyncio.run_coroutine_threadsafe(self._all(requests), self._loop).result()

    def close(self) -> None:
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.aclose(), self._loop).result()
            self._client = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _all(self, requests: list[ChatRequest]) -> list[Completion]:
        if self._client is None:
            timeout = httpx.Timeout(self.spec.timeout_s, connect=min(10.0, self.spec.timeout_s))
            limits = httpx.Limits(max_connections=self.spec.max_in_flight)
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, headers=self.headers)
        tasks = [asyncio.ensure_future(self._one(r)) for r in requests]
        try:
            done = list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # a refused key or an unreachable server: the other requests stop too
                task.cancel()
            raise
        if len(done) > 1 and all(c.error.startswith(GAVE_UP) for c in done):
            raise UserError(f"model {self.spec.name!r}: no reply from {self.url} to any of the {len(done)} requests "
                            f"of a batch ({done[-1].error}); {STOPPED}")
        return done

    def body(self, r: ChatRequest) -> dict:
        mode = self.spec.structured_output
        messages = list(r.messages)
        if r.schema is not None and mode != "json_schema":  # the server does not hold the reply to it: say it
            last = messages[-1]
            messages[-1] = {**last, "content": last["content"] + SCHEMA_IN_PROMPT + json.dumps(r.schema)}
        if self.spec.reasoning_effort:  # OpenAI's reasoning models refuse max_tokens and sampling settings
            body = {"model": self.model, "messages": messages, "max_completion_tokens": r.max_tokens,
                    "reasoning_effort": self.spec.reasoning_effort, "seed": r.seed}
        else:
            body = {"model": self.model, "messages": messages, "max_tokens": r.max_tokens,
                    "temperature": r.temperature, "top_p": r.top_p, "seed": r.seed}
        if r.repetition_penalty != 1.0:
            body["repetition_penalty"] = r.repetition_penalty  # a vLLM extension of the API
        if r.schema is not None and mode == "json_schema":
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": r.schema, "strict": True}}
        elif r.schema is not None and mode == "json_object":
            body["response_format"] = {"type": "json_object"}
        return body

    async def _one(self, r: ChatRequest) -> Completion:
        retries, waited, last_error = 0, 0.0, ""
        body = self.body(r)
        # what a token budget is charged up front, as providers count it: the prompt (about 4 characters a
        # token) plus the whole completion budget
        tokens = sum(len(m["content"]) for m in r.messages) // 4 + r.max_tokens
        for attempt in range(self.spec.max_retries + 1):
            backoff = min(30.0, 0.25 * 2 ** attempt) * (0.5 + random.random())
            ticket, wait_s = await self.throttle.start(tokens)
            waited += wait_s
            outcome = OTHER
            started = time.perf_counter()
            try:
                response = await self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                last_error, outcome = "TimeoutException", OVERLOADED
            except httpx.TransportError as e:
                last_error = type(e).__name__
                if attempt == self.spec.max_retries and isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
                    raise UserError(f"model {self.spec.name!r}: cannot connect to {self.url} ({last_error}, "
                                    f"{retries} retries); {STOPPED}") from None
            else:
                latency = time.perf_counter() - started
                self.throttle.read_headers(response.headers)
                if response.status_code == 200:
                    done = _parse(response.content, latency, retries, waited)
                    if done is not None:
                        outcome = OK
                        return done
                    last_error = f"not a chat completion: {self._redact(_message(response))}"  # a proxy's page, an error
                elif response.status_code in REFUSED_STATUS:
                    raise UserError(f"model {self.spec.name!r}: {self.url} refused the request "
                                    f"(HTTP {response.status_code}): {self._redact(_message(response))}")
                elif response.status_code == NOT_FOUND:
                    raise UserError(f"model {self.spec.name!r}: {self.url} answered HTTP 404 for model "
                                    f"{self.model!r} ({self._redact(_message(response))}); check the model's "
                                    f"url (it ends with /v1 for most servers) and api_model")
                elif response.status_code in RETRYABLE_STATUS:
                    last_error = f"HTTP {response.status_code}"
                    if response.status_code in OVERLOAD_STATUS:
                        outcome = OVERLOADED
                    retry_after = parse_duration(response.headers.get("retry-after"))
                    if retry_after is not None:
                        self.throttle.pause(min(MAX_RETRY_AFTER_S, retry_after))
                        backoff = 0.0  # the pause holds back every request of this endpoint
                else:  # another 4xx: the request itself is wrong; retrying cannot help
                    return Completion("", 0, 0, "error", 0.0, retries=retries, wait_s=waited,
                                      error=f"{REJECTED}HTTP {response.status_code}: {self._redact(_message(response))}")
            finally:
                await self.throttle.finish(ticket, outcome)
            if attempt < self.spec.max_retries:
                retries += 1
                await asyncio.sleep(backoff)
                waited += backoff
        return Completion("", 0, 0, "error", 0.0, retries=retries, wait_s=waited,
                          error=f"{GAVE_UP} {retries} retries: {last_error}")

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's {"error": {"message": ...}} where it has them, else the body."""
    try:
        error = response.json().get("error")
        text = error.get("message") if isinstance(error, dict) else error
    except (ValueError, AttributeError):
        text = None
    return " ".join(str(text or response.text or response.reason_phrase).split())[:300]


def _parse(content: bytes, latency: float, retries: int, waited: float) -> Completion | None:
    try:
        data = json.loads(content)
        choice = data["choices"][0]
        message = choice["message"]
        # a refusal (OpenAI's structured outputs) comes without content: its words are the reply a
        # quarantined row keeps in `raw`
        text = message.get("content") or message.get("refusal") or ""
        usage = data.get("usage") or {}
        return Completion(text, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)),
                          choice.get("finish_reason") or "stop", latency, retries=retries, wait_s=waited)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
