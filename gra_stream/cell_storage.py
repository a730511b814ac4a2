"""How the diversity filter's cell index (gra_stream/vector_index.py) keeps its references on disk, and reads
them back without copying.

What is stored, under DIR/.index/diversity/ (derived data: delete it and it is rebuilt):
- `centroids-<key>-<table>.npy`, trained once, deterministically, and `centroids-<key>-<table>.<g>.npy`
  for each retraining g as the table grew (the highest is the one in use); the key names the embedding
  model, the cell count asked for and the layout.
- one sidecar per reference segment (`<key>/<table>[.<g>]/<segment>.npy`: the rows that count as
  references, sorted by cell, with where each cell starts; see `Sidecar`), written the first time the
  segment is read with the cells in use. Segments never change, so a sidecar never goes stale; those of
  earlier cells are removed when the table is trained again. A search reads, per group of cells, only
  those cells' slices of each sidecar, and compares each query with the references of one cell in one
  matrix product; the ids are read only for the best matches.
- for the seeds, which do not change while the filter runs, one merged sidecar of every segment
  (`<key>/seed_embeddings[.<g>]/merged/<digest of the segment names>.npy`, same layout), written from
  the segments in the stage's setup (`CellIndex.merge`, `write_merged`), and replacing any per-segment
  ones: a group of cells is then one read instead of one per segment, with the same answers. Seeds added
  later give other segment names: their search uses per-segment sidecars again until the next setup
  merges them.
Both are written to a temporary name and renamed, like segments, so a crash never leaves half a file.
`table_files` lists one table's files, for when the table moves aside (gra_stream/kept_versions.py).
"""
from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from gra_stream.embeddings import DIM
from gra_stream.store import npy_header

_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # Linux: fault every page in at once


def id_keys(ids) -> np.ndarray:
    """A 64-bit hash of each id: how a query recognises the one reference it must skip (its own seed)."""
    return np.array([int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "little")
                     for i in ids], dtype=np.uint64)


class Sidecar:
    """One reference segment, its rows sorted by cell: `starts` (where each cell's rows begin, one more
    than there are cells), then `keys` (id hashes), `vectors` and `ids` (utf-8 bytes, fixed width). Rows
    of a range of cells are one contiguous slice of each array, read from the file without the rest.
    The file is opened per read, so a search over thousands of segments holds no file open."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:
            self.starts = np.load(f)
            self._keys_at, (self.rows,), _ = npy_header(f)
            self._vectors_at, _, _ = npy_header(f, self._keys_at + self.rows * 8)
            self._ids_at, _, self._id_dtype = npy_header(f, self._vectors_at + self.rows * DIM * 4)

    def _read(self, f, offset: int, dtype, count: int, width: int = 1) -> np.ndarray:
        """`count` rows of `width` values at `offset`, read-only, mapped from the file rather than copied
        out of it: a search of millions of seeds reads gigabytes per batch, and pages mapped all at once
        (MAP_POPULATE) cost less than a copy. The map lasts as long as the array (its memory, as a copy's
        would, leaves with it)."""
        shape = (count, width) if width > 1 else (count,)
        size = count * width * np.dtype(dtype).itemsize
        if not size:
            return np.empty(shape, dtype=dtype)
        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        mapped = mmap.mmap(f.fileno(), offset + size - start, prot=mmap.PROT_READ, flags=_MAP_FLAGS, offset=start)
        return np.frombuffer(mapped, dtype=dtype, count=count * width, offset=offset - start).reshape(shape)

    def slice(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """(keys, vectors) of rows lo..hi."""
        with open(self.path, "rb") as f:
            return (self._read(f, self._keys_at + lo * 8, np.uint64, hi - lo),
                    self._read(f, self._vectors_at + lo * DIM * 4, np.float32, hi - lo, DIM))

    def ids(self, rows: np.ndarray) -> list[str]:
        width = self._id_dtype.itemsize
        out = []
        with open(self.path, "rb") as f:
            for row in rows.tolist():
                f.seek(self._ids_at + row * width)
                out.append(f.read(width).rstrip(b"\0").decode())
        return out


def reserve(f, dtype: np.dtype, shape: tuple[int, ...]) -> int:
    """Write an .npy header for an array of `shape` and skip its data (written later, in place): where
    the data begin."""
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                                              "shape": shape})
    at = f.tell()
    f.seek(at + int(np.prod(shape)) * dtype.itemsize)
    f.truncate()
    return at


def write_merged(path: Path, segments: list[Path], table: str, cells: int, cell_of, block_rows: int) -> None:
    """Write at `path` one sidecar of every reference of `segments`, in `cells` cells (`cell_of(vectors)`:
    each row's cell): rows in cell order, then segment order, then row order, which is the layout of the
    segments' own sidecars merged. Each segment is read once: its rows are sorted by cell and appended, in
    that order, to a scratch file. Then the merged file is written in order, a block of cells of about
    `block_rows` rows at a time: each segment's rows of the block's cells are one read of the scratch file,
    and a stable sort by cell puts them in place. (Large writes in order also matter for the searches
    after: the page cache holds a file written in small scattered pieces as small pages, which a search's
    mapped reads then take longer to map.) A cell of more than `block_rows` rows is written a segment at a
    time, in order. Memory holds a block and a count per segment and cell, whatever the table's size.
    Temporary files of a merge killed before are removed first (only the runner merges)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    scratch = path.with_name(f".{path.name}.{os.getpid()}.rows.tmp")
    try:
        counts, parts = _sorted_rows(segments, table, cells, cell_of, scratch)
        totals = counts.sum(axis=0)
        firsts = np.cumsum(counts, axis=1) - counts  # where each cell's rows start among a segment's
        rows, width = int(totals.sum()), max((part.width for part in parts), default=1)
        with open(tmp, "wb") as f, open(scratch, "rb") as rows_in:
            np.save(f, np.r_[0, np.cumsum(totals)].astype(np.int64), allow_pickle=False)
            out = _MergedOut(f, rows, width)
            for lo, hi in _cell_blocks(totals, block_rows):
                if totals[lo:hi].sum() > block_rows:  # one crowded cell: its rows come in segment order
                    for n in np.flatnonzero(counts[:, lo]).tolist():
                        out.write(*parts[n].read(rows_in, firsts[n, lo], firsts[n, lo] + counts[n, lo]))
                    continue
                blocks = [part.read(rows_in, firsts[n, lo], firsts[n, hi - 1] + counts[n, hi - 1])
                          for n, part in enumerate(parts)]
                labels = np.concatenate([np.repeat(np.arange(lo, hi), counts[n, lo:hi]) for n in range(len(parts))])
                order = np.argsort(labels, kind="stable")
                out.write(*(np.concatenate([block[i] for block in blocks])[order] for i in range(3)))
        os.replace(tmp, path)
    finally:
        scratch.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def _cell_blocks(totals: np.ndarray, block_rows: int):
    """(first cell, end cell) of consecutive cells holding about `block_rows` rows; a cell of more is a
    block of its own."""
    lo, rows = 0, 0
    for cell, count in enumerate(totals.tolist()):
        if cell > lo and rows + count > block_rows:
            yield lo, cell
            lo, rows = cell, 0
        rows += count
    if lo < len(totals):
        yield lo, len(totals)


class _ScratchPart:
    """One segment's rows in the scratch file, sorted by cell: keys, then vectors, then ids (bytes of its
    own width), from `at`."""

    def __init__(self, at: int, rows: int, width: int):
        self.at, self.rows, self.width = at, rows, width

    def read(self, f, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(keys, vectors, ids) of its rows lo..hi."""
        def region(offset: int, dtype, size: int) -> np.ndarray:
            data = os.pread(f.fileno(), (hi - lo) * size, offset + lo * size)
            return np.frombuffer(data, dtype=dtype)
        vectors_at = self.at + self.rows * 8
        return (region(self.at, np.uint64, 8),
                region(vectors_at, np.float32, DIM * 4).reshape(hi - lo, DIM),
                region(vectors_at + self.rows * DIM * 4, f"S{self.width}", self.width))


class _MergedOut:
    """The merged file's keys, vectors and ids, each filled in order from the start."""

    def __init__(self, f, rows: int, width: int):
        self.f, self.width, self.at = f, width, 0
        self.keys_at = reserve(f, np.dtype(np.uint64), (rows,))
        self.vectors_at = reserve(f, np.dtype(np.float32), (rows, DIM))
        self.ids_at = reserve(f, np.dtype(f"S{width}"), (rows,))

    def write(self, keys: np.ndarray, vectors: np.ndarray, ids: np.ndarray) -> None:
        fd = self.f.fileno()
        os.pwrite(fd, np.ascontiguousarray(keys), self.keys_at + self.at * 8)
        os.pwrite(fd, np.ascontiguousarray(vectors), self.vectors_at + self.at * DIM * 4)
        os.pwrite(fd, np.ascontiguousarray(ids.astype(f"S{self.width}")), self.ids_at + self.at * self.width)
        self.at += len(keys)


def _sorted_rows(segments: list[Path], table: str, cells: int, cell_of,
                 scratch: Path) -> tuple[np.ndarray, list[_ScratchPart]]:
    """Append each segment's references to `scratch`, sorted by cell (`sorted_by_cell`). Returns each
    segment's count per cell (a row per segment) and where its rows are."""
    counts, parts = np.zeros((len(segments), cells), dtype=np.int64), []
    with open(scratch, "wb") as f:
        for n, segment in enumerate(segments):
            row_cells, keys, vectors, ids = sorted_by_cell(segment, table, cell_of)
            parts.append(_ScratchPart(f.tell(), len(keys), ids.dtype.itemsize))
            for array in (keys, vectors, ids):
                f.write(np.ascontiguousarray(array))
            counts[n] = np.bincount(row_cells, minlength=cells)
    return counts, parts


def sorted_by_cell(segment: Path, table: str, cell_of) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A segment's references sorted by cell (`cell_of(vectors)`: each row's cell; stable, so in row order
    within a cell), as a sidecar holds them: (cells, keys, vectors, ids as utf-8 bytes of the longest
    one's width)."""
    ids, vectors = read_references(segment, table)
    cells = cell_of(vectors) if len(ids) else np.zeros(0, np.int64)
    order = np.argsort(cells, kind="stable")
    encoded = [i.encode() for i in ids[order].tolist()]
    return (cells[order], id_keys(ids[order]), vectors[order],
            np.array(encoded, dtype=f"S{max(map(len, encoded), default=1)}"))


def _references(segment: Path, table: str, columns: list[str]) -> pl.DataFrame:
    """`columns` of a segment's rows that are references: all seeds, the kept samples."""
    # (pyarrow's reader and to_numpy would import pandas)
    data = pl.read_parquet(segment, columns=[*columns, "kept"] if table == "diversity" else columns)
    return data.filter(pl.col("kept")) if table == "diversity" else data


def read_references(segment: Path, table: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, unit vectors) of a segment's references."""
    data = _references(segment, table, ["id", "embedding"])
    ids = data["id"].to_numpy().astype(str)
    vectors = data["embedding"].list.to_array(DIM).to_numpy().reshape(-1, DIM).astype(np.float32)
    return ids, vectors


def training_references(segments: list[Path], table: str, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors), in id order, of the `limit` references of a table's `segments` with the smallest ids
    (all, if fewer): what its cells are trained on. Ids are content hashes, so that is a uniform sample of
    the table, and the same however its rows were cut into segments: batch sizes change no cell. A table
    of more rows than `limit` has its ids read first, then only the segments holding one of those; a
    smaller one (searched exactly, on every batch) is read once."""
    cutoff = None
    if sum(pq.read_metadata(s).num_rows for s in segments) > limit:
        segment_ids = [_references(s, table, ["id"])["id"].to_numpy().astype(str) for s in segments]
        every = np.concatenate(segment_ids)
        if len(every) > limit:
            cutoff = np.sort(every)[limit - 1]
            segments = [s for s, mine in zip(segments, segment_ids) if (mine <= cutoff).any()]
    ids, vectors = [], []
    for segment in segments:
        i, v = read_references(segment, table)
        wanted = i <= cutoff if cutoff is not None else slice(None)
        ids.append(i[wanted])
        vectors.append(v[wanted])
    if not ids:
        return np.zeros(0, dtype=str), np.zeros((0, DIM), dtype=np.float32)
    ids, vectors = np.concatenate(ids), np.concatenate(vectors)
    order = np.argsort(ids, kind="stable")
    return ids[order], vectors[order]


def cell_paths(root: Path, key: str, table: str, generation: int | str) -> tuple[Path, Path]:
    """(centroids file, sidecar folder) under `root` of a table's cells of one key and generation (0, the
    first training, has no suffix)."""
    suffix = f".{generation}" if generation else ""
    return root / f"centroids-{key}-{table}{suffix}.npy", root / key / f"{table}{suffix}"


def table_files(root: Path, table: str) -> list[Path]:
    """The files and folders under `root` (DIR/.index/diversity) that hold one table's cells and sidecars,
    of every key and generation: `cell_paths` with both as wildcards."""
    if not root.is_dir():
        return []
    patterns = [path.relative_to(root) for generation in (0, "*") for path in cell_paths(root, "*", table, generation)]
    return [path for pattern in patterns for path in root.glob(str(pattern))]
