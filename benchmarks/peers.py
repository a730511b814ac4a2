"""gra-stream against distilabel, side by side, on the same GRA-shaped workload and the same engine.

The workload: N GSM8K seeds, each profiled, one new sample generated from two profiled examples of its
domain, and three reviews of every generation; gra-stream's prompts, reply schemas, token budgets and
sampling parameters in both tools (benchmarks/peer_distilabel.py is the distilabel pipeline). Both send
their requests to an OpenAI-compatible vLLM server with the embedded model, started fresh for each tool
(no prefix cache carried over), so the engine, its version and its settings are the same.

gra-stream runs with its defaults, except what makes the work the same: every generation gets its three
reviews (no SQL filters, no short-circuit) and none is adjudicated. distilabel runs with its defaults
(batches of 50 rows, every step in its own process), in a virtual environment of its own that this
script makes on first use (`benchmarks/.peers-venv`, distilabel[openai] at PEER_VERSION), so that its
pins never touch gra-stream's.

Printed per tool: wall time, time to the first finished row (a generation with its three reviews:
gra-stream's first committed `reviews` batch, distilabel's first batch out of its last step), and output
tokens/s counted by the server itself (vLLM's generation token counter); then the ratios, each next to
its goal.

    .venv/bin/python benchmarks/peers.py [--seeds 64] [--first-seeds N] [--max-in-flight N] [--only TOOL]
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from gra_stream import reply_schemas
from gra_stream.config import Config
from gra_stream.prompts import load_prompt
from vllm_server import vllm_server  # benchmarks/, on the path as this script's folder

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "gra_stream" / "bundled" / "gsm8k_train_500.jsonl.gz"
PEER_VENV = ROOT / "benchmarks" / ".peers-venv"
PEER_VERSION = "1.5.3"
_DEFAULT_MODEL = Config().models[0]  # the embedded default's sampling, used by both tools
SAMPLING = {k: getattr(_DEFAULT_MODEL, k) for k in ("temperature", "top_p", "repetition_penalty")}
GOALS = "goals: gra-stream ahead on all three (wall and first row: peer / gra-stream > 1; tokens/s: gra-stream / peer > 1)"


def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        print(f"making {PEER_VENV} with distilabel[openai]=={PEER_VERSION} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        # distilabel 1.5.3 imports requests without requiring it (datasets no longer brings it along)
        install = subprocess.run([str(python), "-m", "pip", "install", "-q", f"distilabel[openai]=={PEER_VERSION}",
                                  "requests"], capture_output=True, text=True)
        if install.returncode:
            raise SystemExit(f"installing distilabel failed:\n{install.stderr[-3000:]}")
    return python


def generated_tokens(url: str) -> float:
    """The server's own count of output tokens (Prometheus counter vllm:generation_tokens_total)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(m.group(1)) for m in re.finditer(r"^vllm:generation_tokens_total\{[^}]*\} (\S+)$", text, re.M))


def first_segment(folder: Path) -> bool:
    return any(p.name != "_empty.parquet" for p in folder.glob("*.parquet"))


def run_gra_stream(seeds: Path, work: Path, url: str, args: argparse.Namespace) -> dict:
    config = work / "gra.toml"
    config.write_text(f"""
[[models]]
name = "smollm2"
backend = "openai"
url = "{url}/v1"
api_model = "smollm2"
{"" if args.max_in_flight is None else f"max_in_flight = {args.max_in_flight}"}
temperature = {SAMPLING['temperature']}
top_p = {SAMPLING['top_p']}
repetition_penalty = {SAMPLING['repetition_penalty']}

[committee]
short_circuit = false   # every generation gets its three reviews, as in the peer's pipeline
delta = 10.0            # and none is adjudicated

[filters]
enabled = []            # no generation is held back before review
""" + ("" if args.first_seeds is None else f"\n[waves]\nfirst_seeds = {args.first_seeds}\n"))
    run_dir = work / "gra-run"
    started = time.time()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gra-stream"), "run", str(seeds), "--run-dir", str(run_dir),
                             "--config", str(config), "--quiet"])
    first_review = first_sample = None
    while proc.poll() is None:
        now = time.time()
        if first_review is None and first_segment(run_dir / "reviews"):
            first_review = now
        if first_sample is None and first_segment(run_dir / "samples"):
            first_sample = now
        time.sleep(0.2)
    ended = time.time()
    if proc.returncode:
        raise SystemExit(f"gra-stream run failed ({proc.returncode})")
    return {"wall": ended - started, "first": (first_review or ended) - started,
            "first_sample": (first_sample or ended) - started}


def run_distilabel(rows: list[dict], work: Path, url: str) -> dict:
    finished = work / "finished.txt"
    spec = {"seeds": rows, "url": f"{url}/v1", "model": "smollm2", "sampling": SAMPLING,
            "templates": {name: load_prompt(name) for name in ("system", "profile", "generate", "review")},
            "schemas": {"profile": reply_schemas.PROFILE, "generate": reply_schemas.GENERATE, "review": reply_schemas.REVIEW},
            "max_tokens": reply_schemas.MAX_TOKENS, "finished": str(finished), "cache_dir": str(work / "distilabel-cache")}
    (work / "spec.json").write_text(json.dumps(spec))
    started = time.time()
    with open(work / "distilabel.log", "w") as log:
        done = subprocess.run([str(peer_python()), str(ROOT / "benchmarks" / "peer_distilabel.py"), str(work / "spec.json")],
                              stdout=subprocess.DEVNULL, stderr=log)
    ended = time.time()
    if done.returncode:
        raise SystemExit("the distilabel pipeline failed:\n" + (work / "distilabel.log").read_text()[-3000:])
    first = float(finished.read_text().split()[0]) if finished.exists() else ended
    return {"wall": ended - started, "first": first - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--first-seeds", type=int, help="gra-stream's [waves] first_seeds (default: its default)")
    parser.add_argument("--max-in-flight", type=int, help="gra-stream's max_in_flight (default: its default)")
    parser.add_argument("--only", choices=("gra-stream", "distilabel"), help="run one tool only")
    args = parser.parse_args()
    if args.only != "gra-stream":
        peer_python()
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        work = Path(tmp)
        with gzip.open(SEEDS, "rt") as f:
            records = [json.loads(line) for _, line in zip(range(args.seeds), f)]
        seeds = work / "seeds.jsonl"
        seeds.write_text("".join(json.dumps(r) + "\n" for r in records))
        rows = [{"instruction": r["question"], "response": r["answer"]} for r in records]
        results = {}
        tools = {"gra-stream": lambda url: run_gra_stream(seeds, work, url, args),
                 "distilabel " + PEER_VERSION: lambda url: run_distilabel(rows, work, url)}
        for tool, run in tools.items():
            if args.only and not tool.startswith(args.only):
                continue
            with vllm_server(work / f"server-{tool.split()[0]}.log") as url:
                results[tool] = run(url)
                results[tool]["tokens"] = generated_tokens(url)
            r = results[tool]
            print(f"{tool:18} wall {r['wall']:7.1f} s   first finished row {r['first']:7.1f} s   "
                  f"output {r['tokens']:8.0f} tokens, {r['tokens'] / r['wall']:6.1f} tok/s", flush=True)
        if "gra-stream" in results:
            print(f"gra-stream's first kept sample at {results['gra-stream']['first_sample']:.1f} s")
        if len(results) < 2:
            return
        ours, peer = results["gra-stream"], results["distilabel " + PEER_VERSION]
        print(f"wall: peer / gra-stream {peer['wall'] / ours['wall']:.2f}   "
              f"first row: peer / gra-stream {peer['first'] / ours['first']:.2f}   "
              f"tokens/s: gra-stream / peer {(ours['tokens'] / ours['wall']) / (peer['tokens'] / peer['wall']):.2f}")
        print(GOALS)


if __name__ == "__main__":
    main()
