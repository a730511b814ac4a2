"""Gate: cheap checks before the expensive review calls. First the SQL quality filters (sql/filters),
then MinHash near-duplicate removal of instructions against every sample that already passed, in this
run and earlier ones (persistent and incremental: the signatures and band keys are columns of `gates`).
"""
import numpy as np
import polars as pl

from gra_stream.minhash import band_keys, estimated_jaccard, signatures
from gra_stream.sql_filters import apply_filters
from gra_stream.stages import Context, Stage

CANDIDATES_SQL = """
SELECT id, minhash, band FROM (SELECT id, minhash, unnest(bands) AS band FROM gates WHERE passed)
WHERE band IN (SELECT band FROM batch_bands)
"""


def pending(config, rounds_open: int = 1) -> str:
    return ("SELECT g.* FROM generations g ANTI JOIN gates x ON x.id = g.id "
            "WHERE g.status = 'ok' ORDER BY g.id")


def _earlier_candidates(ctx: Context, keys: np.ndarray) -> dict[int, list[tuple[str, np.ndarray]]]:
    ctx.con.register("batch_bands", pl.DataFrame({"band": np.unique(keys.ravel())}).to_arrow())
    found: dict[int, list[tuple[str, np.ndarray]]] = {}
    for id_, minhash, band in ctx.con.execute(CANDIDATES_SQL).fetchall():
        found.setdefault(band, []).append((id_, np.asarray(minhash, dtype=np.uint32)))
    ctx.con.unregister("batch_bands")
    return found


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    d = ctx.config.dedup
    drops = apply_filters(ctx.filters, batch)
    survivors = [i for i, id_ in enumerate(batch["id"]) if id_ not in drops]
    texts = batch["instruction"].to_list()
    sigs = signatures([texts[i] for i in survivors], num_perm=d.num_perm, shingle_words=d.shingle_words)
    keys = band_keys(sigs, d.bands)
    index = _earlier_candidates(ctx, keys) if len(survivors) else {}
    out = {id_: (False, reason, detail, None, None, None) for id_, (reason, detail) in drops.items()}
    ids = batch["id"].to_list()
    for row, i in enumerate(survivors):  # id order: the first of a near-duplicate group is kept
        sig, own_keys = sigs[row], keys[row]
        match = None
        for key in map(int, own_keys):
            for other_id, other_sig in index.get(key, ()):
                score = estimated_jaccard(sig, other_sig)
                if score >= d.threshold and (match is None or score > match[1]):
                    match = (other_id, score)
        if match:
            out[ids[i]] = (False, "near_duplicate", f"estimated Jaccard {match[1]:.2f}", match[0], sig, own_keys)
            continue
        out[ids[i]] = (True, "", "", None, sig, own_keys)
        for key in map(int, own_keys):
            index.setdefault(key, []).append((ids[i], sig))
    rows = []
    for id_ in ids:
        passed, reason, detail, duplicate_of, sig, own_keys = out[id_]
        rows.append({"id": id_, "passed": passed, "reason": reason, "detail": detail, "duplicate_of": duplicate_of,
                     "minhash": None if sig is None else sig.tolist(),
                     "bands": None if own_keys is None else own_keys.tolist()})
    return pl.DataFrame(rows, schema={"id": pl.String, "passed": pl.Boolean, "reason": pl.String,
                                      "detail": pl.String, "duplicate_of": pl.String,
                                      "minhash": pl.List(pl.UInt32), "bands": pl.List(pl.UInt64)})


STAGE = Stage("gate", "gates", ("id", "instruction", "response"), pending, run)
