"""Diversity: the paper's embedding filter. Kept samples are walked in descending committee mean; one is
kept only if its highest cosine similarity to every sample kept before it (this run and earlier ones)
and to the seeds is below `diversity.threshold`. A refined seed is not compared with its own seed.
The search is exact by default; `index = "ivf"` searches cells instead (gra_stream/vector_index.py),
for corpora where exact search costs hours. Within a batch the walk is always exact.

Also `embed_seeds`, which embeds the seeds once (only when the filter compares with seeds).
"""
import numpy as np
import polars as pl

from gra_stream.embeddings import DIM, get_embedder
from gra_stream.stages import Context, Stage
from gra_stream.vector_index import CellIndex, exhaustive_matches


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


REFERENCE_CHUNK = 4096  # reference rows compared at once: bounds memory whatever the table sizes


def _best_matches(ctx: Context, sql: str, vectors: np.ndarray, exclude: list[str | None]) -> tuple[np.ndarray, list]:
    """For each batch vector, the highest cosine similarity to the rows of `sql` (id, embedding) and the
    id that has it, reading the reference in chunks; `exclude[i]` is an id row i is not compared with."""
    best = np.full(len(vectors), -1.0, dtype=np.float32)
    best_ids: list = [None] * len(vectors)
    for chunk in ctx.con.sql(sql).to_arrow_reader(REFERENCE_CHUNK):
        frame = pl.from_arrow(chunk)
        if frame.is_empty():
            continue
        references = frame["embedding"].list.to_array(DIM).to_numpy().astype(np.float32)
        top, top_ids = exhaustive_matches(vectors, frame["id"].to_list(), references, exclude)
        for i in np.flatnonzero(top > best):  # an earlier chunk keeps a tie
            best[i], best_ids[i] = top[i], top_ids[i]
    return best, best_ids


def setup(ctx: Context) -> None:
    """The seeds' cells, trained once here before any batch: with `--executor processes` every worker
    would otherwise train the same cells at once on its first batch (1.5 s of work each at 100k seeds,
    done twice on two cores, while this process, which has the whole machine's BLAS threads, waits)."""
    d = ctx.config.diversity
    if d.enabled and d.compare_seeds and d.index == "ivf":
        CellIndex(ctx.store, d.model, d.cells, d.probes).centroids("seed_embeddings")


def prepare(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """What does not depend on earlier batches (runs ahead in worker processes under `--executor
    processes`): the embeddings, and each row's best match among the seeds, which are all embedded
    before this stage starts."""
    d = ctx.config.diversity
    if not d.enabled:
        return batch.with_columns(pl.lit(None, dtype=pl.List(pl.Float32)).alias("embedding"))
    vectors = get_embedder(d.model).embed(batch["instruction"].to_list())
    rows, sims = earlier_candidates(vectors, WITHIN_CANDIDATES)
    batch = batch.with_columns(pl.Series("embedding", vectors).cast(pl.List(pl.Float32)),
                               pl.Series("within_rows", rows).cast(pl.List(pl.Int32)),
                               pl.Series("within_sims", sims).cast(pl.List(pl.Float32)))
    if not d.compare_seeds:
        return batch
    own = [seed if kind == "refine" else None for seed, kind in zip(batch["seed_id"], batch["kind"])]
    if d.index == "ivf":  # a refined seed is not compared with its own seed
        best, best_ids = CellIndex(ctx.store, d.model, d.cells, d.probes).best_matches("seed_embeddings", vectors, own)
    else:
        best, best_ids = _best_matches(ctx, "SELECT id, embedding FROM seed_embeddings", vectors, own)
    return batch.with_columns(pl.Series("seed_similarity", best, dtype=pl.Float32),
                              pl.Series("seed_match", best_ids, dtype=pl.String))


WITHIN_CANDIDATES = 8  # per row, its most similar earlier rows of the batch that `prepare` finds for the walk
WITHIN_BLOCK = 512     # rows whose similarities to the earlier rows are computed at once


def earlier_candidates(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, similarities), each (n, k): for row i, its k most similar rows j < i, most similar first, a
    tie to the lower j (padded with -1 and -inf). The walk in `finish` needs, per row, the most similar
    row kept before it; almost always that is one of these, which the workers find ahead of the walk.
    Only the similarities below the diagonal are computed: half the products of the whole matrix."""
    n = len(vectors)
    rows = np.full((n, k), -1, dtype=np.int32)
    sims = np.full((n, k), -np.inf, dtype=np.float32)
    for a in range(1, n, WITHIN_BLOCK):  # row 0 has no earlier row
        b = min(a + WITHIN_BLOCK, n)
        block = vectors[a:b] @ vectors[:b - 1].T
        earlier = np.arange(b - 1)[None, :] < np.arange(a, b)[:, None]
        block[~earlier] = -np.inf
        kth = -np.partition(-block, min(k, b - 1) - 1, axis=1)[:, min(k, b - 1) - 1]
        who, j = np.nonzero((block >= kth[:, None]) & earlier)  # at least the top k, ties included
        value = block[who, j]
        order = np.lexsort((j, -value, who))  # per row: most similar first, then the lower j
        who, j, value = who[order], j[order], value[order]
        rank = np.arange(len(who)) - np.searchsorted(who, who)
        top = rank < k
        rows[a + who[top], rank[top]] = j[top]
        sims[a + who[top], rank[top]] = value[top]
    return rows, sims


def _best_kept_earlier(i: int, candidates: list[int], similarities: list[float], kept_rows: np.ndarray,
                       vectors: np.ndarray) -> tuple[float, int]:
    """(similarity, row) of the most similar row before row i that the walk kept (a tie to the first
    such row), or (-inf, -1): the first kept of i's candidates, else a search of every kept row before i."""
    for j, similarity in zip(candidates, similarities):
        if j < 0:
            return -np.inf, -1  # every earlier row was a candidate, and none was kept
        if kept_rows[j]:
            return similarity, j
    earlier = np.flatnonzero(kept_rows[:i])  # all k candidates dropped: rare
    if not len(earlier):
        return -np.inf, -1
    found = vectors[earlier] @ vectors[i]
    best = int(found.argmax())
    return float(found[best]), int(earlier[best])


def finish(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """The walk, in descending committee mean, against everything kept before (and the seeds)."""
    d = ctx.config.diversity
    if not d.enabled:
        return pl.DataFrame({"id": batch["id"], "kept": [True] * batch.height, "similarity": [None] * batch.height,
                             "duplicate_of": [None] * batch.height, "embedding": [None] * batch.height},
                            schema_overrides={"similarity": pl.Float64, "duplicate_of": pl.String,
                                              "embedding": pl.List(pl.Float32)})
    vectors = batch["embedding"].list.to_array(DIM).to_numpy().astype(np.float32)
    if d.index == "ivf":
        best, best_ids = CellIndex(ctx.store, d.model, d.cells, d.probes).best_matches(
            "diversity", vectors, [None] * batch.height)
    else:
        best, best_ids = _best_matches(ctx, "SELECT id, embedding FROM diversity WHERE kept", vectors,
                                       [None] * batch.height)
    if d.compare_seeds:
        seed_best, seed_ids = batch["seed_similarity"].to_numpy(), batch["seed_match"].to_list()
        for i in np.flatnonzero(seed_best > best):
            best[i], best_ids[i] = seed_best[i], seed_ids[i]
    # Within the batch: row i's best match among the rows kept before it in the walk: the first kept one
    # of its most similar earlier rows (found in `prepare`), else, when every one of those was dropped,
    # a search of every earlier kept row.
    within_rows = batch["within_rows"].list.to_array(WITHIN_CANDIDATES).to_numpy().tolist()
    within_sims = batch["within_sims"].list.to_array(WITHIN_CANDIDATES).to_numpy().tolist()
    ids = batch["id"].to_list()
    kept_rows = np.zeros(len(ids), dtype=bool)
    kept, similarity, duplicate_of = [], [], []
    for i in range(len(ids)):  # already in descending committee mean
        score, match = float(best[i]), best_ids[i]
        within, within_row = _best_kept_earlier(i, within_rows[i], within_sims[i], kept_rows, vectors)
        if within > score:
            score, match = within, ids[within_row]
        keep = score < d.threshold
        kept.append(keep)
        similarity.append(score if match else None)
        duplicate_of.append(None if keep else match)
        kept_rows[i] = keep
    return pl.DataFrame({"id": ids, "kept": kept, "similarity": similarity, "duplicate_of": duplicate_of,
                         "embedding": batch["embedding"]},
                        schema={"id": pl.String, "kept": pl.Boolean, "similarity": pl.Float64,
                                "duplicate_of": pl.String, "embedding": pl.List(pl.Float32)})


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return finish(prepare(batch, ctx), ctx)


SEEDS_STAGE = Stage("embed", "seed_embeddings", ("id", "instruction"), seeds_pending, embed_seeds)

STAGE = Stage("diversity", "diversity", ("id", "instruction", "seed_id", "kind", "score"), pending, run,
              ordered=True, prepare=prepare, finish=finish, setup=setup)
