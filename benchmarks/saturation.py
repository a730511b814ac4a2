"""Engine saturation: does the pipeline keep vLLM busy?

Runs the pipeline in-process with the embedded model and the in-process vLLM engine over N real seeds,
recording every request it sends and the wall time from its first model call to its last (model load
excluded, everything else included: prompt rendering, parsing, re-asks, SQL between stages, commits).
Then replays exactly the same requests (same prompts, sampling parameters and seeds) through plain
`vllm.LLM.chat` on the same engine, in one call. Prints output tokens/s of both and their ratio.

    python benchmarks/saturation.py [--seeds 24] [--batch-size 64[,256...]] [--no-short-circuit]

Also prints every engine call the pipeline made (requests, output tokens, seconds): where the engine
ran below its batch limit, and how much of the pipeline's time was spent outside the engine.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import tempfile
import time
from pathlib import Path

from gra_stream.backends import vllm_engine
from gra_stream.backends.pool import ModelPool
from gra_stream.config import load_config
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline

SEEDS = Path(__file__).resolve().parent.parent / "data" / "seeds"
CORPORA = ("gsm8k_train.jsonl.gz", "code_alpaca_2k.jsonl.gz", "self_instruct_seed_tasks.jsonl.gz")
GOAL = "goal: pipeline / raw >= 0.95 (issue 28, with waves)"


class Recorder:
    """Wraps the in-process backend: records every request and engine call, and keeps one engine per
    model across pipeline runs (loaded once, reused by later runs and by the replay)."""

    def __init__(self):
        self.engines: dict[str, object] = {}
        self.reset()

    def reset(self):
        self.requests, self.first, self.last, self.tokens = [], None, None, 0
        self.calls: list[tuple[int, int, float]] = []  # (requests, output tokens, seconds) per engine call

    def wrap(self):
        original = vllm_engine.VllmBackend.complete
        recorder = self

        def complete(backend, requests):
            started = time.perf_counter()
            recorder.first = recorder.first or started
            out = original(backend, requests)
            recorder.last = time.perf_counter()
            recorder.requests.extend(requests)
            tokens = sum(c.completion_tokens for c in out)
            recorder.tokens += tokens
            recorder.calls.append((len(requests), tokens, recorder.last - started))
            return out

        vllm_engine.VllmBackend.complete = complete
        make = ModelPool._make

        def make_once(pool, spec):
            if spec.name not in recorder.engines:
                recorder.engines[spec.name] = make(pool, spec)
            return recorder.engines[spec.name]

        ModelPool._make = make_once
        vllm_engine.VllmBackend.close = lambda backend: None  # keep the engine for later runs and the replay


def request_key(r) -> str:
    return json.dumps([r.messages, r.schema, r.max_tokens, r.temperature, r.top_p, r.seed, r.repetition_penalty],
                      sort_keys=True)


def replay(engine, requests) -> tuple[int, float]:
    """Output tokens and seconds of `requests` sent to plain `vllm.LLM.chat` in one call."""
    t0 = time.perf_counter()
    outputs = engine.chat([list(r.messages) for r in requests], sampling_params=vllm_engine.sampling_params(requests),
                          use_tqdm=False)
    return sum(len(o.outputs[0].token_ids) for o in outputs), time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--batch-size", default="256", help="one batch_size, or several to compare: 256,64")
    ap.add_argument("--no-short-circuit", action="store_true", help="ask every reviewer at once")
    args = ap.parse_args()
    batch_sizes = [int(b) for b in args.batch_size.split(",")]
    work = Path(tempfile.mkdtemp(prefix="gra-saturation-"))
    per_file = max(1, args.seeds // len(CORPORA))
    seeds = []
    for name in CORPORA:
        dst = work / name.removesuffix(".gz")
        with gzip.open(SEEDS / name, "rt", encoding="utf-8") as f:
            dst.write_text("".join(line for _, line in zip(range(per_file), f)), encoding="utf-8")
        seeds.append(dst)
    recorder = Recorder()
    recorder.wrap()
    runs = []
    for batch_size in batch_sizes:
        config = load_config(None)
        config = dataclasses.replace(config, batch_size=batch_size, committee=dataclasses.replace(
            config.committee, short_circuit=not args.no_short_circuit))
        recorder.reset()
        run_pipeline(seeds, work / f"run-{batch_size}", config, progress=Progress(quiet=True))
        runs.append((batch_size, recorder.requests, recorder.tokens, recorder.last - recorder.first, recorder.calls))
    print(f"{len(seeds)} seed files ({per_file} seeds each), short_circuit {not args.no_short_circuit}; {work}")
    print(GOAL)
    (engine,) = [backend.llm for backend in recorder.engines.values()]
    replays: dict[frozenset, tuple[int, float]] = {}
    for batch_size, requests, tokens, seconds, calls in runs:
        print(f"batch_size {batch_size}: {len(requests)} requests; engine calls (requests, output tokens, "
              f"seconds, tok/s):")
        for n, call_tokens, call_s in calls:
            print(f"  {n:5} {call_tokens:7,} {call_s:7.1f} {call_tokens / call_s:7.1f}")
        in_engine = sum(c[2] for c in calls)
        print(f"  time in engine calls {in_engine:.1f} s of {seconds:.1f} s ({seconds - in_engine:.1f} s outside)")
        key = frozenset(request_key(r) for r in requests)
        if key not in replays:  # the same requests (another batch size) share one replay
            replays[key] = replay(engine, requests)
        raw_tokens, raw_s = replays[key]
        print(f"  pipeline: {tokens:7,} output tokens in {seconds:7.1f} s = {tokens / seconds:7.1f} tok/s")
        print(f"  raw chat: {raw_tokens:7,} output tokens in {raw_s:7.1f} s = {raw_tokens / raw_s:7.1f} tok/s")
        print(f"  ratio pipeline / raw: {(tokens / seconds) / (raw_tokens / raw_s):.2f}")


if __name__ == "__main__":
    main()
