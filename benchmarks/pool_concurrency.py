"""A five-model pool, every model at once against one model at a time: the time per stage batch when each
model's backend takes `--latency` seconds per call (the fake backend's `latency_s`, standing in for an
engine's time on a GPU). One batch of review calls, dealt over the pool as a stage deals it, sent through
`ModelPool.complete` (what the runner does) and through a loop over the models (what it did before).

    python benchmarks/pool_concurrency.py                  # 5 models, 0.5 s per call, 256 requests
"""
from __future__ import annotations

import argparse
import time

from gra_stream.backends import ChatRequest
from gra_stream.backends.pool import ModelPool
from gra_stream.config import config_from_dict
from gra_stream.reply_schemas import MAX_TOKENS, REVIEW

GOAL = "goal: a five-model pool takes about as long per batch as one model (ratio to one model ~1.0)"


def batch(models: list[str], n: int) -> dict[str, list[ChatRequest]]:
    groups: dict[str, list[ChatRequest]] = {m: [] for m in models}
    for i in range(n):
        messages = ({"role": "system", "content": "You review samples."},
                    {"role": "user", "content": f"Review sample {i}: explain photosynthesis step {i}."})
        groups[models[i % len(models)]].append(ChatRequest(messages, REVIEW, MAX_TOKENS["review"], 0.7, 0.95, i))
    return groups


def timed(step) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--latency", type=float, default=0.5)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    names = [f"fake-{i}" for i in range(args.models)]
    config = config_from_dict({"models": [{"name": n, "backend": "fake", "latency_s": args.latency} for n in names]})
    pool = ModelPool(config)
    one = ModelPool(config_from_dict({"models": [{"name": "fake-0", "backend": "fake", "latency_s": args.latency}]}))
    groups = batch(names, args.requests)
    print(f"{args.models} fake models, {args.latency} s per call, {args.requests} requests per batch; best of {args.repeat}")
    print(GOAL)
    at_once = min(timed(lambda: pool.complete(groups)) for _ in range(args.repeat))
    in_turns = min(timed(lambda: [pool.backend(m).complete(r) for m, r in groups.items()]) for _ in range(args.repeat))
    single = min(timed(lambda: one.complete(batch(["fake-0"], args.requests))) for _ in range(args.repeat))
    print(f"one model, the whole batch:      {single:6.2f} s")
    print(f"{args.models} models in turns (before):     {in_turns:6.2f} s  {in_turns / single:5.2f} x one model")
    print(f"{args.models} models at once (ModelPool):   {at_once:6.2f} s  {at_once / single:5.2f} x one model")


if __name__ == "__main__":
    main()
