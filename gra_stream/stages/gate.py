"""Gate: cheap checks before the expensive review calls, three filters in order, each dropping rows with a
reason that `rejections` shows:
1. the SQL quality filters (sql/filters; gra_stream/sql_filters.py),
2. decontamination against benchmark test sets (word n-gram overlap; gra_stream/decontaminate.py),
3. MinHash near-duplicates of instructions among everything that passed before, in this run and earlier
   ones (persistent and incremental: the signatures and band keys are columns of `gates`;
   gra_stream/band_index.py searches them).
The first two are per row (`ROW_FILTERS`, each seeing only what the ones before kept); the third depends
on what earlier batches passed, so it is split between `prepare` (signatures, the search of segments
committed so far) and `finish` (in id order, against everything committed since).
"""
import numpy as np
import polars as pl

from gra_stream.band_index import EarlierIndex, better_match
from gra_stream.decontaminate import contamination_drops
from gra_stream.minhash import band_keys, signatures
from gra_stream.sql_filters import apply_filters
from gra_stream.stages.base import Context, Stage
from gra_stream.waves import Scope

SCHEMA = {"id": pl.String, "passed": pl.Boolean, "reason": pl.String, "detail": pl.String,
          "duplicate_of": pl.String, "minhash": pl.List(pl.UInt32), "bands": pl.List(pl.UInt64)}


def pending(config, scope: Scope = Scope()) -> str:
    return (f"SELECT g.*, {scope.wave('g.seed_id')} AS wave FROM generations g ANTI JOIN gates x ON x.id = g.id "
            f"WHERE g.status = 'ok' AND {scope.seeds('g.seed_id')} ORDER BY wave, g.id")


PAIRS_AT_ONCE = 1 << 16  # candidate pairs scored at once (8 MB of compared signatures)


def within_candidates(sigs: np.ndarray, keys: np.ndarray, threshold: float) -> dict[int, list[tuple[float, int]]]:
    """For each row i of a batch (signatures `sigs`, band keys `keys`, rows in walk order), the earlier rows j
    that could be its within-batch match: sharing a band key, estimated Jaccard >= threshold, as
    (-estimate, j) pairs sorted best first (the higher estimate, then the earlier row). Found for the whole
    batch at once in numpy, rather than by searching a growing band index row by row.

    Only the first row of a group with one and the same signature is a candidate: a later one never
    passes (its first twin passed, so it matches it; or its twin matched a row that passed or an earlier
    batch's sample, and so does it, with the same estimate). Without that, the 6% of fake instructions
    that are one sentence would pair with each other a million times per batch."""
    n, width = sigs.shape
    if n < 2:
        return {}
    _, first_of, twin_group = np.unique(sigs, axis=0, return_index=True, return_inverse=True)
    is_first = np.zeros(n, dtype=bool)
    is_first[first_of] = True
    flat, rows = keys.ravel(), np.repeat(np.arange(n), keys.shape[1])
    order = np.lexsort((rows, flat))  # by key, rows in walk order within a key
    flat, rows = flat[order], rows[order]
    group_start = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
    group_of = np.repeat(np.arange(len(group_start)), np.diff(np.r_[group_start, len(flat)]))
    # candidates of an entry: the first twins before it in its key's group
    firsts_so_far = np.cumsum(is_first[rows])
    before = firsts_so_far - is_first[rows] - (firsts_so_far[group_start] - is_first[rows[group_start]])[group_of]
    if not before.any():
        return {}
    firsts = rows[is_first[rows]]                      # first twins, grouped by key, in walk order
    first_start = np.r_[0, np.cumsum(np.bincount(group_of[is_first[rows]], minlength=len(group_start)))][group_of]
    entry = np.repeat(np.arange(len(rows)), before)
    k = np.arange(len(entry)) - np.repeat(np.cumsum(before) - before, before)
    pairs = np.unique(firsts[first_start[entry] + k] * n + rows[entry])  # (j, i) once, whatever keys they share
    found: dict[int, list[tuple[float, int]]] = {}
    for a in range(0, len(pairs), PAIRS_AT_ONCE):
        j, i = np.divmod(pairs[a:a + PAIRS_AT_ONCE], n)
        scores = (sigs[j] == sigs[i]).sum(axis=1) / width
        keep = scores >= threshold
        for row, other, score in zip(i[keep].tolist(), j[keep].tolist(), scores[keep].tolist()):
            found.setdefault(row, []).append((-score, other))
    for candidates in found.values():
        candidates.sort()
    return found


# The per-row filters, in order: (batch, ctx) -> {id: (reason, detail)} for the rows each drops.
ROW_FILTERS = (
    ("sql", lambda batch, ctx: apply_filters(ctx.filters, batch)),
    ("decontamination", lambda batch, ctx: contamination_drops(batch, ctx.config.decontamination)),
)


def row_filter_drops(batch: pl.DataFrame, ctx: Context) -> dict[str, tuple[str, str]]:
    """id -> (reason, detail) of the first per-row filter that drops the row."""
    drops: dict[str, tuple[str, str]] = {}
    for _, unit in ROW_FILTERS:
        remaining = batch.filter(~pl.col("id").is_in(list(drops))) if drops else batch
        drops.update(unit(remaining, ctx))
    return drops


def prepare(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """Per row, no lookups of this stage's own work in flight (runs ahead in worker processes under
    `--executor processes`): the SQL filters, decontamination, the MinHash signature and band keys of every
    row they did not drop, and its best earlier match among the gates segments committed by now, whose
    names the column `searched` keeps (the same on every row: a categorical, stored once). `finish` then
    searches only the segments committed since: most of the search runs beside the other workers, not in
    the one process that must take the batches in order."""
    d = ctx.config.dedup
    drops = row_filter_drops(batch, ctx)
    ids = batch["id"].to_list()
    survivors = [i for i, id_ in enumerate(ids) if id_ not in drops]
    texts = batch["instruction"].to_list()
    sigs = signatures([texts[i] for i in survivors], num_perm=d.num_perm, k=d.shingle_chars)
    keys = band_keys(sigs, d.bands)
    index = EarlierIndex(ctx.store, d.num_perm, d.bands)
    searched = index.segments()
    earlier = index.earlier_matches([ids[i] for i in survivors], sigs, keys, d.threshold, searched)
    all_sigs = np.zeros((len(ids), d.num_perm), dtype=np.uint32)
    all_keys = np.zeros((len(ids), d.bands), dtype=np.uint64)
    all_sigs[survivors], all_keys[survivors] = sigs, keys
    kept = pl.col("reason") == ""
    return batch.select("id").with_columns(
        pl.Series("reason", [drops[i][0] if i in drops else "" for i in ids], dtype=pl.String),
        pl.Series("detail", [drops[i][1] if i in drops else "" for i in ids], dtype=pl.String),
        pl.Series("minhash", all_sigs).cast(pl.List(pl.UInt32)),
        pl.Series("bands", all_keys).cast(pl.List(pl.UInt64)),
        pl.Series("earlier_id", [earlier[i][0] if i in earlier else None for i in ids], dtype=pl.String),
        pl.Series("earlier_score", [earlier[i][1] if i in earlier else None for i in ids], dtype=pl.Float64),
        pl.Series("searched", ["\n".join(s.name for s in searched)], dtype=pl.Categorical).gather([0] * len(ids)),
    ).with_columns(pl.when(kept).then(pl.col("minhash")), pl.when(kept).then(pl.col("bands")))


def finish(prepared: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """In id order, against every earlier batch: the first of a near-duplicate group passes."""
    d = ctx.config.dedup
    ids = prepared["id"].to_list()
    reasons, details = prepared["reason"].to_list(), prepared["detail"].to_list()
    survivors = [i for i, reason in enumerate(reasons) if not reason]
    sigs = np.zeros((len(survivors), d.num_perm), dtype=np.uint32)
    keys = np.zeros((len(survivors), d.bands), dtype=np.uint64)
    if survivors:
        kept = prepared.filter(pl.col("reason") == "")
        sigs = kept["minhash"].list.to_array(d.num_perm).to_numpy().astype(np.uint32)
        keys = kept["bands"].list.to_array(d.bands).to_numpy().astype(np.uint64)
    index = EarlierIndex(ctx.store, d.num_perm, d.bands)
    searched = set(prepared["searched"][0].split("\n")) if prepared.height else set()
    since = [s for s in index.segments() if s.name not in searched]  # committed after `prepare` looked
    earlier = index.earlier_matches([ids[i] for i in survivors], sigs, keys, d.threshold, since)
    for id_, other, score in prepared.select("id", "earlier_id", "earlier_score").drop_nulls().iter_rows():
        earlier[id_] = better_match(earlier.get(id_), (other, score))
    candidates = within_candidates(sigs, keys, d.threshold)
    passed = [False] * len(ids)
    duplicate_of: list = [None] * len(ids)
    for row, i in enumerate(survivors):  # id order: the first of a near-duplicate group is kept
        within = next(((ids[survivors[j]], -score) for score, j in candidates.get(row, ()) if passed[survivors[j]]), None)
        # the higher estimate, then the smaller id, wherever the batches were cut: within a wave the rows
        # come in id order, so a single batch would pick the same one
        match = better_match(earlier.get(ids[i]), within)
        if match and match[1] >= d.threshold:
            reasons[i], details[i], duplicate_of[i] = "near_duplicate", f"estimated Jaccard {match[1]:.2f}", match[0]
            continue
        passed[i] = True
    return pl.DataFrame({"id": ids, "passed": passed, "reason": reasons, "detail": details,
                         "duplicate_of": duplicate_of, "minhash": prepared["minhash"], "bands": prepared["bands"]},
                        schema=SCHEMA)


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return finish(prepare(batch, ctx), ctx)


def batch_size(config) -> int:
    return config.dedup.batch_size


STAGE = Stage("gate", "gates", ("id", "instruction", "response"), pending, run, ordered=True,
              prepare=prepare, finish=finish, batch_size=batch_size)
