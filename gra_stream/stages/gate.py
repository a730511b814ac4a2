"""Gate: cheap checks before the expensive review calls. First the SQL quality filters (sql/filters),
then decontamination against benchmark test sets (word n-gram overlap), then MinHash near-duplicate removal of instructions against every sample that already passed, in this
run and earlier ones (persistent and incremental: the signatures and band keys are columns of `gates`;
gra_stream/band_index.py searches them).
"""
from collections import defaultdict

import numpy as np
import polars as pl

from gra_stream.band_index import EarlierIndex, better_match
from gra_stream.decontaminate import contaminated, reference_sets
from gra_stream.minhash import band_keys, signatures
from gra_stream.sql_filters import apply_filters
from gra_stream.stages import Context, Stage

SCHEMA = {"id": pl.String, "passed": pl.Boolean, "reason": pl.String, "detail": pl.String,
          "duplicate_of": pl.String, "minhash": pl.List(pl.UInt32), "bands": pl.List(pl.UInt64)}


def pending(config, rounds_open: int = 1) -> str:
    return ("SELECT g.* FROM generations g ANTI JOIN gates x ON x.id = g.id "
            "WHERE g.status = 'ok' ORDER BY g.id")


class BandIndex:
    """Band key -> rows of a growing signature matrix: the rows of this batch that passed so far."""

    def __init__(self, num_perm: int):
        self.ids: list[str] = []
        self._sigs = np.zeros((64, num_perm), dtype=np.uint32)  # capacity doubles as rows are added
        self.by_band: dict[int, list[int]] = defaultdict(list)

    @property
    def sigs(self) -> np.ndarray:
        return self._sigs[: len(self.ids)]

    def add(self, ids, sigs: np.ndarray, keys: np.ndarray) -> None:
        base = len(self.ids)
        while base + len(sigs) > len(self._sigs):
            self._sigs = np.vstack([self._sigs, np.zeros_like(self._sigs)])
        self._sigs[base: base + len(sigs)] = sigs
        self.ids.extend(ids)
        for row, row_keys in enumerate(keys):
            for key in row_keys.tolist():
                self.by_band[key].append(base + row)

    def best_match(self, sig: np.ndarray, keys: np.ndarray) -> tuple[str, float] | None:
        rows = {r for key in keys.tolist() for r in self.by_band.get(key, ())}
        if not rows:
            return None
        rows = sorted(rows)
        scores = (self.sigs[rows] == sig).mean(axis=1)
        best = int(np.argmax(scores))
        return self.ids[rows[best]], float(scores[best])


def prepare(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """Per row, no lookups of this stage's own work in flight (runs ahead in worker processes under
    `--executor processes`): the SQL filters, decontamination, the MinHash signature and band keys of every
    row they did not drop, and its best earlier match among the gates segments committed by now, whose
    names the column `searched` keeps (the same on every row: a categorical, stored once). `finish` then
    searches only the segments committed since: most of the search runs beside the other workers, not in
    the one process that must take the batches in order."""
    d = ctx.config.dedup
    drops = apply_filters(ctx.filters, batch)
    decon = ctx.config.decontamination
    if decon.references:
        references = reference_sets(decon.references, decon.ngram)
        for row in batch.iter_rows(named=True):
            if row["id"] not in drops:
                hit = contaminated(f"{row['instruction']}\n{row['response']}", references, decon.ngram)
                if hit:
                    drops[row["id"]] = ("contaminated", f"shares a {decon.ngram}-gram with {hit}")
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
    # Only rows sharing a band key with another row of the batch can match within it (a few percent):
    # the others skip the index, which is what the walk spends its time on.
    _, inverse, counts = np.unique(keys.ravel(), return_inverse=True, return_counts=True)
    shared = (counts[inverse] > 1).reshape(keys.shape).any(axis=1).tolist()
    within = BandIndex(d.num_perm)  # this batch's passed rows that share a key
    passed = [False] * len(ids)
    duplicate_of: list = [None] * len(ids)
    for row, i in enumerate(survivors):  # id order: the first of a near-duplicate group is kept
        match = within.best_match(sigs[row], keys[row]) if shared[row] else None
        if match is None or match[1] < d.threshold:
            match = earlier.get(ids[i])
        elif ids[i] in earlier and earlier[ids[i]][1] > match[1]:
            match = earlier[ids[i]]
        if match and match[1] >= d.threshold:
            reasons[i], details[i], duplicate_of[i] = "near_duplicate", f"estimated Jaccard {match[1]:.2f}", match[0]
            continue
        passed[i] = True
        if shared[row]:
            within.add([ids[i]], sigs[row][None, :], keys[row][None, :])
    return pl.DataFrame({"id": ids, "passed": passed, "reason": reasons, "detail": details,
                         "duplicate_of": duplicate_of, "minhash": prepared["minhash"], "bands": prepared["bands"]},
                        schema=SCHEMA)


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return finish(prepare(batch, ctx), ctx)


def batch_size(config) -> int:
    return config.dedup.batch_size


STAGE = Stage("gate", "gates", ("id", "instruction", "response"), pending, run, ordered=True,
              prepare=prepare, finish=finish, batch_size=batch_size)
