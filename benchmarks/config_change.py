"""The cost of a changed config on a finished run: the whole pipeline with the fake backend over a corpus
built from Alpaca 52k (as scale.py builds it, with the default executor and diversity search), then the same command with
`[committee] tau` 8.0 -> 7.5, then back to 8.0 (whose tables come back from where they were kept), then
with the refusal filter off (more generations pass the gate: review, adjudication and annotation carry
their rows for the generations that passed before and ask about the others), then `[diversity] threshold`
0.9 -> 0.85 as well (the filter walks again; with MiniLM every embedding is read back, and no worker loads
the model).

Prints each run's wall time and the re-runs' share of the first run's, next to the goal.

The diversity filter runs with its default model, MiniLM, as a user's run does (the first run takes about
7 minutes at 100k seeds on 2 cores, most of it embedding the seeds and the candidates).
`--embedder hashing`, the fake configs' embedder, takes that time out of both runs, so what is left is the
runner's own work: the hardest case for the ratio.

With `--backend http` the five models are served over HTTP on loopback (tests/fault_server.py, in a
process of its own, replying as the fake backend does), so that the calls go through the call cache as a
real endpoint's do: the re-run's recomputed stages replay their requests from it.

    python benchmarks/config_change.py                 # 100k seeds
    python benchmarks/config_change.py --embedder hashing
    python benchmarks/config_change.py --size 5000 --backend http
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ROOT, build_corpus, fake_config  # noqa: E402

from gra_stream.embeddings import MINILM  # noqa: E402

GOAL = "goal: a tau change re-runs in under 15% of the original run's time"


NO_REFUSAL = '[filters]\nenabled = ["min_length", "max_length", "overlap"]\n'


def config(path: Path, tau: float, url: str = "", extra: str = "", embedder: str = "hashing",
           diversity: str = "") -> Path:
    head = f"{extra}[committee]\ntau = {tau}\n"
    if not url:
        return fake_config(path, head, diversity, embedder=embedder)
    models = "".join(f'[[models]]\nname = "fake-{c}"\nbackend = "openai"\nurl = "{url}"\napi_model = "fake-{c}"\n'
                     for c in "abcde")
    path.write_text(f"{head}{models}[diversity]\nmodel = \"{embedder}\"\n{diversity}")
    return path


@contextmanager
def endpoint(backend: str):
    """The URL of the loopback server for `--backend http` (empty for the in-process fake backend)."""
    if backend != "http":
        yield ""
        return
    server = subprocess.Popen([sys.executable, "-m", "tests.fault_server"], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        yield server.stdout.readline().strip()
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def timed(seeds: Path, run_dir: Path, cfg: Path, executor: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(run_dir),
                           "--config", str(cfg), "--executor", executor], capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-2000:])
    return time.perf_counter() - t0, done.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--executor", choices=["auto", "processes", "local"], default="auto")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--backend", choices=["fake", "http"], default="fake")
    ap.add_argument("--embedder", choices=["hashing", "minilm"], default="minilm",
                    help="the diversity filter's model: MiniLM (the default), or hashing (fast, the other benchmarks')")
    args = ap.parse_args()
    with endpoint(args.backend) as url:
        measure(args, url)


def measure(args, url: str) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gra-config-change-"))
    work.mkdir(parents=True, exist_ok=True)
    seeds = build_corpus(args.size, work / f"seeds_{args.size}.jsonl")
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    embedder = MINILM if args.embedder == "minilm" else "hashing"
    base, changed = (config(work / f"tau{tau}.toml", tau, url, embedder=embedder) for tau in (8.0, 7.5))
    backend = f"fake replies over HTTP at {url}" if url else "fake backend"
    print(f"workdir {work}; {args.size:,} seeds; {os.cpu_count()} cores; --executor {args.executor}; {backend}; "
          f"embedder {embedder}")
    print(GOAL)
    first, _ = timed(seeds, run_dir, base, args.executor)
    print(f"first run, tau 8.0:           {first:8.1f} s")
    again, log = timed(seeds, run_dir, changed, args.executor)
    stages = [line.split()[0] for line in log.splitlines() if line.startswith("  ") and "rows kept as" in line]
    print(f"re-run with tau 7.5:          {again:8.1f} s  {again / first:6.1%} of the first run (goal < 15%); "
          f"recomputed {', '.join(stages)}")
    back, _ = timed(seeds, run_dir, base, args.executor)
    print(f"back to tau 8.0 (kept tables): {back:7.1f} s  {back / first:6.1%} of the first run")
    filtered, log = timed(seeds, run_dir, config(work / "no_refusal.toml", 8.0, url, NO_REFUSAL, embedder), args.executor)
    carried = re.findall(r"(\w+) +[\d,]+ rows kept as v\d+; recomputed: the rows it made before", log)
    print(f"refusal filter off:           {filtered:8.1f} s  {filtered / first:6.1%} of the first run (no goal); "
          f"rows carried by {', '.join(carried) or 'no stage'}")
    walked, log = timed(seeds, run_dir, config(work / "threshold.toml", 8.0, url, NO_REFUSAL, embedder,
                                               "threshold = 0.85\n"), args.executor)
    read_back = "the embeddings it made before are read back" in log
    print(f"then diversity threshold 0.85: {walked:7.1f} s  {walked / first:6.1%} of the first run (no goal); "
          f"embeddings {'read back' if read_back else 'computed again'}")


if __name__ == "__main__":
    main()
