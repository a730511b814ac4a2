"""The run log (the `runs` table): what each run records of itself, and what a later run learns from it:
the config the tables were made under (`tables_config`), and whether a finished run left exactly these
tables, so that there is nothing to do without a pending query (`nothing_changed`)."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import polars as pl

from gra_stream import stage_versions
from gra_stream.config import Config
from gra_stream.ids import content_id
from gra_stream.schemas import TABLES
from gra_stream.kept_versions import has_rows
from gra_stream.store import Store


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")  # orders runs started within a second


# What a stage pass reads: every table but the run log and the call cache.
_PASS_INPUTS = [t for t in TABLES if t not in ("runs", "call_cache")]


def record(store: Store, run_id: str, started: str, t0: float, outcome: str, config: Config, seeds,
           stage_names: list[str]) -> None:
    """The run's row, written when it starts ("running") and again when it ends (same id: it replaces it)."""
    store.write_segment("runs", run_id, pl.DataFrame([{
        "id": run_id, "started": started, "finished": "" if outcome == "running" else now(),
        "elapsed_s": time.monotonic() - t0, "outcome": outcome, "config": json.dumps(config.to_json()),
        "versions": json.dumps(stage_versions.record(config)),
        "seed_files": [str(p) for p in seeds],
        # after a finished pass nothing is pending: a later run whose tables, config and stages are the
        # same has nothing to do, which it can tell without a query (`nothing_changed`)
        "tables_digest": _pass_digest(store, config, stage_names) if outcome == "finished" else ""}]))


def _pass_digest(store: Store, config: Config, stage_names: list[str]) -> str:
    return content_id(store.digest(_PASS_INPUTS), json.dumps(config.to_json(), sort_keys=True), *stage_names)


def nothing_changed(store: Store, config: Config, stage_names: list[str]) -> bool:
    """True when a finished run left exactly these tables behind, under this config and these stages."""
    digests = {d for d in store.scan("runs").filter(pl.col("outcome") == "finished")
               .select("tables_digest").collect()["tables_digest"].to_list() if d}
    return _pass_digest(store, config, stage_names) in digests


def tables_config(store: Store) -> tuple[dict | None, dict]:
    """The stage versions and the config the latest run recorded: what the tables were made under
    (None and {} for a new run directory). Tables that no run recorded (their `runs` segments deleted)
    count as made under an unknown config, which every config changes: a run recomputes them all. Their
    versions name the tables, so that two such sets are kept aside apart, not merged under one label."""
    rows = (store.scan("runs").filter(pl.col("versions").is_not_null() & (pl.col("versions") != ""))
            .sort("started", "id").select("versions", "config").collect().rows())
    if rows:
        return json.loads(rows[-1][0]), json.loads(rows[-1][1])
    if any(has_rows(store.table_dir(t)) for t in _PASS_INPUTS):
        unknown = f"unknown {store.digest(_PASS_INPUTS)}"
        return {"versions": dict.fromkeys(stage_versions.STAGES, unknown), "inputs": {}}, {}
    return None, {}


def last_outcome(store: Store) -> str | None:
    """How the latest run ended ("finished", "stopped", "interrupted", "failed"; "running" if it was killed),
    None for a new run directory."""
    rows = store.scan("runs").sort("started", "id").select("outcome").collect()["outcome"].to_list()
    return rows[-1] if rows else None
