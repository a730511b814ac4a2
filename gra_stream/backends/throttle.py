"""How many requests one HTTP endpoint gets at once, and when the next may start.

Three mechanisms, all optional but the first:
- an adaptive limit on requests in flight (AIMD, as TCP and NeMo Data Designer do): it grows by one after
  each window of clean replies and halves when the endpoint says it is overloaded (HTTP 429 or 503, a
  timeout), never above `max_in_flight`. One overload cuts the limit once: replies to requests sent before
  the last cut say nothing about the new limit, so a burst of HTTP 429 replies does not halve it again and again;
- a pause shared by every request of the endpoint, set by a 429's `Retry-After` or by an
  `x-ratelimit-remaining-*` header at 0 (until its `x-ratelimit-reset-*`): nothing is sent before it ends;
- per-minute budgets of requests and tokens (aiolimiter's leaky buckets), as hosted providers state them.

Lives on one event loop for the whole run (backends/openai_http.py), so its state spans batches.
"""
from __future__ import annotations

import asyncio
import re
import time

from aiolimiter import AsyncLimiter

# What a reply says about the endpoint: fine, overloaded (cut the limit), or neither (a broken reply).
OK, OVERLOADED, OTHER = "ok", "overloaded", "other"


class Throttle:
    def __init__(self, *, ceiling: int, adaptive: bool = True, requests_per_minute: float = 0.0,
                 tokens_per_minute: float = 0.0, clock=time.monotonic):
        self.ceiling = ceiling
        self.adaptive = adaptive
        self.limit = float(ceiling)   # starts at the ceiling: an endpoint that is never overloaded loses nothing
        self.in_flight = 0
        self.cuts = 0                  # overloads that cut the limit so far
        self.paused_until = 0.0
        self.clock = clock
        self._slots = asyncio.Condition()
        self._requests = AsyncLimiter(requests_per_minute, 60) if requests_per_minute else None
        self._tokens = AsyncLimiter(tokens_per_minute, 60) if tokens_per_minute else None

    async def start(self, tokens: int) -> tuple[int, float]:
        """Wait for a slot, the end of any pause and room in the budgets; returns a ticket for `finish` and
        the seconds spent waiting on rate limits (waiting for a slot is queueing, not counted)."""
        async with self._slots:
            await self._slots.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1
        started = self.clock()
        while (pause := self.paused_until - self.clock()) > 0:
            await asyncio.sleep(pause)
        if self._requests:
            await self._requests.acquire()
        if self._tokens:  # a request larger than a minute's budget waits for a whole minute's
            await self._tokens.acquire(min(tokens, self._tokens.max_rate))
        return self.cuts, self.clock() - started

    async def finish(self, ticket: int, outcome: str) -> None:
        if self.adaptive and outcome == OK:
            self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
        elif self.adaptive and outcome == OVERLOADED and ticket == self.cuts:
            self.limit = max(1.0, self.limit / 2)
            self.cuts += 1
        async with self._slots:
            self.in_flight -= 1
            self._slots.notify_all()

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, self.clock() + seconds)

    def read_headers(self, headers) -> None:
        """Pause until the reset time of any `x-ratelimit-remaining-*` (requests or tokens) that is spent."""
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            if remaining is not None and reset is not None and remaining.strip() in ("0", "0.0"):
                self.pause(reset)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """Seconds in a rate-limit header: "2", "0.5", "1s", "6m0s", "20ms" (OpenAI's style); None if unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)
