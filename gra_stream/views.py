"""SQL views over a run directory: one per table (over its Parquet segments) plus sql/views.sql.

Each table view is unioned by name with an empty relation of the table's declared schema, so a run
directory written by an older version (a table folder missing, a column added since) still reads, with
NULL where it has no data."""
from __future__ import annotations

import duckdb

from gra_stream.config import SQL_DIR
from gra_stream.schemas import TABLES, empty


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


def define_views(con: duckdb.DuckDBPyConnection, store) -> None:
    for table, schema in TABLES.items():
        declared = f"__declared_{table}"
        # a table of the database, not a registration of this connection: cursors see it too
        con.register("__declared", empty(schema))
        con.execute(f"CREATE OR REPLACE TABLE {declared} AS SELECT * FROM __declared")
        con.unregister("__declared")
        if store.segments(table):
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM read_parquet({_quote(store.glob(table))}, "
                        f"union_by_name = true) UNION ALL BY NAME SELECT * FROM {declared}")
        else:
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM {declared}")
    con.execute((SQL_DIR / "views.sql").read_text(encoding="utf-8"))
    for version in store.kept():  # results of earlier configs: v1.samples, v2.verdicts, ...
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {version.label}")
        for table in version.tables():
            if table in TABLES:
                con.execute(f"CREATE OR REPLACE VIEW {version.label}.{table} AS SELECT * FROM read_parquet("
                            f"{_quote(str(version.path / table / '*.parquet'))}, union_by_name = true) "
                            f"UNION ALL BY NAME SELECT * FROM __declared_{table}")


VIEWS = ("rejections", "quarantine", "calls", "decisions")
