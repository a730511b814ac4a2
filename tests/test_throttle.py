"""The HTTP backend's throttle alone, on a fake clock: the adaptive in-flight limit (one cut per burst of
overloads, growth while replies are fine), pauses from rate-limit headers, and their durations."""
import asyncio

import pytest

from gra_stream.backends.throttle import OK, OTHER, OVERLOADED, Throttle, parse_duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_one_burst_of_overloads_cuts_the_limit_once_and_clean_replies_grow_it_back():
    async def scenario():
        t = Throttle(ceiling=16, clock=Clock())
        tickets = [(await t.start(0))[0] for _ in range(16)]
        assert t.in_flight == 16
        for ticket in tickets[:10]:  # ten 429s from requests sent before any cut
            await t.finish(ticket, OVERLOADED)
        assert t.limit == 8 and t.cuts == 1
        ticket, _ = await t.start(0)  # a request sent after the cut that is refused again cuts again
        await t.finish(ticket, OVERLOADED)
        assert t.limit == 4
        for ticket in tickets[10:]:
            await t.finish(ticket, OTHER)  # a broken reply says nothing about load
        assert t.limit == 4 and t.in_flight == 0
        for _ in range(4 + 5 + 6):   # about one more for each window of `limit` clean replies
            ticket, _ = await t.start(0)
            await t.finish(ticket, OK)
        assert 6.5 < t.limit < 7
    asyncio.run(scenario())


def test_a_fixed_limit_never_moves_and_slots_are_never_exceeded():
    async def scenario():
        t = Throttle(ceiling=3, adaptive=False)
        peak = 0

        async def one():
            nonlocal peak
            ticket, _ = await t.start(0)
            peak = max(peak, t.in_flight)
            await asyncio.sleep(0.001)
            await t.finish(ticket, OVERLOADED)
        await asyncio.gather(*(one() for _ in range(20)))
        assert peak == 3 and t.limit == 3
    asyncio.run(scenario())


def test_rate_limit_headers_pause_every_request():
    clock = Clock()
    t = Throttle(ceiling=4, clock=clock)
    t.read_headers({"x-ratelimit-remaining-requests": "12", "x-ratelimit-reset-requests": "1s"})
    assert t.paused_until == 0
    t.read_headers({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6m0s"})
    assert t.paused_until == 100 + 360
    t.pause(5)
    assert t.paused_until == 100 + 360, "a shorter pause never shortens a longer one"


@pytest.mark.parametrize("text,seconds", [("2", 2.0), ("0.5", 0.5), ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02),
                                          ("1h2m3.5s", 3723.5), ("soon", None), ("", None), (None, None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)
