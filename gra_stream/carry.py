"""What a config change carries over from the tables kept aside, instead of recomputing it.

Rows of a stage that makes the same rows of an input row as before (`stage_versions.same_rows`): a
stage recomputed only because the rows it is given changed (reviews after a filter change, adjudications
after a dedup change, annotations after a new tau) makes, for an input row it met before, the rows it
made then. Each of its passes first copies those rows from the newest such kept version (`donors`,
`carry_rows`), and asks only about the rest. Nothing is decided by the copy that the stage would not
decide again: with fake models it saves their work, with real ones the call cache's lookups.

Per-row work of a stage whose rows cannot be carried: the diversity filter's walk depends on every
candidate before it, so a new tau walks again, but a candidate's embedding depends only on its text and
the embedding model (`stage_versions.same_work`). With MiniLM, its batches read the embeddings a kept
version made of the same generations (`reusable`, named in the batches' Context) and embed only the
others.

Reviews carried across a config change that only moves the short-circuit: a change of `tau`,
`min_reviews` or `short_circuit` alone (stage_versions.SHORT_CIRCUIT) leaves every review request as it
was and changes only which reviewers are asked. When the switch keeps the old reviews aside, it also
copies into the new `reviews` table the rows a run under the new config makes from replies it already
has (`review.replay`), one segment per kept segment. The review stage then finds pending only the
generations that need a reviewer the old config skipped, instead of replaying every request through the
call cache (and, with fake models, computing every reply again).
"""
from __future__ import annotations

from dataclasses import asdict
from functools import partial
from pathlib import Path

import polars as pl

from gra_stream import stage_versions
from gra_stream.config import Committee, Config
from gra_stream.embeddings import READ_BACK
from gra_stream.ids import content_id
from gra_stream.pending import batches, drain
from gra_stream.stages import Stage, review
from gra_stream.store import EMPTY_SEGMENT, Store

PREFIX = "carried-"


def planned(recorded: dict, config: Config, moves) -> dict:
    """What the switch carries (the journal's "carry" entry): the new committee settings when the review
    table starts over under a change that only moves the short-circuit, else nothing."""
    starts_over = any(m.stage == "review" and not m.restored_from for m in moves)
    if starts_over and stage_versions.only_selects(recorded, config, "review"):
        return {"review": asdict(config.committee)}
    return {}


def reviews_to_ask(store: Store, committee: Committee) -> tuple[int, int]:
    """(how many generations the review stage takes again, the most review calls they make before
    re-asks) once the current `reviews` table is carried under `committee`: for each, its reviewers from
    the first one without a carried reply on. Segment by segment, as the carry goes: a generation's
    reviews are all in one segment."""
    generations = calls = 0
    for segment in store.segments("reviews"):
        if segment.name != EMPTY_SEGMENT:
            again = review.reviewed_again(pl.read_parquet(segment, columns=list(review.REPLAYED)), committee)
            generations += len(again)
            calls += sum(committee.reviewers - first for first in again.values())
    return generations, calls


def carry_reviews(store: Store, kept: Path, committee: dict, on_rows=None) -> None:
    """Write the carried rows of each segment of `kept` (the old config's reviews folder) into `reviews`,
    calling `on_rows(rows)` with each segment's rows read. A segment already carried (by a run killed
    half-way) is left as it is."""
    c = Committee(**committee)
    for segment in sorted(kept.glob("*.parquet")) if kept.is_dir() else []:
        name = PREFIX + segment.stem.removeprefix(PREFIX)
        if segment.name == EMPTY_SEGMENT or (store.table_dir("reviews") / f"{name}.parquet").exists():
            continue
        rows = pl.read_parquet(segment)
        carried = review.replay(rows, c)
        if carried.height:
            store.write_segment("reviews", name, carried)
        if on_rows:
            on_rows(rows.height)


def donors(store: Store, config: Config, stages: list[Stage]) -> dict[str, str]:
    """Per stage whose rows can be carried, the newest kept version (its label) whose table of that stage
    holds the rows it makes under this config."""
    carried = [(s.name, s.table) for s in stages
               if stage_versions.STAGES.get(s.name, stage_versions.Depends()).carry_key]
    return _newest(store, config, carried, stage_versions.same_rows)


def reusable(store: Store, config: Config) -> dict[str, str]:
    """Per stage whose per-row work a batch reads back (`reads_back`), the newest kept version that did
    that work as this config does it."""
    return _newest(store, config, [("diversity", "diversity")], partial(reads_back, config))


def reads_back(config: Config, old: dict, new: dict, stage: str) -> bool:
    """Whether `stage` reads back the per-row work of a table kept under the inputs `old`: the diversity
    filter's embeddings, where they are the same (`stage_versions.same_work`) and reading them back is
    the quicker way (`embeddings.READ_BACK`)."""
    return stage == "diversity" and config.diversity.model in READ_BACK and stage_versions.same_work(old, new, stage)


def _newest(store: Store, config: Config, stages: list[tuple[str, str]], same) -> dict[str, str]:
    """Per (stage, table) of `stages`, the newest kept version with rows in that table for which
    `same(its inputs, this config's, stage)` holds."""
    kept = store.kept()
    if not kept:
        return {}
    now = stage_versions.inputs(config)
    out = {}
    for stage, table in stages:
        fits = [k.label for k in kept if same(k.inputs, now, stage)
                and any(p.name != EMPTY_SEGMENT for p in (k.path / table).glob("*.parquet"))]
        if fits:
            out[stage] = fits[-1]
    return out


def carry_rows(con, store: Store, stage: Stage, donor: str, pending: str, scratch: Path, size: int) -> int:
    """Write into `stage`'s table the rows of the kept version `donor` for the input rows the query
    `pending` finds, in segments of about `size` rows; returns how many. An input row's rows go into
    one segment: once one of them is there, the row is no longer pending."""
    key = stage_versions.STAGES[stage.name].carry_key
    rows = drain(con, f"SELECT k.* FROM {donor}.{stage.table} k SEMI JOIN ({pending}) p ON p.id = k.{key} "
                      f"ORDER BY k.{key}, k.id", scratch)
    for frame in _whole(batches(scratch, size), key) if rows else ():
        store.write_segment(stage.table, f"{PREFIX}{stage.name}-{content_id(*frame['id'].to_list())}", frame)
    return rows


def _whole(frames, key: str):
    """`frames` (ordered by `key`) cut again so that the rows of one `key` are in one frame."""
    held = None
    for frame in frames:
        frame = frame if held is None else pl.concat([held, frame])
        tail = int((frame[key] == frame[key][-1]).sum())  # the last key's rows, which the next frame may continue
        if frame.height > tail:
            yield frame.head(frame.height - tail)
        held = frame.tail(tail)
    if held is not None and held.height:
        yield held
