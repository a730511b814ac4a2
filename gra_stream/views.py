"""SQL views over a run directory: one per table (over its Parquet segments) plus sql/views.sql."""
from __future__ import annotations

import duckdb

from gra_stream.config import SQL_DIR
from gra_stream.schemas import TABLES


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def define_views(con: duckdb.DuckDBPyConnection, store) -> None:
    for table in TABLES:
        con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM "
                    f"read_parquet({_quote(store.glob(table))}, union_by_name = true)")
    con.execute((SQL_DIR / "views.sql").read_text(encoding="utf-8"))


VIEWS = ("rejections", "quarantine", "calls", "decisions")
