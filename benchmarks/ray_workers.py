"""The Ray executor on this machine: seed rows/s with the local executor, then `--executor ray` with 1 and
2 workers, side by side in one run, on the same seeds and config (fake backend).

Two settings of the fake backend:
- instant replies: what the executor itself costs (Ray start, shipping batches, the driver's commits);
- `--latency` seconds per batch of calls: a stand-in for an engine's time per batch (a GPU engine does
  not share cores with the pipeline the way the CPU engine does here), which is what more workers divide.

    python benchmarks/ray_workers.py --seeds 2000 --latency 0.5
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scale import build_corpus

FAKE_POOL = "".join(f'[[models]]\nname = "fake-{c}"\nbackend = "fake"\nlatency_s = LATENCY\n' for c in "abcde")
GOAL = "goal (issue 7): a measured local figure; more workers should divide the engine time, not add to it"


def config(folder: Path, latency: float, workers: int) -> Path:
    path = folder / f"fake-{latency}-{workers}.toml"
    path.write_text(f"batch_size = 64\n[ray]\nworkers = {workers}\n[diversity]\nmodel = \"hashing\"\n"
                    + FAKE_POOL.replace("LATENCY", str(latency)))
    return path


def timed_run(seeds: Path, run_dir: Path, config_path: Path, executor: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                           "--config", str(config_path), "--quiet", *executor], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-2000:])
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.5, help="fake seconds per batch of calls")
    args = parser.parse_args()
    ray = Path(sys.executable).parent / "ray"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        seeds = build_corpus(args.seeds, tmp / "seeds.jsonl")
        env = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        subprocess.run([ray, "start", "--head", "--port", "6399", "--include-dashboard", "false",
                        "--disable-usage-stats"], check=True, capture_output=True, env={**os.environ, **env})
        try:
            print(f"{args.seeds} seeds (Alpaca 52k), fake backend, batch_size 64; {GOAL}")
            for latency in (0.0, args.latency):
                times = {}
                for label, workers, executor in (("local", 1, ["--executor", "local"]),
                                                 ("ray, 1 worker", 1, ["--executor", "ray", "--ray-address", "127.0.0.1:6399"]),
                                                 ("ray, 2 workers", 2, ["--executor", "ray", "--ray-address", "127.0.0.1:6399"])):
                    run_dir = tmp / f"run-{latency}-{label.replace(' ', '').replace(',', '-')}"
                    times[label] = timed_run(seeds, run_dir, config(tmp, latency, workers), executor)
                    print(f"  latency {latency:.2f} s/batch  {label:15} {times[label]:7.1f} s  "
                          f"{args.seeds / times[label]:8.1f} seed rows/s", flush=True)
                print(f"  latency {latency:.2f}: 2 workers / 1 worker speed-up {times['ray, 1 worker'] / times['ray, 2 workers']:.2f}x; "
                      f"ray 1 worker / local {times['local'] / times['ray, 1 worker']:.2f}x")
        finally:
            subprocess.run([ray, "stop", "--force"], capture_output=True, check=False)


if __name__ == "__main__":
    main()
