"""Engine saturation: does the pipeline keep vLLM busy?

Runs the pipeline in-process with the embedded model and the in-process vLLM engine over N real seeds,
recording every request it sends and the wall time from its first model call to its last (model load
excluded, everything else included: prompt rendering, parsing, re-asks, SQL between stages, commits).
Then replays exactly the same requests (same prompts, sampling parameters and seeds) through plain
`vllm.LLM.chat` on the same engine, in one call. Prints output tokens/s of both and their ratio.

    python benchmarks/saturation.py [--seeds 24] [--batch-size 64] [--no-short-circuit]

Also prints every engine call the pipeline made (requests, output tokens, seconds): where the engine
ran below its batch limit, and how much of the pipeline's time was spent outside the engine.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from gra_stream.backends import vllm_engine
from gra_stream.config import load_config
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "seeds"
CORPORA = ("gsm8k_train.jsonl", "code_alpaca_2k.jsonl", "self_instruct_seed_tasks.jsonl")
GOAL = "goal: pipeline / raw >= 0.90"


class Recorder:
    def __init__(self):
        self.requests, self.first, self.last, self.tokens, self.engine = [], None, None, 0, None
        self.calls: list[tuple[int, int, float]] = []  # (requests, output tokens, seconds) per engine call

    def wrap(self):
        original = vllm_engine.VllmBackend.complete
        recorder = self

        def complete(backend, requests):
            recorder.engine = backend.llm
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
        close = vllm_engine.VllmBackend.close
        vllm_engine.VllmBackend.close = lambda backend: None  # keep the engine for the replay
        return close


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--no-short-circuit", action="store_true", help="ask every reviewer at once")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gra-saturation-"))
    per_file = max(1, args.seeds // len(CORPORA))
    seeds = []
    for name in CORPORA:
        dst = work / name
        with open(SHARED / name, encoding="utf-8") as f:
            dst.write_text("".join(line for _, line in zip(range(per_file), f)), encoding="utf-8")
        seeds.append(dst)
    config = load_config(None)
    config = dataclasses.replace(config, batch_size=args.batch_size, committee=dataclasses.replace(
        config.committee, short_circuit=not args.no_short_circuit))
    recorder = Recorder()
    recorder.wrap()
    run_pipeline(seeds, work / "run", config, progress=Progress(quiet=True))
    pipeline_s = recorder.last - recorder.first
    pipeline_rate = recorder.tokens / pipeline_s

    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    params = [SamplingParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_tokens, seed=r.seed,
                             repetition_penalty=r.repetition_penalty,
                             structured_outputs=StructuredOutputsParams(json=r.schema, disable_any_whitespace=True)
                             if r.schema else None) for r in recorder.requests]
    t0 = time.perf_counter()
    outputs = recorder.engine.chat([list(r.messages) for r in recorder.requests], sampling_params=params, use_tqdm=False)
    raw_s = time.perf_counter() - t0
    raw_tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    raw_rate = raw_tokens / raw_s
    print(f"{len(recorder.requests)} requests from {len(seeds)} seed files ({per_file} seeds each), "
          f"batch_size {args.batch_size}, short_circuit {not args.no_short_circuit}")
    print("engine calls of the pipeline (requests, output tokens, seconds, tok/s):")
    for n, tokens, seconds in recorder.calls:
        print(f"  {n:5} {tokens:7,} {seconds:7.1f} {tokens / seconds:7.1f}")
    in_engine = sum(c[2] for c in recorder.calls)
    print(f"time in engine calls {in_engine:.1f} s of {pipeline_s:.1f} s ({pipeline_s - in_engine:.1f} s outside)")
    print(GOAL)
    print(f"pipeline: {recorder.tokens:7,} output tokens in {pipeline_s:7.1f} s = {pipeline_rate:7.1f} tok/s")
    print(f"raw chat: {raw_tokens:7,} output tokens in {raw_s:7.1f} s = {raw_rate:7.1f} tok/s")
    print(f"ratio pipeline / raw: {pipeline_rate / raw_rate:.2f}")


if __name__ == "__main__":
    main()
