"""Reading a seed corpus shipped as one JSON array (as OpenHermes-2.5, MetaMathQA and ShareGPT dumps are):
`readers.iter_rows`, which streams the items with ijson, against `json.loads` of the whole file (the
reader before 2026-12-06), each in a process of its own for its peak RSS. The array holds Alpaca 52k
records, repeated with an `id`, pretty-printed with `indent=1`.

    python benchmarks/json_array.py [--records 1000000]
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ALPACA  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEASURE = """
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
from gra_stream.readers import iter_rows
started = time.perf_counter()
if sys.argv[1] == "streamed":
    records = sum(1 for row in iter_rows(Path(sys.argv[2])) if row.record is not None)
else:
    records = sum(1 for value in json.loads(Path(sys.argv[2]).read_bytes()) if isinstance(value, dict))
print(records, time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def write_array(path: Path, records: int) -> None:
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        source = [json.loads(line) for line in f]
    with open(path, "w", encoding="utf-8") as out:
        out.write("[\n")
        for i in range(records):
            out.write((",\n" if i else "") + json.dumps({**source[i % len(source)], "id": i}, indent=1))
        out.write("\n]\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gra-json-array-") as tmp:
        path = Path(tmp) / "seeds.json"
        write_array(path, args.records)
        print(f"{args.records:,} records in one JSON array, {path.stat().st_size / 2**20:,.0f} MiB")
        script = MEASURE.format(root=str(ROOT))
        for way in ("streamed", "whole"):
            out = subprocess.run([sys.executable, "-c", script, way, str(path)], capture_output=True, text=True,
                                 check=True).stdout.split()
            records, seconds, peak = int(out[0]), float(out[1]), float(out[2])
            label = "iter_rows, items streamed (now)" if way == "streamed" else "json.loads of the whole file (before)"
            print(f"  {label:40} {records:>10,} records  {seconds:6.1f} s  peak RSS {peak:7,.0f} MiB")
    print("goal: memory that does not grow with the array (the other formats are read row by row)")


if __name__ == "__main__":
    main()
