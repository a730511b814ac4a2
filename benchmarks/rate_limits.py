"""The adaptive in-flight limit against an endpoint with a fixed rate limit, side by side with fixed limits.

A loopback server (tests/fault_server.py, in a process of its own) accepts `--rate` requests per second
(a token bucket holding `--burst`), answers the rest with 429 and Retry-After, and takes `--latency`
seconds per reply. The same requests go through the OpenAI backend with `adaptive = false` at each fixed
`max_in_flight`, then with `adaptive = true` and the highest ceiling; each prints its throughput and the
429s it drew (every retry here is a 429: the server injects no other fault).

    python benchmarks/rate_limits.py [--requests 600] [--rate 40] [--burst 10] [--latency 0.1]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from gra_stream.backends import ChatRequest
from gra_stream.backends.openai_http import OpenAIBackend
from gra_stream.config import ModelSpec

ROOT = Path(__file__).resolve().parent.parent
GOAL = ("goals: adaptive throughput >= 0.90 x the best fixed max_in_flight; "
        "adaptive 429s < the highest fixed setting's")


def measure(url: str, requests: list[ChatRequest], *, in_flight: int, adaptive: bool) -> tuple[float, int]:
    spec = ModelSpec(name="bench", backend="openai", url=url, api_model="fake-a", max_in_flight=in_flight,
                     adaptive=adaptive, max_retries=20000, timeout_s=30.0)
    backend = OpenAIBackend(spec)
    try:
        started = time.perf_counter()
        done = backend.complete(requests)
        elapsed = time.perf_counter() - started
    finally:
        backend.close()
    assert all(c.finish_reason != "error" for c in done), "a request was given up"
    return len(requests) / elapsed, sum(c.retries for c in done)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--rate", type=float, default=40.0, help="requests per second the server accepts")
    ap.add_argument("--burst", type=float, default=10.0, help="requests it accepts at once above the rate")
    ap.add_argument("--latency", type=float, default=0.1, help="seconds per reply")
    ap.add_argument("--fixed", default="1,2,4,8,16,32,64", help="fixed max_in_flight values to try")
    args = ap.parse_args()
    fixed = [int(x) for x in args.fixed.split(",")]
    requests = [ChatRequest(({"role": "user", "content": f"Write a haiku about the number {i}."},), None, 64, 0.7,
                            0.95, i) for i in range(args.requests)]
    server = subprocess.Popen([sys.executable, "-m", "tests.fault_server", "--rate", str(args.rate), "--burst",
                               str(args.burst), "--latency", str(args.latency)], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        print(f"server: {args.rate:g} requests/s (burst {args.burst:g}), {args.latency:g} s a reply; "
              f"{args.requests} requests per setting")
        print(f"{'setting':<26}{'requests/s':>12}{'429s':>8}")
        results = {}
        for n in fixed:
            time.sleep(args.burst / args.rate)  # the bucket refills between settings
            results[f"fixed {n}"] = measure(url, requests, in_flight=n, adaptive=False)
            print(f"{'fixed max_in_flight ' + str(n):<26}{results[f'fixed {n}'][0]:>12.1f}{results[f'fixed {n}'][1]:>8}")
        time.sleep(args.burst / args.rate)
        adaptive = measure(url, requests, in_flight=max(fixed), adaptive=True)
        print(f"{'adaptive, ceiling ' + str(max(fixed)):<26}{adaptive[0]:>12.1f}{adaptive[1]:>8}")
    finally:
        server.stdin.close()
        server.wait(timeout=30)
    best_name, (best, _) = max(results.items(), key=lambda kv: kv[1][0])
    high = results[f"fixed {max(fixed)}"][1]
    print(f"\nadaptive / best fixed ({best_name}): {adaptive[0] / best:.2f}; "
          f"429s: adaptive {adaptive[1]} against {high} at fixed {max(fixed)}")
    print(GOAL)


if __name__ == "__main__":
    main()
