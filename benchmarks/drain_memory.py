"""How much DuckDB memory each stage's pending query needs to drain, against the first drain limit.

On a finished run directory (a `scale.py --workdir` run, say), each stage's output table is emptied in a
scratch copy made of links, so that everything the run did is pending at once: what one wave per round
(`[waves] first_seeds = 0`) asks of that stage in a fresh run. The query is drained as the runner drains
it (`pending.drain_under`: one thread, the run's connection settings), and the smallest memory limit it
fits in is found by bisection, to within 8 MB.

    python benchmarks/drain_memory.py RUN_DIR [--config fake.toml]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from gra_stream.config import load_config
from gra_stream.memory import DRAIN_MEMORY, DUCKDB_MEMORY, out_of_memory
from gra_stream.pending import drain_under
from gra_stream.stages import all_stages
from gra_stream.store import Store
from gra_stream.waves import Scope

CEILING_MB = 1024


def with_table_emptied(run_dir: Path, table: str, scratch: Path) -> Store:
    """A copy of `run_dir` made of links to its tables, but with `table` holding no rows, and a scratch
    folder of its own for what the drain writes and spills."""
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / ".tmp").mkdir(parents=True)
    for path in run_dir.iterdir():
        if path.name == ".tmp":
            continue
        if path.name == table:
            (scratch / table).mkdir()
            shutil.copy(path / "_empty.parquet", scratch / table / "_empty.parquet")
        else:
            (scratch / path.name).symlink_to(path.resolve())
    return Store(scratch)


def drained_rows(store: Store, query: str, limit_mb: int) -> int | None:
    """The query's row count when the runner's drain fits it under `limit_mb`; None when it runs out. The
    connection is set up as the runner's (spilling to DIR/.tmp, insertion order not kept)."""
    con = store.connect(memory_limit=DUCKDB_MEMORY)
    try:
        return drain_under(f"{limit_mb}MB", con, query, store.root / ".tmp" / "pending.arrow")
    except (duckdb.Error, OSError) as error:
        if out_of_memory(error):
            return None
        raise
    finally:
        con.close()


def smallest_limit_mb(store: Store, query: str) -> int:
    """The smallest limit, to within 8 MB, that a query draining under CEILING_MB fits in."""
    fails, fits = 8, CEILING_MB
    while fits - fails > 8:
        middle = (fails + fits) // 2
        if drained_rows(store, query, middle) is None:
            fails = middle
        else:
            fits = middle
    return fits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--config", type=Path, default=None, help="the run's config (default: the embedded one)")
    args = ap.parse_args()
    config = load_config(args.config)
    print(f"first drain limit: {DRAIN_MEMORY[0]} (then {', '.join(DRAIN_MEMORY[1:])})")
    print(f"{'stage':12s} {'pending rows':>12s} {'s at 1 GB':>9s} {'needs':>9s}")
    with tempfile.TemporaryDirectory(dir=args.run_dir.parent) as scratch:
        for stage in all_stages():
            store = with_table_emptied(args.run_dir, stage.table, Path(scratch) / "run")
            query = stage.pending(config, Scope(rounds_open=config.rounds))
            started = time.perf_counter()
            rows = drained_rows(store, query, CEILING_MB)
            seconds = time.perf_counter() - started
            shown = f"~{smallest_limit_mb(store, query)} MB" if rows is not None else f"> {CEILING_MB} MB"
            print(f"{stage.name:12s} {rows if rows is not None else '-':>12} {seconds:9.1f} {shown:>9s}", flush=True)


if __name__ == "__main__":
    main()
