"""What the whole-file checks of a delimited seed file cost before its first row is read: its encoding
(`text_files.delimited_encoding`: a spreadsheet's Windows-1252 text may show its first accented character
late) and, for TSV, whether its quotes follow CSV's rules (`delimited_rows.quoted_tsv`). Each against reading
every row with `readers.iter_rows` (the checks then cached) and against ingesting the file into a new run
directory (the checks included, as a run does them). Alpaca 52k records repeated, as CSV, gzipped CSV
and TSV.

    python benchmarks/delimited_files.py [--copies 5]
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
from gra_stream import delimited_rows, readers  # noqa: E402
from gra_stream.config import load_config  # noqa: E402
from gra_stream.ingest import ingest_files  # noqa: E402
from gra_stream.store import Store  # noqa: E402
from gra_stream.text_files import _delimited_encoding, delimited_encoding  # noqa: E402


def clear() -> None:
    _delimited_encoding.cache_clear()
    delimited_rows._quoted_tsv.cache_clear()


def checks(path: Path) -> float:
    """Seconds of the file's whole-file checks, from cold caches."""
    clear()
    started = time.perf_counter()
    codec = delimited_encoding(path)
    if readers.detect_format(path) == "tsv":
        delimited_rows.quoted_tsv(path, codec)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=5, help="copies of Alpaca's 52,002 records")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gra-delimited-") as tmp:
        frame = pl.concat([pl.read_ndjson(ALPACA)] * args.copies)
        plain, packed, tabbed = Path(tmp) / "seeds.csv", Path(tmp) / "seeds.csv.gz", Path(tmp) / "seeds.tsv"
        frame.write_csv(plain)
        frame.write_csv(tabbed, separator="\t")
        with open(plain, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        for path in (plain, packed, tabbed):
            check = checks(path)
            started = time.perf_counter()
            rows = sum(1 for _ in readers.iter_rows(path))
            read = time.perf_counter() - started
            clear()  # the ingest pays for the checks, as a run does
            store = Store(Path(tmp) / f"run-{path.name}")
            store.init()
            started = time.perf_counter()
            ingest_files(store, [path], load_config(None, backend="fake"))
            ingest = time.perf_counter() - started
            print(f"{path.name:12} {path.stat().st_size / 2**20:6,.0f} MiB  {rows:,} rows: checked in {check:.2f} s, "
                  f"rows read in {read:.2f} s, ingested in {ingest:.2f} s; the checks are {check / read:.0%} of "
                  f"reading, {check / ingest:.0%} of the ingest")


if __name__ == "__main__":
    main()
