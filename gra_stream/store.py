"""The run directory: one folder per table, each a set of immutable Parquet segments.

A segment is written to a hidden temporary file, flushed, and renamed into place: the rename is the
commit, so a reader (or a crash) only ever sees whole batches. Readers never take a lock, which is how
`gra-stream sql` works while a run is writing (a DuckDB database file would lock them out). A few
segments are replaced or removed by a run (its own row in `runs`, the segments of a changed seed file,
tables moved to a kept version), and DuckDB opens a file more than once in a query, so a reader in
another process reads through `Store.read`, which runs a query again when a commit broke it.
"""
from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from gra_stream.errors import UserError
from gra_stream.ids import content_id
from gra_stream.schemas import TABLES, empty, polars_types

EMPTY_SEGMENT = "_empty.parquet"
OWN_ENTRIES = {*TABLES, "versions", "logs"}  # what a run puts in its directory, hidden entries aside
READ_TRIES = 5  # a failed read is tried again only when segments changed meanwhile, and at most this often
# What a reader of segments (DuckDB, Polars, Arrow) raises on a segment torn, removed or damaged under it.
READ_ERRORS = (duckdb.Error, pl.exceptions.PolarsError, pl.exceptions.PanicException, pa.ArrowException, OSError)

T = TypeVar("T")


def save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    """`arrays` one after another in one file (np.load them back in order), renamed into place. Always in
    C order (np.save would keep a transposed array's Fortran order): `map_arrays` and the cell sidecars'
    reads at computed offsets rely on it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two workers may write the same file
    with open(tmp, "wb") as f:
        for array in arrays:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    os.replace(tmp, path)


def npy_header(f, offset: int | None = None) -> tuple[int, tuple[int, ...], np.dtype]:
    """(where the data begin, shape, dtype) of the .npy array whose header is at `offset` (default: here)
    in a `save_arrays` file (which writes C order only)."""
    if offset is not None:
        f.seek(offset)
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return f.tell(), shape, dtype


def arrays_whole(path: Path) -> bool:
    """Whether a `save_arrays` file holds whole arrays up to its last byte (one cut short by a copy does not)."""
    try:
        with open(path, "rb") as f:
            offset, size = 0, os.fstat(f.fileno()).st_size
            while offset < size:
                start, shape, dtype = npy_header(f, offset)
                offset = start + int(np.prod(shape)) * dtype.itemsize
        return offset == size
    except (ValueError, OSError):  # numpy's error for a header cut short
        return False


def map_arrays(path: Path) -> list[np.ndarray]:
    """The arrays of a `save_arrays` file as read-only memory maps: only the pages a search touches are
    read, and nothing is copied."""
    arrays, offset, size = [], 0, path.stat().st_size
    with open(path, "rb") as f:
        while offset < size:
            start, shape, dtype = npy_header(f, offset)
            count = int(np.prod(shape))
            arrays.append(np.memmap(path, dtype=dtype, mode="r", offset=start, shape=shape) if count
                          else np.zeros(shape, dtype))
            offset = start + count * dtype.itemsize
    return arrays


def write_parquet(path: Path, data: pa.Table) -> Path:
    """Write `data` to `path` whole or not at all: a temporary file, synced, then renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            pq.write_table(data, f, compression="zstd", use_dictionary=_dictionary_columns(data.schema))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written segment is never left behind, even on a full disk
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    """Columns worth dictionary-encoding in Parquet: all but lists (embeddings, MinHash signatures, band
    keys), whose values rarely repeat: building their dictionaries, then dropping them, would be most of
    the write time of the `gates` and embedding tables."""
    return [f.name for f in schema if not pa.types.is_list(f.type)]


@dataclass(frozen=True)
class KeptVersion:
    """The tables of an earlier config, kept under DIR/versions/vN (gra_stream/kept_versions.py)."""
    label: str                  # vN
    path: Path
    versions: dict[str, str]    # stage -> version of the config whose tables these are
    config: dict
    kept_at: str
    inputs: dict[str, dict] = field(default_factory=dict)  # stage -> stage_versions.inputs of that config

    def tables(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if p.is_dir())


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    # -- layout -------------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        return self.root / table

    def kept_dir(self, label: str) -> Path:
        """DIR/versions/<label>: the tables of an earlier config (gra_stream/kept_versions.py)."""
        return self.root / "versions" / label

    def index_dir(self, name: str) -> Path:
        """DIR/.index/<name>: a lookup derived from the tables (rebuilt when deleted)."""
        return self.root / ".index" / name

    def glob(self, table: str) -> str:
        return str(self.table_dir(table) / "*.parquet")

    def segments(self, table: str) -> list[Path]:
        return sorted(self.table_dir(table).glob("*.parquet"))

    def digest(self, tables) -> str:
        """A hash of the segments `tables` hold (name, size, modification time): segments are immutable
        and named by the ids of their batch, so an equal digest means equal tables. A listing of the
        folders: no file is read."""
        entries = []
        for t in sorted(tables):
            if self.table_dir(t).is_dir():
                with os.scandir(self.table_dir(t)) as listing:
                    for e in listing:
                        if e.name.endswith(".parquet"):
                            try:
                                st = e.stat()
                            except FileNotFoundError:  # removed since it was listed (by a run, see `read`)
                                continue
                            entries.append(f"{t}/{e.name}:{st.st_size}:{st.st_mtime_ns}")
        return content_id(*sorted(entries))

    def read(self, query: Callable[[], T]) -> T:
        """`query()`, run again where it failed while a writer replaced or removed segments under it (a
        failure with the segments unchanged, a damaged file or a bad query, is raised at once)."""
        for attempt in range(1, READ_TRIES + 1):
            listing = self.digest(TABLES)
            try:
                return query()
            except READ_ERRORS:
                if attempt == READ_TRIES or self.digest(TABLES) == listing:
                    raise

    def damaged_file(self) -> Path | None:
        """The first segment (of the tables or of a kept version) that is not a whole Parquet file, or index
        file cut short: what a copy of the directory made while a run wrote it can hold. Looked for once a
        read has failed: it opens every segment's footer and every index file's headers."""
        folders = [self.table_dir(t) for t in TABLES] + [k.path / t for k in self.kept() for t in k.tables()]
        for folder in folders:
            for segment in sorted(folder.glob("*.parquet")):
                try:
                    pq.read_metadata(segment)
                except FileNotFoundError:  # removed by a run since the listing
                    continue
                except (pa.ArrowException, OSError):
                    return segment
        return next((p for p in sorted((self.root / ".index").rglob("*.npy")) if not arrays_whole(p)), None)

    def kept(self) -> list[KeptVersion]:
        """The tables of earlier configs, oldest first."""
        out = []
        for folder in (self.root / "versions").glob("v*"):
            try:
                meta = json.loads((folder / "version.json").read_text(encoding="utf-8"))
                out.append(KeptVersion(folder.name, folder, meta["versions"], meta["config"], meta["kept_at"],
                                       meta.get("inputs", {})))
            except (OSError, ValueError, KeyError, TypeError):  # a copy made while a run wrote it, or edited
                raise UserError(f"cannot read {self.root}: the kept version {folder.name} has no readable "
                                f"{folder.name}/version.json; delete {folder} (its tables go with it, as with "
                                f"`gra-stream prune`)") from None
        return sorted(out, key=lambda k: int(k.label[1:]))

    def exists(self) -> bool:
        return (self.root / "seeds").is_dir()

    def init(self) -> None:
        """Create every table folder with an empty, typed segment so that globs always match a schema
        (renewed when the declared schema has grown since the directory was made)."""
        for table, schema in TABLES.items():
            folder = self.table_dir(table)
            folder.mkdir(parents=True, exist_ok=True)
            segment = folder / EMPTY_SEGMENT
            if not segment.exists() or not pq.read_schema(segment).equals(schema, check_metadata=False):
                write_parquet(segment, empty(schema))

    # -- writing ------------------------------------------------------------------------------------
    def write_segment(self, table: str, name: str, frame: pl.DataFrame | pa.Table) -> Path:
        schema = TABLES[table]
        data = frame.to_arrow() if isinstance(frame, pl.DataFrame) else frame
        missing = [f.name for f in schema if f.name not in data.column_names]
        if missing:
            raise RuntimeError(f"table {table}: batch lacks declared columns {missing}")
        data = data.select(schema.names).cast(schema)
        return write_parquet(self.table_dir(table) / f"{name}.parquet", data)

    def remove_segments(self, table: str, prefix: str) -> None:
        for p in self.table_dir(table).glob(f"{prefix}*.parquet"):
            p.unlink()

    # -- reading ------------------------------------------------------------------------------------
    def scan(self, table: str) -> pl.LazyFrame:
        return pl.scan_parquet(self.glob(table), schema=polars_types(table))

    def connect(self, *, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB with one view per table (and the derived views of sql/views.sql).

        With `memory_limit`, large sorts and joins spill to DIR/.tmp instead of growing the process."""
        from gra_stream.views import define_views

        con = duckdb.connect(":memory:")
        con.execute("SET enable_external_file_cache = false")  # segments are read once per query: no point keeping them
        con.execute("SET allocator_background_threads = true")  # see gra_stream/memory.py
        if memory_limit:
            con.execute(f"SET memory_limit = '{memory_limit}'")
            con.execute("SET temp_directory = $dir", {"dir": str(self.root / ".tmp")})
            con.execute("SET preserve_insertion_order = false")
        define_views(con, self)
        return con


def check_run_dir(run_dir: Path) -> None:
    """A run writes a folder per table into `run_dir`: it must be new, empty, or a run directory already
    (a one-line error for a file, or for a folder of other files such as `--run-dir .` in a project)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--run-dir {run_dir} exists and is not a directory")
    if not run_dir.is_dir() or Store(run_dir).exists():
        return
    others = sorted(p.name for p in run_dir.iterdir() if p.name not in OWN_ENTRIES and not p.name.startswith("."))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise UserError(f"--run-dir {run_dir} holds other files ({shown}) and is not a gra-stream run directory: a run "
                        f"writes a folder per table there; give a new or empty folder, such as {run_dir / 'run'}")


class RunLock:
    """An fcntl lock on DIR/.lock: the kernel drops it when the holder dies, so a crash never leaves it stuck."""

    def __init__(self, root: Path):
        self.path = Path(root) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "another process"
            os.close(self.fd)
            raise UserError(f"{self.path.parent} is in use by another gra-stream run (pid {holder}); "
                            f"wait for it to finish or stop it first") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
