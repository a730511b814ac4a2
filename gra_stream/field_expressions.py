"""Field mappings written as DuckDB SQL expressions (`input = "array_to_string(passages, chr(10))"`).

A batch of seed records becomes a table, `record`, with one column per field; the expression is evaluated
as `SELECT (expression) FROM record`. The records are data registered with DuckDB, never text pasted into
the SQL. A batch whose records do not fit one table (a field with mixed types), or where the expression
fails on some rows, is evaluated row by row, so only the rows it fails on are lost, each with the reason.
"""
from __future__ import annotations

import duckdb
import polars as pl

from gra_stream import scratch_sql
from gra_stream.errors import UserError, sql_message


_ERRORS = (duckdb.Error, pl.exceptions.PolarsError, TypeError, ValueError)


def _table(records: list[dict]) -> pl.DataFrame:
    return pl.from_dicts(records, infer_schema_length=None)


def _run(expression: str, frame: pl.DataFrame) -> list:
    with scratch_sql.cursor() as con:
        con.register("record", frame.to_arrow())
        return [row[0] for row in con.sql(f"SELECT ({expression}) FROM record").fetchall()]


def evaluate(expression: str, records: list[dict]) -> list:
    """The expression's value for each record, or the exception it raised on that record."""
    try:
        return _run(expression, _table(records))
    except _ERRORS:
        return [_one(expression, r) for r in records]


def _one(expression: str, record: dict):
    try:
        return _run(expression, _table([record]))[0]
    except _ERRORS as e:
        return e


def check_expression(expression: str, record: dict, where: str) -> None:
    """An expression that fails on the file's first record is a config error, named before any work."""
    value = _one(expression, record)
    if isinstance(value, Exception):
        raise UserError(f"{where} = {expression!r} does not evaluate on the first record: {sql_message(value)[:300]}")
