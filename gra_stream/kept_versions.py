"""Results of earlier configs, kept beside the current ones until the user prunes them.

When the config changes what a stage computes, the runner moves that stage's table folder into
DIR/versions/vN/, where vN holds the tables of one earlier config (its config and stage versions are in
vN/version.json), and the stage starts over under the new config. Nothing is deleted: `gra-stream sql`
shows each kept table as vN.<table> (`SELECT count(*) FROM v1.samples`), and `gra-stream prune` removes
kept versions. When a change comes back to a config whose tables are kept, they move back instead of
being recomputed: a stage's version names its results exactly, so a kept table of the same version is the
same computation, finished or not.

The moves are written down before they start (DIR/versions/.switch.json) and each is a rename of
segments, so a run killed half-way leaves no segment lost or doubled, and the next run finishes the
switch before anything else (`finish_switch`).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gra_stream import carry, scratch_sql
from gra_stream.cell_storage import table_files
from gra_stream.store import EMPTY_SEGMENT, KeptVersion, Store, write_parquet

INGEST_TABLES = ("seeds", "ingest_errors", "files")


def _index_files(store: Store, table: str) -> list[Path]:
    """The derived lookups kept beside a table (rebuilt on demand), stale once it moves. The diversity
    filter keeps the seeds' cells and the kept samples' cells in one folder: moving one table leaves the
    other's, which would take a minute to train and sort again at a million seeds."""
    if table == "gates":
        return [store.index_dir("gate")]
    if table in ("diversity", "seed_embeddings"):
        return table_files(store.index_dir("diversity"), table)
    return []


def stage_tables(stages) -> dict[str, tuple[str, ...]]:
    """The tables each stage writes: ingest's three, then one per stage."""
    return {"ingest": INGEST_TABLES, **{s.name: (s.table,) for s in stages}}


def has_rows(folder: Path) -> bool:
    return folder.is_dir() and any(p.name != EMPTY_SEGMENT for p in folder.glob("*.parquet"))


def label_for(store: Store, versions: dict[str, str]) -> str:
    """The label the tables of the config with these stage versions are kept under (vN)."""
    known = store.kept()
    same = [k.label for k in known if k.versions == versions]
    return same[0] if same else f"v{1 + max((int(k.label[1:]) for k in known), default=0)}"


def _version_for(store: Store, record: dict, config: dict) -> KeptVersion:
    """The kept version of the config with this record (`stage_versions.record`), made if there is none yet."""
    versions = record["versions"]
    label = label_for(store, versions)
    path = store.kept_dir(label)
    if not path.exists():
        tmp = path.with_name(f".{label}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        kept_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        (tmp / "version.json").write_text(json.dumps({"versions": versions, "inputs": record.get("inputs", {}),
                                                      "config": config, "kept_at": kept_at}, indent=1), encoding="utf-8")
        os.replace(tmp, path)  # the folder appears whole, with its version.json
    return next(k for k in store.kept() if k.label == label)


@dataclass(frozen=True)
class Move:
    stage: str
    table: str
    rows: int                   # rows the current table holds (kept aside under the old config's version)
    restored_from: str          # the kept version whose table comes back ("" when the stage starts over)
    restored_rows: int


def plan_moves(store: Store, stale: list[str], tables: dict[str, tuple[str, ...]],
               new_versions: dict[str, str]) -> list[Move]:
    """What a switch to `new_versions` does for the `stale` stages: which tables are kept aside, and which
    come back from a kept version whose stage version is the new one. `tables` names the tables of the
    stages this run drives; a stale stage it does not drive is left as it is."""
    versions = store.kept()
    moves = []
    for stage in (s for s in stale if s in tables):
        source = next((k for k in reversed(versions) if k.versions.get(stage) == new_versions[stage]
                       and all(has_rows(k.path / t) for t in tables[stage])), None)
        for table in tables[stage]:
            moves.append(Move(stage, table, count_rows(store.table_dir(table)), source.label if source else "",
                              count_rows(source.path / table) if source else 0))
    return moves


def count_rows(folder: Path) -> int:
    return sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet")) if folder.is_dir() else 0


def _move_segments(source: Path, target: Path) -> None:
    """Every segment of `source` into `target`, one rename each. Both hold rows of one stage version, which
    computes a row one way, so a row id in both is the same row. `target` can already hold some: the
    tables of a config reached twice (raising `rounds` back to it switches nothing) are kept under its
    one version, and carried rows sit under other segment names than computed ones. Those rows are
    dropped from the segment that brings them rather than doubled; every step can be repeated after a
    kill (a segment written without them leaves its ids in `target`, so its source goes next time)."""
    target.mkdir(parents=True, exist_ok=True)
    segments = [p for p in source.glob("*.parquet") if p.name != EMPTY_SEGMENT]
    if not segments:
        return
    held = _held(segments, target) if has_rows(target) else {}
    for p in segments:
        if p not in held:
            os.replace(p, target / p.name)
            continue
        if held[p] < pq.read_metadata(p).num_rows:
            write_parquet(target / p.name, _without_held(p, target))
        p.unlink()


def _held(segments: list[Path], target: Path) -> dict[Path, int]:
    """Per segment of `segments` with rows whose id `target` holds, how many: one join over all of them,
    where a lookup per segment would hash every id of `target` again for each."""
    with scratch_sql.cursor() as con:
        found = con.sql("SELECT s.filename, count(*) "
                        "FROM read_parquet($segments, filename = true, union_by_name = true) s "
                        "SEMI JOIN read_parquet($target, union_by_name = true) t ON t.id = s.id GROUP BY ALL",
                        params={"segments": [str(p) for p in segments], "target": str(target / "*.parquet")})
        return {Path(name): n for name, n in found.fetchall()}


def _without_held(segment: Path, target: Path) -> pa.Table:
    """The rows of `segment` whose id `target` does not hold, in their order, with their schema."""
    with scratch_sql.cursor() as con:
        rows = con.sql("SELECT s.* EXCLUDE (file_row_number) FROM read_parquet($segment, file_row_number = true) s "
                       "ANTI JOIN read_parquet($target, union_by_name = true) t ON t.id = s.id "
                       "ORDER BY s.file_row_number",
                       params={"segment": str(segment), "target": str(target / "*.parquet")}).to_arrow_table()
    return rows.cast(pq.read_schema(segment))


def _journal(store: Store) -> Path:
    return store.root / "versions" / ".switch.json"


def switch(store: Store, moves: list[Move], old: tuple[dict, dict], new: tuple[dict, dict], carry: dict,
           on_rows=None) -> None:
    """Keep the moved tables under the old config's version and bring back the restored ones; then carry
    over what `carry` names (gra_stream/carry.py), calling `on_rows(rows)` as it reads them. `old` and
    `new` are (the versions `stage_versions.record` gives, the config as JSON) of the two configs. The
    steps are written down first, so that a run killed half-way is finished by the next (`finish_switch`)."""
    (store.root / "versions").mkdir(exist_ok=True)
    journal = {"old": old[0], "old_config": old[1], "new": new[0], "new_config": new[1],
               "moves": [vars(m) for m in moves], "carry": carry, "done": 0}
    _write_json(_journal(store), journal)
    finish_switch(store, on_rows)


def _read_journal(store: Store) -> dict | None:
    path = _journal(store)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def finish_switch(store: Store, on_rows=None) -> tuple[dict, dict] | None:
    """Finish the switch a run started, if any; returns (versions, config) of the config the tables are
    now under."""
    journal = _read_journal(store)
    if journal is None:
        return None
    steps = [(m, what) for m in journal["moves"] for what in ("keep", "restore")]
    if "review" in journal.get("carry", {}):  # the last step: it reads the reviews kept aside
        steps.append(({"table": "reviews"}, "carry"))
    for i in range(journal["done"], len(steps)):
        move, what = steps[i]
        current = store.table_dir(move["table"])
        if what == "carry":
            kept = store.kept_dir(label_for(store, journal["old"]["versions"])) / move["table"]
            carry.carry_reviews(store, kept, journal["carry"]["review"], on_rows)
        if what == "keep" and has_rows(current):
            target = _version_for(store, journal["old"], journal["old_config"])
            _move_segments(current, target.path / move["table"])
            for path in _index_files(store, move["table"]):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        if what == "restore" and move["restored_from"]:
            source = store.kept_dir(move["restored_from"]) / move["table"]
            if source.is_dir():
                _move_segments(source, current)
                shutil.rmtree(source)
        journal["done"] = i + 1
        _write_json(_journal(store), journal)
    for k in store.kept():  # a version whose every table came back holds nothing any more
        if not k.tables():
            shutil.rmtree(k.path)
    store.init()
    return journal["new"], journal["new_config"]


def pending_switch(store: Store) -> tuple[dict, dict] | None:
    """(versions, config) of the config an unfinished switch goes to, without finishing it."""
    journal = _read_journal(store)
    return (journal["new"], journal["new_config"]) if journal else None


def switched(store: Store) -> None:
    """The run has recorded the config its tables are now under: the switch is over."""
    _journal(store).unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def prune(store: Store, labels: list[str] | None = None) -> list[tuple[str, int]]:
    """Remove the kept versions named (all of them by default); returns (label, bytes freed) for each."""
    out = []
    for k in store.kept():
        if labels is None or k.label in labels:
            size = sum(p.stat().st_size for p in k.path.rglob("*") if p.is_file())
            shutil.rmtree(k.path)
            out.append((k.label, size))
    return out
