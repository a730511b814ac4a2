"""Diversity: the paper's embedding filter. Kept samples are walked in descending committee mean; one is
kept only if its highest cosine similarity to every sample kept before it (this run and earlier ones)
and to the seeds is below `diversity.threshold`. A refined seed is not compared with its own seed.

Also `embed_seeds`, which embeds the seeds once (only when the filter compares with seeds).
"""
import numpy as np
import polars as pl

from gra_stream.embeddings import DIM, get_embedder
from gra_stream.stages import Context, Stage


def seeds_pending(config, rounds_open: int = 1) -> str:
    on = config.diversity.enabled and config.diversity.compare_seeds
    return (f"SELECT s.id, s.instruction FROM seeds s ANTI JOIN seed_embeddings e ON e.id = s.id "
            f"WHERE {str(on).lower()} ORDER BY s.id")


def embed_seeds(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    vectors = get_embedder(ctx.config.diversity.model).embed(batch["instruction"].to_list())
    return pl.DataFrame({"id": batch["id"], "embedding": list(vectors)})


def pending(config, rounds_open: int = 1) -> str:
    return """
    WITH kept AS (
        SELECT id, mean AS score FROM verdicts WHERE decision = 'accept'
        UNION ALL
        SELECT v.id, v.mean FROM verdicts v JOIN adjudications a ON a.id = v.id
        WHERE v.decision = 'adjudicate' AND a.status = 'ok' AND a.keep)
    SELECT g.id, g.instruction, g.seed_id, g.kind, k.score
    FROM kept k JOIN generations g ON g.id = k.id ANTI JOIN diversity d ON d.id = k.id
    ORDER BY k.score DESC, g.id
    """


def _matrix(ctx: Context, sql: str) -> tuple[list[str], np.ndarray]:
    frame = ctx.con.sql(sql).pl()
    if frame.is_empty():
        return [], np.zeros((0, DIM), dtype=np.float32)
    return frame["id"].to_list(), frame["embedding"].list.to_array(DIM).to_numpy().astype(np.float32)


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    d = ctx.config.diversity
    if not d.enabled:
        return pl.DataFrame({"id": batch["id"], "kept": [True] * batch.height, "similarity": [None] * batch.height,
                             "duplicate_of": [None] * batch.height, "embedding": [None] * batch.height},
                            schema_overrides={"similarity": pl.Float64, "duplicate_of": pl.String,
                                              "embedding": pl.List(pl.Float32)})
    vectors = get_embedder(d.model).embed(batch["instruction"].to_list())
    kept_ids, earlier = _matrix(ctx, "SELECT id, embedding FROM diversity WHERE kept")
    kept = np.zeros((len(earlier) + batch.height, DIM), dtype=np.float32)  # earlier rows, then this batch's
    kept[: len(earlier)] = earlier
    seed_ids, seeds = (_matrix(ctx, "SELECT id, embedding FROM seed_embeddings ORDER BY id") if d.compare_seeds
                       else ([], np.zeros((0, DIM), dtype=np.float32)))
    seed_sims = vectors @ seeds.T if len(seed_ids) else np.zeros((len(vectors), 0), dtype=np.float32)
    rows = []
    for i, row in enumerate(batch.iter_rows(named=True)):  # already in descending committee mean
        best, best_id = -1.0, None
        if len(seed_ids):
            sims = seed_sims[i].copy()
            if row["kind"] == "refine":
                sims[[j for j, s in enumerate(seed_ids) if s == row["seed_id"]]] = -1.0
            j = int(np.argmax(sims))
            best, best_id = float(sims[j]), seed_ids[j]
        if len(kept_ids):
            sims = kept[: len(kept_ids)] @ vectors[i]
            j = int(np.argmax(sims))
            if sims[j] > best:
                best, best_id = float(sims[j]), kept_ids[j]
        keep = best < d.threshold
        rows.append({"id": row["id"], "kept": keep, "similarity": best if best_id else None,
                     "duplicate_of": None if keep else best_id, "embedding": vectors[i].tolist()})
        if keep:
            kept[len(kept_ids)] = vectors[i]
            kept_ids.append(row["id"])
    return pl.DataFrame(rows, schema={"id": pl.String, "kept": pl.Boolean, "similarity": pl.Float64,
                                      "duplicate_of": pl.String, "embedding": pl.List(pl.Float32)})


SEEDS_STAGE = Stage("embed", "seed_embeddings", ("id", "instruction"), seeds_pending, embed_seeds)
STAGE = Stage("diversity", "diversity", ("id", "instruction", "seed_id", "kind", "score"), pending, run)
