"""What checking a CSV file's encoding costs: `text_files.delimited_encoding` decodes the whole file once
before its rows are read (a spreadsheet's Windows-1252 text may show its first accented character late),
against reading every row with `readers.iter_rows` (the check then cached) and against ingesting the file
into a new run directory (the check included, as a run does it). Alpaca 52k records repeated, as CSV and
gzipped CSV.

    python benchmarks/csv_encoding.py [--copies 5]
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ALPACA  # noqa: E402
from gra_stream.config import load_config  # noqa: E402
from gra_stream.ingest import ingest_files  # noqa: E402
from gra_stream.readers import iter_rows  # noqa: E402
from gra_stream.store import Store  # noqa: E402
from gra_stream.text_files import _delimited_encoding, delimited_encoding  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=5, help="copies of Alpaca's 52,002 records")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gra-csv-encoding-") as tmp:
        plain, packed = Path(tmp) / "seeds.csv", Path(tmp) / "seeds.csv.gz"
        pl.concat([pl.read_ndjson(ALPACA)] * args.copies).write_csv(plain)
        with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        for path in (plain, packed):
            _delimited_encoding.cache_clear()
            started = time.perf_counter()
            encoding = delimited_encoding(path)
            check = time.perf_counter() - started
            started = time.perf_counter()
            rows = sum(1 for _ in iter_rows(path))
            read = time.perf_counter() - started
            _delimited_encoding.cache_clear()
            store = Store(Path(tmp) / f"run-{path.name}")
            store.init()
            started = time.perf_counter()
            ingest_files(store, [path], load_config(None, backend="fake"))
            ingest = time.perf_counter() - started
            print(f"{path.name:12} {path.stat().st_size / 2**20:6,.0f} MiB  {rows:,} rows ({encoding}): encoding "
                  f"checked in {check:.2f} s, rows read in {read:.2f} s, ingested in {ingest:.2f} s; the check is "
                  f"{check / read:.0%} of reading, {check / ingest:.0%} of the ingest")


if __name__ == "__main__":
    main()
