"""One private in-memory DuckDB per process for queries outside a run's tables: SQL filters and field
expressions over a frame, the kept versions' row lookups over segment files. Each query takes a cursor of
it: a cursor is a connection of its own, with its own registered views, and costs microseconds where
opening a new database costs milliseconds."""
from __future__ import annotations

import threading

import duckdb

_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def cursor() -> duckdb.DuckDBPyConnection:
    """A fresh connection to the scratch database; close it (or use it as a context manager) when done."""
    global _database
    with _lock:
        if _database is None:
            _database = duckdb.connect(":memory:")
        return _database.cursor()
