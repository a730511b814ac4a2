"""Call economy of the decision-preserving short-circuit, on a recorded run.

Takes a run directory made with `committee.short_circuit = false` (every reviewer asked), replays its
recorded reviews in reviewer order through the short-circuit rule, and prints LLM calls per kept sample
with and without it and the share of calls saved, checking that every decision is the same. Without a
run directory it first records one with the fake backend over GSM8K seeds.

    python benchmarks/call_economy.py [RUN_DIR] [--seeds 2000]
"""
from __future__ import annotations

import argparse
import gzip
import tempfile
from pathlib import Path

from gra_stream.config import config_from_dict, load_config
from gra_stream.progress import Progress
from gra_stream.runner import run_pipeline
from gra_stream.stages.decide import decide_one
from gra_stream.stages.review import OUT_OF_REACH, certain_reject
from gra_stream.store import Store

GSM = Path(__file__).resolve().parent.parent / "data" / "seeds" / "gsm8k_train.jsonl.gz"
DIMS = ["correctness", "clarity", "completeness", "relevance", "coherence", "ethics"]


def record(seeds: int) -> Path:
    work = Path(tempfile.mkdtemp(prefix="gra-calls-"))
    head = work / "seeds.jsonl"
    with gzip.open(GSM, "rt", encoding="utf-8") as f, open(head, "w", encoding="utf-8") as out:
        for _, line in zip(range(seeds), f):
            out.write(line)
    config = config_from_dict({"models": [{"name": f"fake-{c}", "backend": "fake"} for c in "abcde"],
                               "committee": {"short_circuit": False}, "diversity": {"model": "hashing"}})
    run_pipeline([head], work / "run", config, progress=Progress(quiet=True))
    return work / "run"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", nargs="?", type=Path)
    ap.add_argument("--seeds", type=int, default=2000)
    args = ap.parse_args()
    run_dir = args.run_dir or record(args.seeds)
    con = Store(run_dir).connect()
    config = load_config(None)
    if con.sql("SELECT count(*) FROM reviews WHERE status = 'skipped'").fetchall()[0][0]:
        raise SystemExit(f"{run_dir} was made with the short-circuit on: record one with short_circuit = false")
    reviews = con.sql(f"SELECT generation_id, reviewer_index, status, reasonable AND complete AND clear AS checks, "
                      f"{', '.join(DIMS)} FROM reviews ORDER BY generation_id, reviewer_index").fetchall()
    other_calls = con.sql("SELECT count(*) FROM calls WHERE role <> 'reviewer'").fetchall()[0][0]
    kept = con.sql("SELECT count(*) FROM samples").fetchall()[0][0]
    by_gen: dict[str, list] = {}
    for gid, _, status, checks, *scores in reviews:
        by_gen.setdefault(gid, []).append((status, checks, scores))
    full_calls = short_calls = 0
    same = True
    for gid, rows in by_gen.items():
        n = len(rows)
        full_calls += n
        totals, failed, asked, why = [], False, 0, ""
        for i, (status, checks, scores) in enumerate(rows):
            asked += 1
            if status == "ok":
                totals.append(sum(scores))
                failed |= not checks
            why = certain_reject(totals, failed, n - 1 - i, config.committee) if i < n - 1 else ""
            if why:
                break
        short_calls += asked
        full = decide_one([s for st, _, s in rows if st == "ok"], any(not c for st, c, _ in rows if st == "ok"), config)
        short = decide_one([s for st, _, s in rows[:asked] if st == "ok"],
                           any(not c for st, c, _ in rows[:asked] if st == "ok"), config, why == OUT_OF_REACH)
        same &= full["decision"] == short["decision"]
    print(f"run {run_dir}: {len(by_gen):,} reviewed samples, {kept:,} kept, {other_calls:,} non-review calls")
    for label, calls in (("full protocol", full_calls), ("short-circuit", short_calls)):
        total = calls + other_calls
        print(f"  {label:<14} review calls {calls:7,}  all calls {total:7,}  calls per kept sample "
              f"{total / max(kept, 1):6.2f}")
    print(f"  review calls saved {full_calls - short_calls:,} ({(full_calls - short_calls) / full_calls:.1%}); "
          f"all calls saved {(full_calls - short_calls) / (full_calls + other_calls):.1%}; "
          f"decisions identical: {'yes' if same else 'NO'} (goal: identical, with calls saved)")


if __name__ == "__main__":
    main()
