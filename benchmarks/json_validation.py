"""Checking a model's reply against its role's JSON schema: gra-stream's compiled checker (llm.schema_error)
against fastjsonschema's generated validator and jsonschema's, side by side, on the replies of a fake run's
review and generate calls (valid and invalid ones), with the time per reply and whether each rejects the
same replies.

    pip install fastjsonschema jsonschema   # once, into the project's environment
    python benchmarks/json_validation.py [--replies 20000]
"""
from __future__ import annotations

import argparse
import json
import random
import time

from gra_stream import reply_schemas
from gra_stream.backends import ChatRequest
from gra_stream.backends.fake import FakeBackend
from gra_stream.llm import schema_error

GOAL = "goal: keep our checker only if it is clearly faster than the library, with the same verdicts"


def replies(schema: dict, n: int) -> list:
    """Parsed fake replies for `schema`, a tenth of them broken the ways small models break them."""
    backend = FakeBackend("fake-a")
    requests = [ChatRequest(({"role": "user", "content": f"Task {i} about volcanoes and rivers."},), schema, 400,
                            0.7, 0.95, i) for i in range(n)]
    out = []
    rng = random.Random(0)
    for done in backend.complete(requests):
        try:
            value = json.loads(done.text)
        except json.JSONDecodeError:
            continue
        if rng.random() < 0.1 and isinstance(value, dict) and value:
            key = rng.choice(sorted(value))
            value[key] = rng.choice([None, "eleven", 11, [], -1])
        out.append(value)
    return out


def timed(check, values) -> tuple[float, list[bool]]:
    started = time.perf_counter()
    verdicts = [check(v) for v in values]
    return (time.perf_counter() - started) / len(values) * 1e6, verdicts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replies", type=int, default=20000)
    args = ap.parse_args()
    import fastjsonschema
    import jsonschema

    print(GOAL)
    for role, schema in (("review", reply_schemas.REVIEW), ("generate", reply_schemas.GENERATE)):
        values = replies(schema, args.replies)
        fast = fastjsonschema.compile(schema)
        slow = jsonschema.Draft202012Validator(schema)

        def fast_ok(v):
            try:
                fast(v)
                return True
            except fastjsonschema.JsonSchemaException:
                return False
        ours_us, ours = timed(lambda v: schema_error(v, schema) == "", values)
        fast_us, fasts = timed(fast_ok, values)
        slow_us, slows = timed(slow.is_valid, values)
        differ = sum(a != b for a, b in zip(ours, fasts))
        print(f"{role}: {len(values):,} replies, {ours.count(False):,} invalid by ours")
        print(f"  ours {ours_us:6.2f} us a reply   fastjsonschema {fast_us:6.2f} us ({fast_us / ours_us:.2f}x ours)"
              f"   jsonschema {slow_us:6.2f} us   verdicts differing from fastjsonschema: {differ:,} "
              f"(from jsonschema: {sum(a != b for a, b in zip(ours, slows)):,})")


if __name__ == "__main__":
    main()
