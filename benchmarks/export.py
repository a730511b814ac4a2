"""`gra-stream export` of `samples` tables of growing size: seconds and peak RSS of each format, each
export in a process of its own, the whole table as CSV through `gra-stream sql` ("sql-csv"), and the JSON
Lines export as it was before 2026-12-07 ("before"). The tables are the samples of one fake run of
`--seeds` seeds with their segments copied (`--copies` times each, under new segment names), so that they
cost one small run to build.

    python benchmarks/export.py [--seeds 10000] [--copies 100,300]

Goal: the export's peak RSS stays bounded whatever the table's size (DuckDB's COPY streams it and sorts
it under a 320 MB limit, spilling beyond): under 600 MiB at every size, on top of a process of ~160 MiB.
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

FORMATS = {"jsonl": "out.jsonl", "parquet": "out.parquet", "alpaca": "out.json", "messages": "out.messages.jsonl",
           "sql-csv": "out.csv"}
# the export of JSON Lines before 2026-12-07: the table as a Polars frame, then a dict and json.dumps per row
BEFORE = """
import json, sys
from pathlib import Path
from gra_stream.export import METADATA
from gra_stream.store import Store
samples = Store(Path(sys.argv[1])).connect().sql("SELECT * FROM samples ORDER BY id").pl()
with open(sys.argv[2], "w", encoding="utf-8") as f:
    for row in samples.iter_rows(named=True):
        record = {"instruction": row["instruction"], "response": row["response"], **{k: row[k] for k in METADATA}}
        f.write(json.dumps(record, ensure_ascii=False) + "\\n")
"""


def export(run_dir: Path, fmt: str, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MiB) of one `gra-stream export --metadata`; fmt "before": the code before;
    fmt "sql-csv": `gra-stream sql DIR "SELECT * FROM samples" --format csv > OUT`."""
    started = time.perf_counter()
    if fmt == "before":
        command = ["-c", BEFORE, str(run_dir), str(out)]
    elif fmt == "sql-csv":
        # no ORDER BY: what is measured is the output, not a sort (which DuckDB holds in memory in `sql`)
        command = ["-m", "gra_stream", "sql", str(run_dir), "SELECT * FROM samples", "--format", "csv"]
    else:
        command = ["-m", "gra_stream", "export", str(run_dir), "--format", fmt, "--metadata", "-o", str(out)]
    with open(out if fmt == "sql-csv" else os.devnull, "w") as stdout:
        proc = subprocess.Popen([sys.executable, *command], stdout=stdout, cwd=Path(__file__).resolve().parents[1])
        _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, f"export {fmt} failed"
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def enlarge(run_dir: Path, copies: int) -> None:
    """Copy every samples segment `copies - 1` times, under names of the same shape."""
    segments = sorted((run_dir / "samples").glob("finalize-*.parquet"))
    for k in range(1, copies):
        for seg in segments:
            shutil.copyfile(seg, seg.with_name(f"finalize-{k:06x}{seg.stem[-10:]}.parquet"))


def count(run_dir: Path) -> int:
    out = subprocess.run([sys.executable, "-m", "gra_stream", "sql", str(run_dir), "SELECT count(*) AS n FROM samples",
                          "--format", "csv"], capture_output=True, text=True, check=True).stdout
    return int(out.split()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=10_000)
    ap.add_argument("--copies", default="100,300", help="sizes of the tables, in copies of the run's samples")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--formats", default=",".join([*FORMATS, "before"]), help="which of them to measure")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="gra-export-"))
    work.mkdir(parents=True, exist_ok=True)
    seeds, config = build_corpus(args.seeds, work / "seeds.jsonl"), fake_config(work / "fake.toml")
    first = work / "x1"
    subprocess.run([sys.executable, "-m", "gra_stream", "run", str(seeds), "--run-dir", str(first), "--config",
                    str(config), "--quiet"], check=True)
    print("goal: peak RSS of an export under 600 MiB at every size")
    rss: dict[tuple[int, str], float] = {}
    copies = [int(c) for c in args.copies.split(",")]
    for k in copies:
        run_dir = work / f"x{k}"
        if k > 1:
            shutil.copytree(first, run_dir)
            enlarge(run_dir, k)
        n = count(run_dir)
        for fmt, out in {**FORMATS, "before": "out.before.jsonl"}.items():
            if fmt not in args.formats.split(","):
                continue
            seconds, rss[k, fmt] = export(run_dir, fmt, work / out)
            print(f"{n:>10,} samples  {fmt:8} {seconds:6.1f} s  peak RSS {rss[k, fmt]:6.0f} MiB  "
                  f"file {(work / out).stat().st_size / 2**20:7.1f} MiB", flush=True)
            (work / out).unlink()
        if k > 1:
            shutil.rmtree(run_dir)
    if len(copies) > 1:
        for fmt in args.formats.split(","):
            print(f"{fmt:8} peak RSS at {copies[-1]} copies / at {copies[-2]}: "
                  f"{rss[copies[-1], fmt] / rss[copies[-2], fmt]:.2f}")

if __name__ == "__main__":
    main()
