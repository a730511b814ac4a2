"""`gra-stream sql`: read-only SQL over a run directory, safe to use while a run is writing to it."""
from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, TextIO, TypeVar

import duckdb

from gra_stream.errors import UserError, sql_message
from gra_stream.schemas import TABLES
from gra_stream.store import READ_ERRORS, Store
from gra_stream.views import VIEWS

READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}
ROWS_PER_CHUNK = 10_000  # rows fetched and written at a time: CSV and JSON output streams, whatever its size

T = TypeVar("T")


def open_run(run_dir: Path) -> Store:
    store = Store(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    if not store.exists():
        raise UserError(f"{run_dir} is not a gra-stream run directory (no seeds/ table)")
    return store


def read_run(store: Store, read: Callable[[], T]) -> T:
    """`read()` through `Store.read`, for a command that reads a run directory: a failure that is not a
    commit's on one line, naming the file where one is damaged (`damage_named`)."""
    try:
        return store.read(read)
    except DAMAGE_ERRORS as e:
        damage = _damage(store)
        if damage is not None:
            raise damage from None
        if isinstance(e, duckdb.Error):
            raise UserError(f"cannot read {store.root}: {sql_message(e)}") from None
        raise


@contextmanager
def damage_named(store: Store) -> Iterator[None]:
    """A failed read that a damaged file explains becomes one line naming it and what to delete (`_damage`),
    whichever reader met it first; other failures pass through."""
    try:
        yield
    except DAMAGE_ERRORS:
        damage = _damage(store)
        if damage is None:
            raise
        raise damage from None


DAMAGE_ERRORS = (*READ_ERRORS, ValueError)  # ValueError: numpy's, on an index file cut short


def _damage(store: Store) -> UserError | None:
    """The error to show for the damaged file of the run directory (a segment that is not whole Parquet, an
    index file cut short: a copy of the directory made while a run wrote it), if there is one."""
    damaged = store.damaged_file()
    if damaged is None:
        return None
    where = damaged.relative_to(store.root)
    if where.parts[0] == ".index":
        problem = (f"its index file {where} is cut short (delete it: a run makes it again; docs/resuming.md, "
                   f"'Derived files')")
    else:
        advice = ("delete every segment of runs/; docs/resuming.md, 'A damaged segment', says why"
                  if where.parts[0] == "runs" else "docs/resuming.md, 'A damaged segment', says what to delete")
        problem = f"its segment {where} is not a whole Parquet file ({advice})"
    return UserError(f"cannot read {store.root}: {problem}")


def run_query(store: Store, query: str) -> tuple[list[str], Iterator[list[tuple]]]:
    """The columns of `query`'s result and its rows, fetched ROWS_PER_CHUNK at a time as they are read."""
    con = read_run(store, store.connect)  # its views read the segments already
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as e:
        raise sql_error(e) from None
    if not statements:
        raise UserError("the query is empty")
    for st in statements:
        kind = st.type.name if hasattr(st.type, "name") else str(st.type)
        if kind not in READ_ONLY_TYPES:
            raise UserError(f"gra-stream sql is read-only: a {kind} statement is refused; use SELECT")
    # Only the last statement's rows are shown; earlier ones must be SELECTs too, so they change nothing.
    try:
        # Reads stay inside the run directory; nothing can turn that back on.
        con.execute("SET allowed_directories = $dirs", {"dirs": [str(store.root.resolve()) + "/"]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as e:
        raise sql_error(e) from None

    def first_rows():
        result = con.execute(statements[-1])
        return result, result.fetchmany(ROWS_PER_CHUNK)

    # The query runs again where a commit broke it (Store.read), but only until its first rows are out.
    try:
        result, first = store.read(first_rows)
        columns = [d[0] for d in result.description]
    except duckdb.Error as e:
        raise sql_error(e) from None
    return columns, itertools.chain([first] if first else [], _chunks(result))


def _chunks(result: duckdb.DuckDBPyConnection) -> Iterator[list[tuple]]:
    try:
        while rows := result.fetchmany(ROWS_PER_CHUNK):
            yield rows
    except duckdb.Error as e:
        raise sql_error(e) from None


def sql_error(error: duckdb.Error) -> UserError:
    """DuckDB's message on one line, with its hints; an unknown table also points at the table list."""
    message = sql_message(error)
    if "Catalog Error: Table with name" in message:
        message += " (gra-stream sql DIR with no query lists the tables)"
    return UserError(f"SQL error: {message}")


def list_tables(store: Store) -> tuple[list[str], Iterator[list[tuple]]]:
    con = store.connect()
    rows = [(t, "table", con.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]) for t in TABLES]
    rows += [(v, "view", con.sql(f"SELECT count(*) FROM {v}").fetchall()[0][0]) for v in VIEWS]
    rows += [(f"{k.label}.{t}", f"kept ({k.kept_at})", con.sql(f"SELECT count(*) FROM {k.label}.{t}").fetchall()[0][0])
             for k in store.kept() for t in k.tables()]
    return ["name", "kind", "rows"], iter([rows])


def _plain(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def write_rows(columns: list[str], chunks: Iterator[list[tuple]], fmt: str, out: TextIO, *,
               max_width: int = 60) -> None:
    """Write the rows to `out`: as JSON (one array) or CSV chunk by chunk; as a table, whose widths need
    every row, all at once."""
    if fmt == "json":
        out.write("[")
        sep = ""
        for rows in chunks:
            for row in rows:
                out.write(sep + json.dumps({c: _plain(v) for c, v in zip(columns, row)}, ensure_ascii=False))
                sep = ", "
        out.write("]\n")
        return
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for rows in chunks:
            writer.writerows([[json.dumps(_plain(v), ensure_ascii=False) if isinstance(v, (list, dict)) else v
                               for v in row] for row in rows])
        return

    def cell(v) -> str:
        text = "NULL" if v is None else json.dumps(_plain(v), ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)
        text = text.replace("\n", "\\n")
        return text if len(text) <= max_width else text[: max_width - 3] + "..."

    cells = [[cell(v) for v in row] for rows in chunks for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths)), "-+-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    lines.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    out.write("\n".join(lines) + "\n")
