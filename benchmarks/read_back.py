"""Reading the diversity filter's embeddings back from a kept version, one walk batch at a time, as a worker
does after a config change (gra_stream/stages/diversity.py, `_kept_vectors`): only the kept segments that
hold the batch's ids, against every kept segment (the code before 2026-12-06).

The kept table is made up: `--rows` candidates (380,000 is about what a 1M-seed run's filter walks) with
random 384-float vectors, as MiniLM's are (they do not compress), in segments of 4,096 rows in walk order,
written as the pipeline writes them. A batch is 4,096 ids in the walk order of a changed config: mostly
the same order, so they sit in one or two kept segments.

    python benchmarks/read_back.py [--rows 380000] [--batches 5]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import polars as pl

from gra_stream.config import config_from_dict
from gra_stream.embeddings import DIM
from gra_stream.executors import open_context
from gra_stream.stages.diversity import _kept_vectors
from gra_stream.store import Store

BATCH = 4096


def make_kept_table(store: Store, rows: int) -> list[str]:
    """A kept version v1 whose diversity table holds `rows` candidates; returns their ids in walk order."""
    rng = np.random.default_rng(0)
    ids = [f"{x:016x}" for x in rng.integers(0, 2**63, rows)]
    folder = store.kept_dir("v1") / "diversity"
    folder.mkdir(parents=True)
    for at in range(0, rows, BATCH):
        part = ids[at:at + BATCH]
        vectors = rng.standard_normal((len(part), DIM)).astype(np.float32)
        frame = pl.DataFrame({"id": part, "kept": [True] * len(part), "similarity": [0.5] * len(part),
                              "duplicate_of": [None] * len(part)}, schema_overrides={"duplicate_of": pl.String})
        store.write_segment("diversity", f"d-{at:08d}", frame.with_columns(
            pl.Series("embedding", vectors).cast(pl.List(pl.Float32))))
        (store.table_dir("diversity") / f"d-{at:08d}.parquet").rename(folder / f"d-{at:08d}.parquet")
    (folder.parent / "version.json").write_text(json.dumps({"versions": {}, "config": {}, "kept_at": ""}))
    return ids


def every_segment(ctx, ids: list[str]) -> pl.DataFrame:
    """The lookup before: one query over the whole kept table."""
    return pl.from_arrow(ctx.con.sql(
        "SELECT d.id, d.embedding FROM v1.diversity d SEMI JOIN (SELECT unnest($ids) AS id) b ON b.id = d.id "
        "WHERE d.embedding IS NOT NULL", params={"ids": ids}).to_arrow_table())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=380_000)
    ap.add_argument("--batches", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="gra-read-back-") as tmp:
        store = Store(tmp)
        store.init()
        ids = make_kept_table(store, args.rows)
        ctx = open_context(store, config_from_dict({"models": [{"name": "fake-a", "backend": "fake"}]}))
        rng = np.random.default_rng(1)
        print(f"{args.rows:,} kept candidates in {-(-args.rows // BATCH)} segments; batches of {BATCH:,} ids, "
              f"each starting in a random segment, half-way in")
        times = {"every segment (before)": [], "the segments holding the ids (now)": []}
        for _ in range(args.batches):
            start = int(rng.integers(0, max(1, args.rows - BATCH))) // BATCH * BATCH + BATCH // 2
            batch = ids[start:start + BATCH]
            for (label, spent), lookup in zip(times.items(), (every_segment, lambda c, b: _kept_vectors(c, "v1", b))):
                t0 = time.perf_counter()
                found = lookup(ctx, batch)
                spent.append(time.perf_counter() - t0)
                assert found.height == len(batch), label
        ctx.pool.close()
        for label, spent in times.items():
            print(f"{label:36} median {np.median(spent):6.3f} s a batch  (min {min(spent):.3f}, max {max(spent):.3f})")


if __name__ == "__main__":
    main()
