"""Quality gates written in SQL: each `sql/filters/NAME.sql` is a SELECT over the relation `batch` that
names the rows to drop, as (id, reason, detail). Parameters are declared in the file as
`-- param NAME = DEFAULT` and bound as DuckDB named parameters ($NAME): never pasted into the SQL."""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from gra_stream import scratch_sql
from gra_stream.config import SQL_DIR, Config
from gra_stream.errors import UserError, sql_message
from gra_stream.schemas import TABLES, empty

_PARAM = re.compile(r"^--\s*param\s+(\w+)\s*=\s*(.+?)\s*$", re.MULTILINE)
RESULT_COLUMNS = ["id", "reason", "detail"]


@dataclass(frozen=True)
class SqlFilter:
    name: str
    path: Path
    sql: str
    params: dict


def _default(raw: str, path: Path, name: str):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        raise UserError(f"{path}: parameter {name} has an unreadable default {raw!r} "
                        f"(write a number or a quoted string)") from None


def load_filters(config: Config) -> list[SqlFilter]:
    """Find, parameterise and dry-run every enabled filter; any problem is one clear error, before any model loads."""
    folders = [Path(config.filters.directory)] if config.filters.directory else []
    folders.append(SQL_DIR / "filters")
    unknown = sorted(set(config.filters.params) - set(config.filters.enabled))
    if unknown:
        raise UserError(f"{config.source}: [filters.{unknown[0]}] configures a filter that is not in filters.enabled")
    filters = []
    for name in config.filters.enabled:
        path = next((f / f"{name}.sql" for f in folders if (f / f"{name}.sql").exists()), None)
        if path is None:
            raise UserError(f"{config.source}: filters.enabled names {name!r}, but no {name}.sql exists in "
                            f"{', '.join(map(str, folders))}")
        sql = path.read_text(encoding="utf-8")
        params = {k: _default(v, path, k) for k, v in _PARAM.findall(sql)}
        overrides = config.filters.params.get(name, {})
        bad = sorted(set(overrides) - set(params))
        if bad:
            raise UserError(f"{config.source}: filters.{name}.{bad[0]} is not a parameter of {path} "
                            f"(it declares: {', '.join(params) or 'none'})")
        for key, value in overrides.items():
            if type(value) is not type(params[key]) and not (isinstance(params[key], float) and isinstance(value, int)):
                raise UserError(f"{config.source}: filters.{name}.{key} = {value!r} must be "
                                f"{type(params[key]).__name__} like its default {params[key]!r}")
        f = SqlFilter(name, path, sql, {**params, **overrides})
        _dry_run(f)
        filters.append(f)
    return filters


def _dry_run(f: SqlFilter) -> None:
    with scratch_sql.cursor() as con:
        con.register("batch", empty(TABLES["generations"]))
        try:
            result = con.execute(f.sql, f.params)
        except duckdb.Error as e:
            raise UserError(f"{f.path}: the filter does not run: {sql_message(e)}") from None
        columns = [d[0] for d in result.description]
    if columns != RESULT_COLUMNS:
        raise UserError(f"{f.path}: a filter must select exactly (id, reason, detail); it selects ({', '.join(columns)})")


def apply_filters(filters: list[SqlFilter], batch: pl.DataFrame) -> dict[str, tuple[str, str]]:
    """id -> (reason, detail) of the first filter, in config order, that drops the row."""
    drops: dict[str, tuple[str, str]] = {}
    if not filters or batch.is_empty():
        return drops
    with scratch_sql.cursor() as con:
        con.register("batch", batch.to_arrow())
        for f in filters:
            for id_, reason, detail in con.execute(f.sql, f.params).fetchall():
                drops.setdefault(id_, (reason, detail or ""))
    return drops
