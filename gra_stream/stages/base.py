"""What every stage is made of: the `Stage` declaration, the `Context` a batch runs with, and the helpers
that turn a stage's output into a frame of its table's declared columns (see gra_stream/stages/__init__.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import duckdb
import polars as pl

from gra_stream.backends.pool import ModelPool
from gra_stream.config import Config
from gra_stream.schemas import TABLES, polars_types
from gra_stream.sql_filters import SqlFilter
from gra_stream.store import Store


def table_frame(rows: list[dict], table: str) -> pl.DataFrame:
    """A stage's output rows as a frame of `table`'s declared columns and types (keys it lacks are null),
    so no row's types are inferred."""
    return columns_frame({f.name: [row.get(f.name) for row in rows] for f in TABLES[table]}, table)


def columns_frame(columns: dict[str, list | pl.Series], table: str) -> pl.DataFrame:
    """A stage's output as columns (a list of values or a Series, one per row), as a frame of `table`'s
    declared columns and types (columns it lacks are null): no dict per row, as `table_frame` needs.
    Built by Polars: Arrow would import pandas to build an array from Python values, which delays each
    worker's first batch."""
    n = len(next(iter(columns.values())))
    out = []
    for name, dtype in polars_types(table).items():
        values = columns.get(name)
        if isinstance(values, pl.Series):
            out.append(values.cast(dtype).alias(name))
        else:
            out.append(pl.Series(name, [None] * n if values is None else values, dtype=dtype))
    return pl.DataFrame(out)


@dataclass
class Context:
    config: Config
    pool: ModelPool
    con: duckdb.DuckDBPyConnection          # views over the run's tables, for lookups across batches
    filters: list[SqlFilter] = field(default_factory=list)
    store: Store | None = None              # the run directory (indexes kept beside the tables)
    reusable: dict[str, str] = field(default_factory=dict)  # stage -> kept version to read work back from


@dataclass(frozen=True)
class Stage:
    name: str
    table: str                                  # the one table this stage writes
    inputs: tuple[str, ...]                     # columns the stage reads from its pending rows
    pending: Callable[..., str]                 # (config, scope) -> SQL: rows still to process (gra_stream/waves.py)
    run: Callable[[pl.DataFrame, Context], pl.DataFrame]
    llm: bool = False
    ordered: bool = False                       # a batch reads what earlier batches of this stage committed;
                                                # its pending rows have a `wave` column (`Scope.wave`)
    prepare: Callable[[pl.DataFrame, Context], pl.DataFrame] | None = None  # ordered stages: the per-row part
    finish: Callable[[pl.DataFrame, Context], pl.DataFrame] | None = None   # and the part run in order
    batch_size: Callable[[Config], int] | None = None   # rows per batch, where not batch_size / cpu_batch_size
    setup: Callable[[Context], None] | None = None      # once per pass with pending rows, in the runner, before any batch
    streams: bool = False  # makes the rows the waves stream (generation): its pass over wave w reads the
                           # rows of every wave up to w (its example pool), not only its own
    after: tuple[str, ...] | None = None  # the stages whose pass over the same wave this one's waits for
                                          # (None: the stage before it in the list)

    def rows_per_batch(self, config: Config) -> int:
        if self.batch_size is not None:
            return self.batch_size(config)
        return config.llm_batch_size if self.llm else config.cpu_batch_size
