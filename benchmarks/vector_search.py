"""The diversity filter's cell index (gra_stream/vector_index.py) against FAISS's IndexIVFFlat, side by side,
on the same vectors, with the same cells and probes, and both against exact search.

The references are the seeds of a scale.py corpus (Alpaca 52k instructions, numbered to reach N rows),
embedded with the hashing embedder and written as `seed_embeddings` segments of a run directory, as the
pipeline writes them. The queries are 4,096 of those instructions reworded slightly, as generated samples
near a seed are. Both indexes use the cells our deterministic spherical k-means trains (FAISS gets them
as its quantizer, so its cells are reproducible too) and probe the same number of them; what differs is
how the references are held and searched: ours in memory-mapped sidecars on disk, FAISS's in its inverted
lists in memory. Each method runs in a process of its own, which reports its peak RSS.

    pip install faiss-cpu   # once, into the project's environment
    python benchmarks/vector_search.py [--sizes 100000,1000000] [--cells 256 --probes 8]
"""
from __future__ import annotations

import argparse
import gzip
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from gra_stream.embeddings import DIM, HashingEmbedder
from gra_stream.ids import content_id
from gra_stream.store import EMPTY_SEGMENT, Store
from gra_stream.vector_index import CellIndex, exhaustive_matches

ROOT = Path(__file__).resolve().parent.parent
ALPACA = ROOT / "data" / "seeds" / "alpaca_52k_en.jsonl.gz"
QUERIES = 4096
THRESHOLD = 0.9  # the diversity filter's: a decision is whether the best similarity reaches it
SEGMENT_ROWS = 4096
GOAL = "goal: adopt the library unless ours is clearly better on time, memory or agreement"


def texts(n: int) -> list[str]:
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        base = [json.loads(line)["en_instruction"] for line in f]
    return [f"{base[i % len(base)]} (#{i})" for i in range(n)]


def prepare(n: int, work: Path) -> None:
    """Seed embeddings as segments of a run directory, and the queries."""
    store = Store(work / "run")
    store.init()
    embedder = HashingEmbedder()
    seeds = texts(n)
    for a in range(0, n, SEGMENT_ROWS):
        part = seeds[a:a + SEGMENT_ROWS]
        vectors = embedder.embed(part)
        store.write_segment("seed_embeddings", f"embed-{a:08d}", pl.DataFrame(
            {"id": [content_id(t) for t in part], "embedding": list(vectors)}))
    rng = np.random.default_rng(0)
    picked = rng.choice(n, QUERIES, replace=False)
    queries = [seeds[i].replace(" the ", " a ", 1) + " Please answer briefly." for i in picked]
    np.save(work / "queries.npy", embedder.embed(queries))


def segment_vectors(path: Path) -> np.ndarray:
    column = pq.read_table(path, columns=["embedding"]).column("embedding").combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).reshape(-1, DIM).astype(np.float32)


def segments(store: Store) -> list[Path]:
    return [p for p in store.segments("seed_embeddings") if p.name != EMPTY_SEGMENT]


def references(store: Store) -> np.ndarray:
    return np.concatenate([segment_vectors(p) for p in segments(store)])


def run_method(method: str, work: Path, cells: int, probes: int) -> dict:
    store, queries = Store(work / "run"), np.load(work / "queries.npy")
    started = time.perf_counter()
    if method == "exact":
        vectors = references(store)
        built = time.perf_counter()
        best, _ = exhaustive_matches(queries, np.arange(len(vectors)).astype(str), vectors, [None] * len(queries))
    else:
        index = CellIndex(store, "hashing", cells, probes)
        if method == "ours":  # as the stage's setup does: the cells, then one sidecar of every segment
            index.grow("seed_embeddings")
            index.merge("seed_embeddings")
            built = time.perf_counter()
            best, _ = index.best_matches("seed_embeddings", queries, [None] * len(queries))
        else:
            import faiss

            faiss.omp_set_num_threads(2)
            index.grow("seed_embeddings")  # the same k-means, without our sidecars
            centroids = index.centroids("seed_embeddings").astype(np.float32)
            quantizer = faiss.IndexFlatIP(centroids.shape[1])
            quantizer.add(centroids)
            ivf = faiss.IndexIVFFlat(quantizer, centroids.shape[1], len(centroids), faiss.METRIC_INNER_PRODUCT)
            ivf.is_trained = True  # our cells: no FAISS training, so the cells are the same on every run
            for path in segments(store):  # added segment by segment, as a run would
                ivf.add(segment_vectors(path))
            ivf.nprobe = probes
            built = time.perf_counter()
            best, _ = ivf.search(queries, 1)
            best = best[:, 0]
    done = time.perf_counter()
    return {"build_s": built - started, "search_s": done - built,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "best": best.astype(float).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--cells", type=int, default=256)
    ap.add_argument("--probes", type=int, default=8)
    ap.add_argument("--method", help=argparse.SUPPRESS)   # a child process: run one method
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.method:
        print(json.dumps(run_method(args.method, Path(args.work), args.cells, args.probes)))
        return
    print(f"{GOAL}\ncells {args.cells} asked (a cell per 256 rows above cells x 256), probes {args.probes}, "
          f"{QUERIES} queries, decisions at cosine >= {THRESHOLD}")
    for n in (int(s) for s in args.sizes.split(",")):
        work = Path(tempfile.mkdtemp(prefix="gra-vectors-"))
        prepare(n, work)
        results = {}
        for method in ("exact", "ours", "faiss"):
            out = subprocess.run([sys.executable, __file__, "--method", method, "--work", str(work), "--cells",
                                  str(args.cells), "--probes", str(args.probes)], capture_output=True, text=True,
                                 )
            if out.returncode:
                raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
            results[method] = json.loads(out.stdout.strip().splitlines()[-1])
        exact = np.array(results["exact"]["best"]) >= THRESHOLD
        print(f"\n{n:,} references")
        print(f"  {'method':<8}{'build s':>9}{'search s':>10}{'peak MiB':>10}{'decisions as exact':>20}")
        for method, r in results.items():
            agree = int(((np.array(r["best"]) >= THRESHOLD) == exact).sum())
            print(f"  {method:<8}{r['build_s']:>9.1f}{r['search_s']:>10.2f}{r['peak_mib']:>10.0f}"
                  f"{agree:>12,} of {len(exact):,}")


if __name__ == "__main__":
    main()
