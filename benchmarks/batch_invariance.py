"""Whether the embedded engine's replies to seeded requests depend on the batch they are sent in:
24 GSM8K questions (sampled at the model's temperature, 96 tokens) in one batch, again, one at a time,
shuffled, and in batches of 8 and 16. Prints how many replies equal those of the first batch.

    python benchmarks/batch_invariance.py
"""
from __future__ import annotations

import gzip
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from gra_stream.backends import ChatRequest  # noqa: E402
from gra_stream.backends.vllm_engine import VllmBackend  # noqa: E402
from gra_stream.config import load_config  # noqa: E402

GOAL = "goal: the same reply to a seeded request whatever its batch (docs/config.md, batch sizes)"


def main() -> None:
    config = load_config(None)
    spec = config.models[0]
    backend = VllmBackend(spec, config.vllm)
    with gzip.open(ROOT / "data" / "seeds" / "gsm8k_train.jsonl.gz", "rt", encoding="utf-8") as f:
        questions = [json.loads(line)["question"] for line, _ in zip(f, range(24))]
    requests = [ChatRequest(({"role": "user", "content": f"Solve step by step: {q}"},), None, 96,
                            spec.temperature, spec.top_p, 1000 + i) for i, q in enumerate(questions)]
    started = time.perf_counter()
    first = [c.text for c in backend.complete(requests)]
    order = list(range(len(requests)))
    random.Random(1).shuffle(order)
    shuffled = dict(zip(order, backend.complete([requests[i] for i in order])))
    tries = {
        "the same batch again": [c.text for c in backend.complete(requests)],
        "one at a time": [backend.complete([r])[0].text for r in requests],
        "shuffled": [shuffled[i].text for i in range(len(requests))],
        "batches of 8 and 16": [c.text for part in (requests[:8], requests[8:]) for c in backend.complete(part)],
    }
    print(f"{spec.name}, {config.vllm.dtype} dtype setting, temperature {spec.temperature}; "
          f"{len(requests)} requests; {time.perf_counter() - started:.0f} s")
    print(GOAL)
    for name, replies in tries.items():
        print(f"  {name:22} {sum(a == b for a, b in zip(first, replies)):>3} of {len(requests)} replies equal")


if __name__ == "__main__":
    main()
