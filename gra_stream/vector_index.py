"""Cells for the diversity filter at millions of rows (`[diversity] index = "ivf"`).

The exact filter compares every kept sample with every seed and every sample kept before it: at 1M seeds
that is about 1.5e14 multiply-adds and a reread of 2 GB of Parquet embeddings per batch. The cell index
is an inverted file (IVF), as in FAISS: `cells` centroids found by spherical k-means, each reference in
the cell of its nearest centroid, and each query compared only with the references in its `probes`
nearest cells: cells / probes times less arithmetic. Two vectors at cosine 0.9 or more are close, so
they nearly always share one of those cells; a miss keeps a sample the exact filter would have dropped
(benchmarks/README.md gives the measured agreement). With `probes >= cells` it is exact.

What is stored, under DIR/.index/diversity/ (derived data: delete it and it is rebuilt):
- `centroids-<key>.npy`, trained once, deterministically, on up to TRAIN_ROWS seed embeddings (in
  segment order), or on the first batch when the filter does not compare with seeds; the key names the
  embedding model and the cell count.
- one sidecar per reference segment (`<key>/<table>/<segment>.npy`: ids, cells, embeddings of the rows
  that count as references), written the first time the segment is read. Segments never change, so a
  sidecar never goes stale; reading it is a copy, where the Parquet list column needed a decode.
Both are written to a temporary name and renamed, like segments, so a crash never leaves half a file.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from gra_stream.embeddings import DIM
from gra_stream.store import EMPTY_SEGMENT, Store

TRAIN_ROWS = 32768        # vectors k-means sees at most
MIN_ROWS_PER_CELL = 39    # fewer training vectors than this per cell: fewer cells (as FAISS advises)
KMEANS_ITERATIONS = 10
CHUNK_ROWS = 32768        # references searched at once: bounds memory whatever the table sizes


def _save(path: Path, arrays: list[np.ndarray]) -> None:
    """`arrays` one after another in one file (np.load them back in order), renamed into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two workers may write the same file
    with open(tmp, "wb") as f:
        for array in arrays:
            np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def spherical_kmeans(vectors: np.ndarray, cells: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """`cells` unit centroids for unit `vectors` (rows), deterministic: starts from an even spread of rows."""
    start = np.linspace(0, len(vectors) - 1, cells).astype(np.int64)
    centroids = vectors[start].copy()
    for _ in range(iterations):
        nearest = np.argmax(vectors @ centroids.T, axis=1)
        order = np.argsort(nearest, kind="stable")
        members = np.flatnonzero(np.bincount(nearest, minlength=cells))
        starts = np.searchsorted(nearest[order], members)
        sums = np.zeros_like(centroids)
        sums[members] = np.add.reduceat(vectors[order], starts, axis=0)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        filled = norms[:, 0] > 0
        centroids[filled] = sums[filled] / norms[filled]  # an empty cell keeps its centroid
    return centroids.astype(np.float32)


class CellIndex:
    def __init__(self, store: Store, model: str, cells: int, probes: int):
        self.store, self.model, self.cells, self.probes = store, model, cells, probes
        self.root = store.root / ".index" / "diversity"
        self._centroids: np.ndarray | None = None

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.model}\x1f{self.cells}\x1f{DIM}".encode()).hexdigest()[:12]

    # -- centroids ----------------------------------------------------------------------------------
    def centroids(self, batch_vectors: np.ndarray) -> np.ndarray:
        """The run's centroids: loaded, or trained now on the first seed embeddings (what every worker
        sees alike, so workers racing to train write the same file), else on `batch_vectors`."""
        if self._centroids is None:
            path = self.root / f"centroids-{self.key}.npy"
            if not path.exists():
                sample: list[np.ndarray] = []
                for _, _, vectors in self._segments("seed_embeddings"):
                    sample.append(vectors)
                    if sum(len(s) for s in sample) >= TRAIN_ROWS:
                        break
                train = np.concatenate(sample or [batch_vectors])[:TRAIN_ROWS]
                cells = max(1, min(self.cells, len(train) // MIN_ROWS_PER_CELL))
                _save(path, [spherical_kmeans(train, cells)])
            self._centroids = np.load(path)
        return self._centroids

    def nearest_cells(self, vectors: np.ndarray, how_many: int) -> np.ndarray:
        """(rows, how_many) indices of each vector's nearest centroids, nearest first."""
        centroids = self._centroids
        sims = vectors @ centroids.T
        if how_many == 1:
            return sims.argmax(axis=1)[:, None]
        how_many = min(how_many, len(centroids))
        if how_many == len(centroids):
            return np.argsort(-sims, axis=1)
        top = np.argpartition(-sims, how_many - 1, axis=1)[:, :how_many]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1)
        return np.take_along_axis(top, order, axis=1)

    # -- references ---------------------------------------------------------------------------------
    def _segments(self, table: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(ids, cells, vectors) of each reference segment of `table`, from its sidecar (made if missing).
        Cells are -1 until centroids exist (only while the centroids themselves are trained)."""
        for segment in self.store.segments(table):
            if segment.name == EMPTY_SEGMENT:
                continue
            sidecar = self.root / self.key / table / f"{segment.stem}.npy"
            if sidecar.exists():
                with open(sidecar, "rb") as f:  # three arrays, one after another
                    yield np.load(f), np.load(f), np.load(f)
                continue
            ids, vectors = _read_references(segment, table)
            if self._centroids is None:
                yield ids, np.full(len(ids), -1, dtype=np.int32), vectors
                continue
            cells = self.nearest_cells(vectors, 1)[:, 0].astype(np.int32) if len(ids) else np.zeros(0, np.int32)
            _save(sidecar, [ids, cells, vectors])
            yield ids, cells, vectors

    def chunks(self, table: str) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The references of `table` in chunks of about CHUNK_ROWS rows."""
        parts: list = []
        rows = 0
        for part in self._segments(table):
            parts.append(part)
            rows += len(part[0])
            if rows >= CHUNK_ROWS:
                yield tuple(np.concatenate(column) for column in zip(*parts))
                parts, rows = [], 0
        if rows:
            yield tuple(np.concatenate(column) for column in zip(*parts))

    # -- search -------------------------------------------------------------------------------------
    def best_matches(self, table: str, queries: np.ndarray, exclude: list[str | None]) -> tuple[np.ndarray, list]:
        """For each query, the highest cosine similarity to a reference of `table` in its probed cells,
        and that reference's id; `exclude[i]` is an id query i is not compared with."""
        best = np.full(len(queries), -1.0, dtype=np.float32)
        best_ids: list = [None] * len(queries)
        if not len(queries):
            return best, best_ids
        self.centroids(queries)
        probed = self.nearest_cells(queries, self.probes)
        # cell -> the queries that probe it
        flat = probed.ravel()
        order = np.argsort(flat, kind="stable")
        query_of = (order // probed.shape[1])
        cell_starts = np.searchsorted(flat[order], np.arange(len(self._centroids) + 1))
        excluded = {i: own for i, own in enumerate(exclude) if own is not None}
        best_ref = np.full(len(queries), -1, dtype=np.int64)  # row of the best match in the current chunk
        for ids, cells, vectors in self.chunks(table):
            by_cell = np.argsort(cells, kind="stable")
            ids, cells, vectors = ids[by_cell], cells[by_cell], vectors[by_cell]  # each cell one slice
            ref_starts = np.searchsorted(cells, np.arange(len(self._centroids) + 1))
            skip: dict[int, list[tuple[int, int]]] = {}  # cell -> (query, reference row) pairs not to compare
            if excluded:
                position = {id_: j for j, id_ in enumerate(ids.tolist())}
                for i, own in excluded.items():
                    if own in position:
                        skip.setdefault(int(cells[position[own]]), []).append((i, position[own]))
            best_ref[:] = -1
            for cell in np.flatnonzero((np.diff(ref_starts) > 0) & (np.diff(cell_starts) > 0)).tolist():
                lo, hi = ref_starts[cell], ref_starts[cell + 1]
                who = query_of[cell_starts[cell]:cell_starts[cell + 1]]
                sims = queries[who] @ vectors[lo:hi].T
                for i, ref in skip.get(cell, ()):
                    sims[who == i, ref - lo] = -1.0
                j = sims.argmax(axis=1)
                top = sims[np.arange(len(who)), j]
                better = top > best[who]
                best[who[better]] = top[better]
                best_ref[who[better]] = lo + j[better]
            found = np.flatnonzero(best_ref >= 0)
            for i, id_ in zip(found.tolist(), ids[best_ref[found]].tolist()):
                best_ids[i] = id_
        return best, best_ids


def _read_references(segment: Path, table: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, unit vectors) of a segment's rows that are references: all seeds, the kept samples."""
    columns = ["id", "embedding"] + (["kept"] if table == "diversity" else [])
    data = pq.read_table(segment, columns=columns)
    if table == "diversity":
        data = data.filter(data.column("kept"))
    ids = np.array(data.column("id").to_pylist(), dtype=object).astype(str)
    embedding = data.column("embedding").combine_chunks()
    vectors = (embedding.values.to_numpy(zero_copy_only=False).reshape(-1, DIM).astype(np.float32)
               if len(embedding) else np.zeros((0, DIM), dtype=np.float32))
    return ids, vectors
