"""Cells for the diversity filter at millions of rows (`[diversity] index = "ivf"`).

The exact filter compares every kept sample with every seed and every sample kept before it: at millions of
seeds that arithmetic, and rereading every embedding for each batch, outweighs the rest of the run. The cell
index is an inverted file (IVF), as in FAISS: `cells` centroids found by spherical k-means, each reference
in the cell of its nearest centroid, and each query compared only with the references in its `probes`
nearest cells: cells / probes times less arithmetic. Two vectors at cosine 0.9 or more are close, so they
nearly always share one of those cells; a miss keeps a sample the exact filter would have dropped
(benchmarks/README.md gives the measured agreement). With `probes >= cells` it is exact.

Each reference table (the seeds' embeddings, the kept samples) has its own cells, trained on its own rows:
generated instructions resemble each other more than seeds do, and in cells made for the seeds they crowd
into a few, which makes every query compare with most of them. A table is searched exactly until it holds
`cells * MIN_ROWS_PER_CELL` references; then its cells are trained on its TRAIN_ROWS references with the
smallest ids (a uniform sample, whatever the batches its segments were written in). A table of more than
`cells * ROWS_PER_CELL` rows gets a cell per ROWS_PER_CELL rows instead, so that a query meets about as
many references however large the table (`CellIndex._cell_count`): the seeds of a 1M corpus, all embedded
before the filter starts, get 1,024 cells. A table that grows past that while it is searched (the kept
samples) is trained again with the cells it now needs, each time they are twice as many as it has
(`CellIndex.grow`): the cells a batch is searched in depend only on what earlier batches committed, so a
resumed run searches as an uninterrupted one does.

What is stored, under DIR/.index/diversity/, and how it is read: gra_stream/cell_storage.py.

Why not FAISS: `benchmarks/vector_search.py` runs its IndexIVFFlat on the same cells and probes. Both agree
with exact search equally and FAISS builds faster, but it holds every reference in memory (at a million
seeds, more than the whole run may use) and searches slower than these per-cell products over mapped files.
"""
from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from gra_stream.cell_storage import (Sidecar, cell_paths, id_keys, sorted_by_cell, training_references,
                                      write_merged)
from gra_stream.embeddings import DIM
from gra_stream.store import EMPTY_SEGMENT, Store, save_arrays

TRAIN_ROWS = 32768        # vectors k-means sees at most
MIN_ROWS_PER_CELL = 39    # fewer training vectors than this per cell: fewer cells (as FAISS advises)
ROWS_PER_CELL = 256       # a table of more than `cells` times this many rows gets a cell per this many rows
MIN_ROWS_PER_GROWN_CELL = 32  # ... as long as each of those cells has this many training vectors
ASSIGN_ROWS = 8192        # k-means compares this many training vectors with the centroids at once
KMEANS_ITERATIONS = 10
CHUNK_ROWS = 32768        # references searched at once: bounds memory whatever the table sizes
SIMILARITIES = 1 << 22    # entries of one query-by-reference similarity matrix at once
SIDECAR_FORMAT = 3        # rows sorted by the cells of their own table; part of the key, so sidecars of another layout are not read


def spherical_kmeans(vectors: np.ndarray, cells: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """`cells` unit centroids for unit `vectors` (rows), deterministic: starts from an even spread of rows."""
    start = np.linspace(0, len(vectors) - 1, cells).astype(np.int64)
    centroids = vectors[start].copy()
    for _ in range(iterations):
        # in parts of ASSIGN_ROWS rows, so the similarity matrix stays small however many vectors
        nearest = np.concatenate([np.argmax(vectors[a:a + ASSIGN_ROWS] @ centroids.T, axis=1)
                                  for a in range(0, len(vectors), ASSIGN_ROWS)])
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
        self.training_minimum = min(TRAIN_ROWS, cells * MIN_ROWS_PER_CELL)  # fewer references: exact search
        self.root = store.index_dir("diversity")
        self._centroids: dict[str, np.ndarray] = {}
        self._generation: dict[str, int] = {}

    @property
    def key(self) -> str:
        return hashlib.sha256(f"{self.model}\x1f{self.cells}\x1f{DIM}\x1f{SIDECAR_FORMAT}".encode()).hexdigest()[:12]

    def _paths(self, table: str, generation: int) -> tuple[Path, Path]:
        """(centroids file, sidecar folder) of the table's cells of one generation: 0 is the first
        training, each later one a retraining with more cells as the table grew."""
        return cell_paths(self.root, self.key, table, generation)

    # -- centroids ----------------------------------------------------------------------------------
    def centroids(self, table: str) -> np.ndarray | None:
        """The table's centroids in use, or None while it holds too few references to train on."""
        if (table not in self._centroids and not self._paths(table, 0)[0].exists()
                and self._rows(table) < self.training_minimum):
            return None  # too few rows, as the segments' footers tell: no need to read the references
        return self._cells_or_references(table)[0]

    def grow(self, table: str) -> None:
        """Train the table's cells again once it has grown to need twice as many or more (`_cell_count`),
        and remove the sidecars of the cells it had. Only for the one process that searches a table while
        it grows: the runner, in the diversity filter's ordered part (the kept samples) and its setup (the
        seeds, before any worker searches them). Workers search with the latest cells."""
        centroids = self.centroids(table)
        if centroids is None or self.probes >= self.cells:
            return
        generation = self._generation[table]
        for older in range(generation):  # left by a run stopped between a retraining and this cleanup
            shutil.rmtree(self._paths(table, older)[1], ignore_errors=True)
        rows = self._rows(table)
        if min(rows // ROWS_PER_CELL, TRAIN_ROWS // MIN_ROWS_PER_GROWN_CELL) < 2 * len(centroids):
            return  # (what `_cell_count` can give at most: no need to read the training rows)
        _, train = training_references(self.reference_segments(table), table, TRAIN_ROWS)
        cells = self._cell_count(table, len(train), rows)
        if cells < 2 * len(centroids):
            return
        path = self._paths(table, generation + 1)[0]
        save_arrays(path, [spherical_kmeans(train, cells)])
        shutil.rmtree(self._paths(table, generation)[1], ignore_errors=True)
        self._generation[table], self._centroids[table] = generation + 1, np.load(path)

    def _cells_or_references(self, table: str) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray] | None]:
        """(centroids, None): the latest trained, or trained now on the table's TRAIN_ROWS references with
        the smallest ids (what every worker reads alike, so workers racing to train write the same file); or
        (None, (ids, vectors)) of every reference while the table holds too few to train on: it is searched
        exactly."""
        if table not in self._centroids:
            if not self._paths(table, 0)[0].exists():
                ids, train = training_references(self.reference_segments(table), table, TRAIN_ROWS)
                if len(train) < self.training_minimum:
                    return None, (ids, train)
                save_arrays(self._paths(table, 0)[0], [spherical_kmeans(train, self._cell_count(table, len(train)))])
            generation = 0
            while self._paths(table, generation + 1)[0].exists():
                generation += 1
            self._generation[table] = generation
            self._centroids[table] = np.load(self._paths(table, generation)[0])
        return self._centroids[table], None

    def _cell_count(self, table: str, training_rows: int, rows: int | None = None) -> int:
        """How many cells the table gets: `cells`, fewer if there are too few training vectors for them;
        more for a large table, one per ROWS_PER_CELL of its `rows` (counted, kept or not, if not given).
        A search compares each query with the rows of `probes` cells, so with a fixed count its work grows
        with the table: at 1M seeds 256 cells hold about 3,900 rows each, against 390 at 100k. Not when
        `probes >= cells`, which asks for exact search."""
        cells = max(1, min(self.cells, training_rows // MIN_ROWS_PER_CELL))
        if self.probes >= self.cells:
            return cells
        rows = self._rows(table) if rows is None else rows
        return max(cells, min(rows // ROWS_PER_CELL, training_rows // MIN_ROWS_PER_GROWN_CELL))

    def _rows(self, table: str) -> int:
        """The table's rows, kept or not, from its segments' Parquet footers."""
        return sum(pq.read_metadata(s).num_rows for s in self.reference_segments(table))

    def _cell_of(self, centroids: np.ndarray):
        """Each vector's nearest cell, as the table's sidecars sort their rows."""
        return lambda vectors: self.nearest_cells(centroids, vectors, 1)[:, 0]

    @staticmethod
    def nearest_cells(centroids: np.ndarray, vectors: np.ndarray, how_many: int) -> np.ndarray:
        """(rows, how_many) indices of each vector's nearest centroids, nearest first."""
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
    def reference_segments(self, table: str) -> list[Path]:
        return [s for s in self.store.segments(table) if s.name != EMPTY_SEGMENT]

    def _sidecar(self, segment: Path, table: str, centroids: np.ndarray) -> Sidecar:
        """The segment's sidecar, made the first time it is needed, with the table's `centroids` in use."""
        path = self._paths(table, self._generation[table])[1] / f"{segment.stem}.npy"
        if not path.exists():
            cells, keys, vectors, ids = sorted_by_cell(segment, table, self._cell_of(centroids))
            starts = np.searchsorted(cells, np.arange(len(centroids) + 1)).astype(np.int64)
            save_arrays(path, [starts, keys, vectors, ids])
        return Sidecar(path)

    @staticmethod
    def _groups(sidecars: list[Sidecar], probed_cells: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
        """(first cell, end cell, first sidecar, end sidecar): blocks of about CHUNK_ROWS references read
        and searched at once, so memory is bounded whatever the table sizes. Neighbouring cells share a
        block; a cell with more rows than that (references crowd into few cells when the data are alike)
        is split over runs of sidecars. Cells no query probes are skipped."""
        per_sidecar = np.array([np.diff(s.starts) for s in sidecars], dtype=np.int64).reshape(len(sidecars),
                                                                                       len(probed_cells))
        counts = per_sidecar.sum(axis=0)
        lo, rows = None, 0
        for cell in range(len(counts)):
            wanted = probed_cells[cell] and counts[cell] > 0
            if lo is not None and (not wanted or rows + counts[cell] > CHUNK_ROWS):
                yield lo, cell, 0, len(sidecars)
                lo, rows = None, 0
            if wanted and counts[cell] > CHUNK_ROWS:
                first, rows = 0, 0
                for n, count in enumerate(per_sidecar[:, cell].tolist()):
                    if rows and rows + count > CHUNK_ROWS:
                        yield cell, cell + 1, first, n
                        first, rows = n, 0
                    rows += count
                yield cell, cell + 1, first, len(sidecars)
                rows = 0
            elif wanted:
                lo = cell if lo is None else lo
                rows += counts[cell]
        if lo is not None:
            yield lo, len(counts), 0, len(sidecars)

    @staticmethod
    def _blocks(sidecars: list[Sidecar], lo: int, hi: int, first: int, end: int):
        """(keys, vectors, sidecar of each row, its row there, where each cell lo..hi starts) of the rows of
        cells lo..hi in sidecars first..end, in cell order, segment order within a cell. From one sidecar
        (a merged one) they are one slice, read as it is, in parts of CHUNK_ROWS when a single crowded cell
        holds more; from several, each sidecar's slice is put in its place."""
        parts = [(n, sidecars[n].starts[lo], sidecars[n].starts[hi]) for n in range(first, end)
                 if sidecars[n].starts[hi] > sidecars[n].starts[lo]]
        if not parts:
            return
        if len(parts) == 1:
            n, a, b = parts[0]
            for pa in range(a, b, CHUNK_ROWS):
                pb = min(pa + CHUNK_ROWS, b)
                keys, vectors = sidecars[n].slice(pa, pb)
                yield keys, vectors, np.full(pb - pa, n), np.arange(pa, pb), np.clip(sidecars[n].starts[lo:hi + 1], pa, pb) - pa
            return
        label = np.concatenate([np.repeat(np.arange(lo, hi), np.diff(sidecars[n].starts[lo:hi + 1]))
                                for n, _, _ in parts])
        by_cell = np.argsort(label, kind="stable")  # each cell one slice, in segment order within it
        place = np.empty_like(by_cell)
        place[by_cell] = np.arange(len(by_cell))  # where each part's rows go in cell order
        keys = np.empty(len(label), dtype=np.uint64)
        vectors = np.empty((len(label), DIM), dtype=np.float32)
        at = 0
        for n, a, b in parts:  # one part in memory at a time, besides the block
            keys[place[at:at + b - a]], vectors[place[at:at + b - a]] = sidecars[n].slice(a, b)
            at += b - a
        segment = np.concatenate([np.full(b - a, n) for n, a, b in parts])[by_cell]
        row = np.concatenate([np.arange(a, b) for _, a, b in parts])[by_cell]
        yield keys, vectors, segment, row, np.searchsorted(label[by_cell], np.arange(lo, hi + 1))

    def _merged_path(self, table: str, segments: list[Path]) -> Path:
        """Where the merged sidecar of exactly these segments is (named by them: a segment added since
        makes another name, and the per-segment sidecars are used until `merge` runs again)."""
        digest = hashlib.sha256("\x1f".join(s.name for s in segments).encode()).hexdigest()[:16]
        return self._paths(table, self._generation[table])[1] / "merged" / f"{digest}.npy"

    def _sidecars(self, table: str, centroids: np.ndarray) -> list[Sidecar]:
        segments = self.reference_segments(table)
        merged = self._merged_path(table, segments)
        if merged.exists():
            return [Sidecar(merged)]
        return [self._sidecar(segment, table, centroids) for segment in segments]

    def merge(self, table: str) -> None:
        """One sidecar for every segment of a table that does not change while it is searched (the seeds,
        in the diversity filter's setup), its rows sorted by cell as in a segment's: a block of cells is
        then one read of one file, where per-segment sidecars take a read per segment (244 of them at 1M
        seeds) and a scatter of every row into cell order, on every batch, in every worker. Written from
        the segments themselves (`write_merged`); per-segment sidecars that searches made before are then
        removed."""
        centroids = self.centroids(table)
        if centroids is None or self.probes >= self.cells:
            return
        segments = self.reference_segments(table)
        path = self._merged_path(table, segments)
        if path.exists():
            return
        write_merged(path, segments, table, len(centroids), self._cell_of(centroids), CHUNK_ROWS)
        for other in path.parent.parent.glob("*.npy"):  # per-segment sidecars
            other.unlink(missing_ok=True)
        for other in path.parent.glob("*.npy"):  # merged ones of other segments
            if other != path:
                other.unlink(missing_ok=True)

    # -- search -------------------------------------------------------------------------------------
    def best_matches(self, table: str, queries: np.ndarray, exclude: list[str | None]) -> tuple[np.ndarray, list]:
        """For each query, the highest cosine similarity to a reference of `table` in its probed cells
        (to every reference, while the table is too small to have cells), and that reference's id;
        `exclude[i]` is an id query i is not compared with."""
        best = np.full(len(queries), -1.0, dtype=np.float32)
        best_ids: list = [None] * len(queries)
        if not len(queries):
            return best, best_ids
        centroids, everything = self._cells_or_references(table)
        if centroids is None:
            return exhaustive_matches(queries, *everything, exclude)
        cells = len(centroids)
        probed = self.nearest_cells(centroids, queries, self.probes)
        # cell -> the queries that probe it
        flat = probed.ravel()
        order = np.argsort(flat, kind="stable")
        query_of = order // probed.shape[1]
        cell_starts = np.searchsorted(flat[order], np.arange(cells + 1))
        skips = np.array([own is not None for own in exclude])
        own_keys = id_keys(["" if own is None else own for own in exclude])
        best_segment = np.full(len(queries), -1, dtype=np.int64)
        best_row = np.zeros(len(queries), dtype=np.int64)
        sidecars = self._sidecars(table, centroids)
        for lo, hi, first, end in self._groups(sidecars, np.diff(cell_starts) > 0):
            for keys, vectors, segment, row, ref_starts in self._blocks(sidecars, lo, hi, first, end):
                for cell in range(lo, hi):
                    who = query_of[cell_starts[cell]:cell_starts[cell + 1]]
                    if not len(who) or ref_starts[cell - lo] == ref_starts[cell - lo + 1]:
                        continue
                    mine, skipping = queries[who], skips[who].any()
                    step = max(1, SIMILARITIES // len(who))  # a crowded cell probed by many queries: in parts
                    for a in range(ref_starts[cell - lo], ref_starts[cell - lo + 1], step):
                        b = min(a + step, ref_starts[cell - lo + 1])
                        sims = mine @ vectors[a:b].T
                        if skipping:
                            sims[(keys[a:b][None, :] == own_keys[who][:, None]) & skips[who][:, None]] = -1.0
                        j = sims.argmax(axis=1)
                        top = sims[np.arange(len(who)), j]
                        better = top > best[who]
                        best[who[better]] = top[better]
                        best_segment[who[better]] = segment[a + j[better]]
                        best_row[who[better]] = row[a + j[better]]
        for n in np.unique(best_segment[best_segment >= 0]).tolist():
            mine = np.flatnonzero(best_segment == n)
            for i, id_ in zip(mine.tolist(), sidecars[n].ids(best_row[mine])):
                best_ids[i] = id_
        return best, best_ids


def exhaustive_matches(queries: np.ndarray, ids, vectors: np.ndarray,
                       exclude: list[str | None]) -> tuple[np.ndarray, list]:
    """`best_matches` against every one of (ids, vectors), in parts of at most SIMILARITIES entries:
    for each query the highest similarity (-1 if none) and the first reference that has it."""
    best = np.full(len(queries), -1.0, dtype=np.float32)
    best_row = np.full(len(queries), -1, dtype=np.int64)
    names = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
    row_of = {id_: j for j, id_ in enumerate(names)} if any(own is not None for own in exclude) else {}
    skips = [(i, row_of[own]) for i, own in enumerate(exclude) if own in row_of]
    step = max(1, SIMILARITIES // max(1, len(queries)))
    for a in range(0, len(ids), step):
        sims = queries @ vectors[a:a + step].T
        for i, j in skips:
            if a <= j < a + step:
                sims[i, j - a] = -1.0
        j = sims.argmax(axis=1)
        top = sims[np.arange(len(queries)), j]
        better = top > best
        best[better], best_row[better] = top[better], a + j[better]
    return best, [names[j] if j >= 0 else None for j in best_row.tolist()]
