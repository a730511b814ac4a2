"""Ingest: stream seed files into the `seeds` table, recording every unusable row in `ingest_errors`.

A file is identified by its path, size and modification time. Its seeds are written in chunks named
`<file-key>-<chunk>`; the `files` row is written last and marks the file done. A file interrupted mid-way
is ingested again from the start after its partial chunks are removed, so nothing is doubled.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl

from gra_stream.config import Config, Fields
from gra_stream.errors import UserError
from gra_stream.field_expressions import check_expression
from gra_stream.fields import Mapping, extract_many, is_expression, resolve_mapping
from gra_stream.ids import content_id
from gra_stream.readers import iter_rows, read_as
from gra_stream.seed_paths import expand_seed_paths
from gra_stream.seed_row import Row
from gra_stream.store import Store

CHUNK_ROWS = 20_000   # seed rows per committed segment
EXTRACT_ROWS = 1024   # records mapped at once (a field expression runs once per such batch)


@dataclass
class FileStats:
    path: str
    rows: int = 0
    seeds: int = 0
    duplicates: int = 0
    bad_rows: int = 0
    skipped: bool = False
    changed: bool = False     # read before, with other contents
    read_as: str = ""         # a CSV or TSV file's encoding where it is not UTF-8 or UTF-16

    def describe(self) -> str:
        notes = " (changed since it was read)" if self.changed else ""
        notes += f" (read as {self.read_as}: not UTF-8)" if self.read_as else ""
        return (f"{self.path}{notes}: {self.rows} rows, {self.seeds} new seeds, {self.duplicates} duplicates, "
                f"{self.bad_rows} bad rows")


def file_key(path: Path) -> str:
    st = path.stat()
    return content_id(str(path.resolve()), st.st_size, st.st_mtime_ns)


def check_seed_files(paths: list[Path], config: Config | None = None) -> list[Path]:
    """The seed files to read (folders expanded); a missing path is a one-line error, and so is a field
    expression of `config` that does not evaluate on a file's first record."""
    files = expand_seed_paths(paths)
    if config is not None and any(is_expression(v) for v in (config.fields.instruction, config.fields.input,
                                                               config.fields.response)):
        file_mappings(files, config)
    return files


def first_record(path: Path) -> dict | None:
    """The first record of a seed file (the one its field mapping is resolved on), None if it has none."""
    return next((row.record for row in iter_rows(path) if row.record is not None), None)


def same_mappings(paths: list[Path], a: Fields, b: Fields) -> bool:
    """Whether two [fields] sections map each of these seed files the same way. A file that cannot be
    read, or that one of them cannot map, counts as mapped differently."""
    for path in paths:
        try:
            first = first_record(path)
            if first is not None and resolve_mapping(first, a, path) != resolve_mapping(first, b, path):
                return False
        except (OSError, UserError):
            return False
    return True


def file_mappings(paths: list[Path], config: Config) -> dict[Path, Mapping | None]:
    """Each file's mapping, resolved on its first record (None for a file without one, whose bad rows
    `_ingest_file` records before it stops the run); a file the config cannot map, or an empty one,
    raises its one-line error."""
    mappings = {}
    for path in paths:
        first = first_record(path)
        if first is None and next(iter_rows(path), None) is None:
            raise UserError(f"{path}: the file is empty")
        mappings[path] = resolve_file_mapping(first, config, path) if first is not None else None
    return mappings


def resolve_file_mapping(record: dict, config: Config, path: Path) -> Mapping:
    """The mapping of one file, its field expressions checked on its first record."""
    mapping = resolve_mapping(record, config.fields, path)
    for role, expression in mapping.expressions().items():
        check_expression(expression, record, f"{path}: [fields] {role}")
    return mapping


def ingest_files(store: Store, paths: list[Path], config: Config,
                 on_progress: Callable[[int], None] = lambda n: None) -> list[FileStats]:
    """Read each file not read before in this form. A file changed since it was read is read again: its
    rows add the seeds that are new, and its bad rows and `files` row become those of the file as it is
    now. The seeds of rows since removed from it stay, with what was made from them (a run directory
    only gains seeds)."""
    files = store.scan("files").select("id", "path").collect()
    done = set(files["id"].to_list())
    read_before: dict[Path, list[str]] = {}  # file -> the keys it was read under
    for key, recorded in files.iter_rows():
        read_before.setdefault(Path(recorded).resolve(), []).append(key)
    # the new files, each mapped before any is read: one whose fields cannot be found stops the run first
    mappings = file_mappings([path for path in paths if file_key(path) not in done], config)
    stats = []
    for path in paths:
        if path not in mappings:
            stats.append(FileStats(str(path), skipped=True))
            continue
        key = file_key(path)
        earlier = read_before.get(path.resolve(), [])
        for old in earlier:  # before reading it again, so that a kill in between loses nothing
            store.remove_segments("ingest_errors", f"{old}-")
            store.remove_segments("files", old)
        stats.append(_ingest_file(store, path, key, mappings[path], on_progress))
        stats[-1].changed = bool(earlier)
    return stats


class KnownIds:
    """The ids of the seeds already ingested, as sorted 64-bit numbers (ids are 16 hex digits): 8 bytes
    a seed, and a chunk is checked against them by binary search, rather than by a hash table of every
    known id built again for every chunk."""

    def __init__(self, ids: pl.Series):
        self.sorted = np.sort(self._numbers(ids))

    @staticmethod
    def _numbers(ids: pl.Series) -> np.ndarray:
        return ids.str.to_integer(base=16, dtype=pl.UInt64).to_numpy()

    def new(self, ids: pl.Series) -> np.ndarray:
        """Whether each id is unknown (not ingested before, and not earlier in `ids`); they become known."""
        numbers = self._numbers(ids)
        at = np.minimum(np.searchsorted(self.sorted, numbers), len(self.sorted) - 1)
        known = self.sorted[at] == numbers if len(self.sorted) else np.zeros(len(numbers), dtype=bool)
        _, first = np.unique(numbers, return_index=True)
        fresh = np.zeros(len(numbers), dtype=bool)
        fresh[first] = True
        fresh &= ~known
        added = np.sort(numbers[fresh])
        self.sorted = np.insert(self.sorted, np.searchsorted(self.sorted, added), added)  # one pass, no sort
        return fresh


def _known_ids(store: Store, exclude_prefix: str) -> KnownIds:
    files = [p for p in store.segments("seeds") if not p.name.startswith(exclude_prefix)]
    ids = pl.scan_parquet(files).select("id").collect()["id"] if files else pl.Series("id", [], dtype=pl.String)
    return KnownIds(ids)


def _ingest_file(store: Store, path: Path, key: str, mapping: Mapping | None, on_progress) -> FileStats:
    for table in ("seeds", "ingest_errors"):
        store.remove_segments(table, f"{key}-")
    known = _known_ids(store, f"{key}-")
    stats = FileStats(str(path), read_as=read_as(path))
    seeds: list[dict] = []
    errors: list[dict] = []
    chunk = 0
    source = str(path)

    def flush():
        nonlocal chunk, seeds, errors
        name = f"{key}-{chunk:06d}"
        if errors:
            store.write_segment("ingest_errors", name, pl.DataFrame(errors))
        if seeds:
            frame = pl.DataFrame(seeds)
            frame = frame.filter(pl.Series(known.new(frame["id"])))
            stats.duplicates += len(seeds) - frame.height
            stats.seeds += frame.height
            if frame.height:
                store.write_segment("seeds", name, frame)
        on_progress(len(seeds) + len(errors))
        seeds, errors = [], []
        chunk += 1

    def take(rows: list[Row]) -> None:
        records = [row.record for row in rows if row.record is not None]
        extracted = iter(extract_many(records, mapping) if records else ())
        for row in rows:
            texts, reason = next(extracted) if row.record is not None else (None, row.error)
            if texts is None:
                stats.bad_rows += 1
                raw = row.raw or (json.dumps(row.record, default=str, ensure_ascii=False)[:300] if row.record else "")
                raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")  # an unpaired surrogate, escaped
                errors.append({"id": content_id(source, row.line), "source": source, "line": row.line,
                               "reason": reason, "raw": raw})
            else:
                instruction, input_, response = texts
                seeds.append({"id": content_id(instruction, input_, response), "instruction": instruction,
                              "input": input_, "response": response, "source": source, "line": row.line})
            if len(seeds) + len(errors) >= CHUNK_ROWS:
                flush()

    rows: list[Row] = []
    for row in iter_rows(path):
        stats.rows += 1
        rows.append(row)
        if len(rows) >= EXTRACT_ROWS:
            take(rows)
            rows = []
    take(rows)
    flush()
    if stats.rows == 0:
        raise UserError(f"{path}: the file is empty")
    if stats.seeds + stats.duplicates == 0:
        first = store.scan("ingest_errors").filter(pl.col("source") == source).head(1).collect()
        reason = f" (line {first['line'][0]}: {first['reason'][0]})" if first.height else ""
        raise UserError(f"{path}: no usable row among {stats.rows}{reason}; "
                        f"see `gra-stream sql DIR \"select * from ingest_errors\"`")
    store.write_segment("files", key, pl.DataFrame([{
        "id": key, "path": source, "bytes": path.stat().st_size, "rows": stats.rows, "seeds": stats.seeds,
        "duplicates": stats.duplicates, "bad_rows": stats.bad_rows, "mapping": mapping.describe() if mapping else ""}]))
    return stats
