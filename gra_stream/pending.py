"""A stage pass's pending rows: its pending query run to the end into an Arrow file, then read back in
batches; and which leading stages have no pending rows at all, so that the runner skips their passes."""
from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa

from gra_stream.memory import DRAIN_MEMORY, DUCKDB_MEMORY, LARGE_STEPS, out_of_memory
from gra_stream.waves import Scope

# Rows per Arrow record batch of a drain: what DuckDB materialises and the file writer buffers at once.
# Small, so that a large wave's drain holds little more at once than a small wave's (benchmarks/README.md).
DRAIN_BATCH_ROWS = 8192


def drain(con, query: str, path: Path) -> int:
    """Run `query` to its end into an Arrow file at `path` (in its order) and return its row count.

    The stage then reads its batches from that file, not from DuckDB: the pending query's sort is over
    and its memory back before the stage's own lookups (the gate's band join) need DuckDB's, so the two
    never hold memory at once, and the count is known without evaluating the query twice.

    It runs on one thread, under the first of DRAIN_MEMORY's limits it fits in (gra_stream/memory.py). One
    drain at a time, and none during an ordered batch's finish (`LARGE_STEPS`): a drain also sets the
    database's thread count and memory limit (DuckDB has no per-connection ones), which overlapping
    passes share."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with LARGE_STEPS:
        for limit in DRAIN_MEMORY[:-1]:
            try:
                return drain_under(limit, con, query, path)
            except (duckdb.Error, OSError) as error:
                if not out_of_memory(error):
                    raise
        return drain_under(DRAIN_MEMORY[-1], con, query, path)


def drain_under(limit: str, con, query: str, path: Path) -> int:
    con.execute(f"SET threads = 1; SET memory_limit = '{limit}'")
    try:
        rows = 0
        with (con.sql(query).to_arrow_reader(DRAIN_BATCH_ROWS) as reader, pa.OSFile(str(path), "wb") as sink,
              pa.ipc.new_file(sink, reader.schema) as writer):
            for record_batch in reader:
                writer.write_batch(record_batch)
                rows += record_batch.num_rows
        return rows
    finally:
        con.execute(f"RESET threads; SET memory_limit = '{DUCKDB_MEMORY}'")


def batches(path: Path, size: int, cut: str | None = None):
    """The rows of the Arrow file at `path`, in order, as frames of `size` rows (the last one shorter).
    With `cut`, a column the rows are sorted by, a frame also ends where its value does, and the next
    frame starts the count again: the frames of several waves' rows are those of each wave's alone."""
    held: pl.DataFrame | None = None
    with pa.OSFile(str(path), "rb") as source:
        file = pa.ipc.open_file(source)
        for i in range(file.num_record_batches):
            frame = pl.from_arrow(file.get_batch(i))
            held = frame if held is None else pl.concat([held, frame])
            while n := _complete(held, size, cut):
                yield held.head(n)
                held = held.slice(n)
    while held is not None and held.height:  # the last rows: a short frame per value of `cut`
        n = _complete(held, size, cut) or held.height
        yield held.head(n)
        held = held.slice(n)


def _complete(rows: pl.DataFrame, size: int, cut: str | None) -> int:
    """How many leading rows of `rows` make a frame that no row read later belongs to (0: none yet)."""
    if cut is not None and rows.height:
        others = rows[cut] != rows[cut][0]
        if others.any():
            return min(size, int(others.arg_max()))
    return size if rows.height >= size else 0


def idle_stages(stages, con, config) -> set[int]:
    """The leading stages with no pending row in any wave or round: nothing before them makes rows during
    the run, so they stay with nothing to do, and their passes need not drain their pending query once
    per wave (a config change that re-decides, or a resumed run, re-reads the first stages' inputs for
    nothing otherwise). With more rounds, generation reads what later stages make: the leading stages
    end before it."""
    idle: set[int] = set()
    for i, stage in enumerate(stages):
        if config.rounds > 1 and stage.name == "generate":
            break
        if con.sql(f"SELECT 1 FROM ({stage.pending(config, Scope(rounds_open=config.rounds))}) LIMIT 1").fetchall():
            break
        idle.add(i)
    return idle
