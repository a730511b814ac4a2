"""Scale with flat memory: the whole pipeline with the fake backend (instant replies) over seed corpora
of growing size, built by cycling the real Alpaca 52k with row numbers appended.

Prints rows/s per stage, end-to-end seed rows/s and peak RSS of each run, then the time of a re-run of
the largest finished run (which must do no work). Each run is a separate `gra-stream run` process, so
peak RSS is that process's own (ru_maxrss of the child).

    python benchmarks/scale.py                      # 10k and 100k rows
    python benchmarks/scale.py --sizes 10000,100000,1000000 --no-diversity

The diversity filter compares every kept sample with every seed and every sample kept before it
(exact cosine search, as in the paper): its time grows with the square of the corpus, about 4 TFLOP per
4,096-row batch at 1M seeds. `--no-diversity` runs every other stage, to measure them at sizes where that
search alone would take over an hour on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALPACA = ROOT.parent / "shared" / "seeds" / "alpaca_52k_en_zh.jsonl"
GOALS = "goals: peak RSS at the largest size <= 1.3 x the next smaller; >= 2,000 seed rows/s end to end; re-run < 5 s"


def build_corpus(n: int, path: Path) -> Path:
    with open(ALPACA, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            r = rows[i % len(rows)]
            out.write(json.dumps({"instruction": f"{r['en_instruction']} (#{i})", "input": r["en_input"],
                                  "output": r["en_output"]}, ensure_ascii=False) + "\n")
    return path


def run(seeds: Path, run_dir: Path, config: Path) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MiB) of one `gra-stream run` child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                           "--config", str(config)], check=False, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, peak / 1024, proc.stderr, peak > before


def stage_rates(stderr: str) -> dict[str, float]:
    rates = {}
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) > 4 and "rows/s" in parts:
            rates[parts[0]] = float(parts[parts.index("rows/s") - 1])
    return rates


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-diversity", action="store_true", help="[diversity] enabled = false")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gra-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    config = work / "fake.toml"
    config.write_text("batch_size = 1024\n" + "".join(
        f'[[models]]\nname = "fake-{c}"\nbackend = "fake"\n' for c in "abcde") + '[diversity]\nmodel = "hashing"\n'
        + ("enabled = false\n" if args.no_diversity else ""))
    print(f"workdir {work}; {os.cpu_count()} cores; diversity filter {'off' if args.no_diversity else 'on'}")
    print(GOALS)
    peaks = []
    for n in sizes:
        seeds = build_corpus(n, work / f"seeds_{n}.jsonl")
        elapsed, peak, stderr, own = run(seeds, work / f"run_{n}", config)
        if not own:
            print("  (peak RSS not above an earlier run's: the value is a lower bound)")
        peaks.append(peak)
        rates = "  ".join(f"{k} {v:,.0f}" for k, v in stage_rates(stderr).items())
        print(f"{n:>9,} seeds: {elapsed:8.1f} s  {n / elapsed:8,.0f} seed rows/s end to end  peak RSS {peak:7.0f} MiB")
        print(f"           rows/s per stage: {rates}")
    if len(peaks) > 1:
        print(f"peak RSS ratio {sizes[-1]:,} / {sizes[-2]:,}: {peaks[-1] / peaks[-2]:.2f} (goal <= 1.30)")
    elapsed, _, stderr, _ = run(work / f"seeds_{sizes[-1]}.jsonl", work / f"run_{sizes[-1]}", config)
    print(f"re-run of the finished {sizes[-1]:,}-row run: {elapsed:.2f} s (goal < 5 s); "
          f"{'did no work' if 'nothing to do' in stderr else 'DID WORK'}")


if __name__ == "__main__":
    main()
