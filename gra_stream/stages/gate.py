"""Gate: cheap checks before the expensive review calls. First the SQL quality filters (sql/filters),
then decontamination against benchmark test sets (word n-gram overlap), then MinHash near-duplicate removal of instructions against every sample that already passed, in this
run and earlier ones (persistent and incremental: the signatures and band keys are columns of `gates`).
"""
from collections import defaultdict

import numpy as np
import polars as pl

from gra_stream.decontaminate import contaminated, reference_sets
from gra_stream.minhash import band_keys, signatures
from gra_stream.sql_filters import apply_filters
from gra_stream.stages import Context, Stage

CANDIDATES_SQL = """
SELECT g.id, g.minhash FROM gates g
WHERE g.passed AND g.id IN (
    SELECT id FROM (SELECT id, unnest(bands) AS band FROM gates WHERE passed)
    WHERE band IN (SELECT band FROM batch_bands))
"""
SCHEMA = {"id": pl.String, "passed": pl.Boolean, "reason": pl.String, "detail": pl.String,
          "duplicate_of": pl.String, "minhash": pl.List(pl.UInt32), "bands": pl.List(pl.UInt64)}


def pending(config, rounds_open: int = 1) -> str:
    return ("SELECT g.* FROM generations g ANTI JOIN gates x ON x.id = g.id "
            "WHERE g.status = 'ok' ORDER BY g.id")


class BandIndex:
    """Band key -> rows of a growing signature matrix; the earlier passes are loaded once per batch."""

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


def _earlier(ctx: Context, keys: np.ndarray, num_perm: int, bands: int) -> BandIndex:
    index = BandIndex(num_perm)
    if not keys.size:
        return index
    ctx.con.register("batch_bands", pl.DataFrame({"band": np.unique(keys.ravel())}).to_arrow())
    frame = ctx.con.sql(CANDIDATES_SQL).pl()
    ctx.con.unregister("batch_bands")
    if frame.height:
        sigs = frame["minhash"].list.to_array(num_perm).to_numpy().astype(np.uint32)
        index.add(frame["id"].to_list(), sigs, band_keys(sigs, bands))
    return index


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
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
    index = _earlier(ctx, keys, d.num_perm, d.bands)
    out = {id_: (False, reason, detail, None, None, None) for id_, (reason, detail) in drops.items()}
    for row, i in enumerate(survivors):  # id order: the first of a near-duplicate group is kept
        match = index.best_match(sigs[row], keys[row])
        if match and match[1] >= d.threshold:
            out[ids[i]] = (False, "near_duplicate", f"estimated Jaccard {match[1]:.2f}", match[0], sigs[row], keys[row])
            continue
        out[ids[i]] = (True, "", "", None, sigs[row], keys[row])
        index.add([ids[i]], sigs[row][None, :], keys[row][None, :])
    rows = []
    for id_ in ids:
        passed, reason, detail, duplicate_of, sig, own_keys = out[id_]
        rows.append({"id": id_, "passed": passed, "reason": reason, "detail": detail, "duplicate_of": duplicate_of,
                     "minhash": None if sig is None else sig.tolist(),
                     "bands": None if own_keys is None else own_keys.tolist()})
    return pl.DataFrame(rows, schema=SCHEMA)


STAGE = Stage("gate", "gates", ("id", "instruction", "response"), pending, run)
