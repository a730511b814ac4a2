"""Time to the first kept sample: how long after `gra-stream run` starts the first segment of `samples`
is committed (and so queryable with `gra-stream sql`), as a share of the whole run, with the default
waves and, side by side, with one wave per round (`[waves] first_seeds = 0`, the paper's whole-round
walk). The fake backend serves a five-model pool; `--latency` adds seconds to each batch of calls, as a
model server would. `--embedder minilm` runs the diversity filter with its default model, all-MiniLM-L6-v2,
instead of the hashing embedder; `--executor` picks the executor (default: auto).

    python benchmarks/first_sample.py                                   # 8,000 seeds, 0.05 s per batch
    python benchmarks/first_sample.py --size 100000 --latency 0         # instant replies, as scale.py
    python benchmarks/first_sample.py --size 1000000 --latency 0 --only default
    python benchmarks/first_sample.py --size 2000 --embedder minilm --only default [--executor local]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import build_corpus, fake_config  # noqa: E402

from gra_stream.embeddings import HASHING, MINILM  # noqa: E402

GOALS = {8000: 0.25, 1_000_000: 0.02}  # the first kept sample queryable before this share of the run's wall time


def timed(seeds: Path, run_dir: Path, cfg: Path, executor: str = "auto") -> tuple[float, float]:
    """(seconds to the first committed samples segment, seconds to the end of the run)."""
    samples = run_dir / "samples"
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                             "--config", str(cfg), "--quiet", "--executor", executor],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = None
    while proc.poll() is None:
        if first is None and samples.is_dir() and any(p.name != "_empty.parquet" for p in samples.glob("*.parquet")):
            first = time.perf_counter() - t0
        time.sleep(0.02)
    total = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr.read().decode()[-2000:])
    return first if first is not None else total, total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--latency", type=float, default=0.05, help="seconds per batch of calls, per model")
    ap.add_argument("--only", choices=["default", "one-wave"], default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--embedder", choices=["hashing", "minilm"], default="hashing")
    ap.add_argument("--executor", choices=["auto", "local", "processes"], default="auto")
    args = ap.parse_args()
    embedder = MINILM if args.embedder == "minilm" else HASHING
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gra-first-sample-"))
    work.mkdir(parents=True, exist_ok=True)
    seeds = build_corpus(args.size, work / f"seeds_{args.size}.jsonl")
    goal = GOALS.get(args.size)
    print(f"workdir {work}; {args.size:,} seeds; {os.cpu_count()} cores; fake backend, {args.latency} s per batch; "
          f"diversity model {embedder}; --executor {args.executor}")
    print(f"goal: the first kept sample queryable before {goal:.0%} of the run" if goal else "goal: none at this size")
    for label, waves in (("default", ""), ("one-wave", "[waves]\nfirst_seeds = 0\n")):
        if args.only and label != args.only:
            continue
        run_dir = work / f"run_{label}"
        shutil.rmtree(run_dir, ignore_errors=True)
        config = fake_config(work / f"{label}.toml", latency=args.latency, tables=waves, embedder=embedder)
        first, total = timed(seeds, run_dir, config, args.executor)
        print(f"{label:<9} first kept sample after {first:7.1f} s of {total:7.1f} s: {first / total:6.1%} of the run "
              f"({args.size / total:,.0f} seed rows/s end to end)", flush=True)


if __name__ == "__main__":
    main()
