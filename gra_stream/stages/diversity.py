"""Diversity: the paper's embedding filter. Kept samples are walked in descending committee mean; one is
kept only if its highest cosine similarity to every sample kept before it (this run and earlier ones)
and to the seeds is below `diversity.threshold`. A refined seed is not compared with its own seed.
By default (`index = "ivf"`) the search is exact until a reference table is large, then searches cells
(gra_stream/vector_index.py), since exact search costs hours at millions; `index = "exact"` is the paper's
search at every size. Within a batch (`diversity.walk_batch` candidates, a key of the results for that
reason, not `cpu_batch_size`) the walk is always exact. After a config change, a candidate's MiniLM
embedding is read back from the table kept aside where it has one (gra_stream/carry.py, `reusable`).

Also `embed_seeds`, which embeds the seeds once (only when the filter compares with seeds).
"""
import numpy as np
import polars as pl

from gra_stream.blas import one_blas_thread
from gra_stream.embeddings import DIM, MINILM, get_embedder
from gra_stream.stages.base import Context, Stage
from gra_stream.vector_index import CellIndex, exhaustive_matches
from gra_stream.waves import Scope


def seeds_pending(config, scope: Scope = Scope()) -> str:
    # Every seed, in the first wave: a sample is compared with the whole corpus, whatever its wave.
    on = config.diversity.enabled and config.diversity.compare_seeds
    return (f"SELECT s.id, s.instruction FROM seeds s ANTI JOIN seed_embeddings e ON e.id = s.id "
            f"WHERE {str(on).lower()} ORDER BY s.id")


EMBED_BATCH = 512  # seeds per batch of the embedding with MiniLM, at most


def embed_batch(config) -> int:
    """Rows per batch of the seeds' embedding: `cpu_batch_size`, but at most EMBED_BATCH with MiniLM, which
    takes seconds per hundred seeds: in batches of thousands, one worker would embed a corpus of a few
    thousand seeds while the others wait, and the progress display would stand still for minutes."""
    return min(config.cpu_batch_size, EMBED_BATCH) if config.diversity.model == MINILM else config.cpu_batch_size


def embed_seeds(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    vectors = get_embedder(ctx.config.diversity.model).embed(batch["instruction"].to_list())
    return pl.DataFrame({"id": batch["id"], "embedding": list(vectors)})


def pending(config, scope: Scope = Scope()) -> str:
    return f"""
    WITH kept AS (
        SELECT id, mean AS score FROM verdicts WHERE decision = 'accept'
        UNION ALL
        SELECT v.id, v.mean FROM verdicts v JOIN adjudications a ON a.id = v.id
        WHERE v.decision = 'adjudicate' AND a.status = 'ok' AND a.keep)
    SELECT g.id, g.instruction, g.seed_id, g.kind, k.score, {scope.wave('g.seed_id')} AS wave
    FROM kept k JOIN generations g ON g.id = k.id ANTI JOIN diversity d ON d.id = k.id
    WHERE {scope.seeds('g.seed_id')}
    ORDER BY wave, k.score DESC, g.id
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


@one_blas_thread()  # the same products, the same bits, in every process (gra_stream/blas.py)
def setup(ctx: Context) -> None:
    """The seeds' cells and sidecars, made once here before any batch: with `--executor processes` every
    worker would otherwise make the same ones at once on its first batch (training cells and sorting every
    seed into them), each doing the same work, while this process waits. Seeds added since the last run may call for more cells: they are trained again here
    too. The seeds do not change while the stage runs, so they get one sidecar for all their segments
    (`CellIndex.merge`). On one BLAS thread like the rest of the stage: a thread count that followed what
    else ran at the time would make the cells depend on it."""
    d = ctx.config.diversity
    if d.enabled and d.compare_seeds and d.index == "ivf":
        index = CellIndex(ctx.store, d.model, d.cells, d.probes)
        index.grow("seed_embeddings")  # trained, or trained again for seeds added since
        index.merge("seed_embeddings")


@one_blas_thread()
def prepare(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """What does not depend on earlier batches (runs ahead in worker processes under `--executor
    processes`): the embeddings, and each row's best match among the seeds, which are all embedded
    before this stage starts."""
    d = ctx.config.diversity
    if not d.enabled:
        return batch.with_columns(pl.lit(None, dtype=pl.List(pl.Float32)).alias("embedding"))
    vectors = _embeddings(batch, ctx)
    batch = batch.with_columns(pl.Series("embedding", vectors).cast(pl.List(pl.Float32)))
    if not d.compare_seeds:
        return batch
    own = [seed if kind == "refine" else None for seed, kind in zip(batch["seed_id"], batch["kind"])]
    if d.index == "ivf":  # a refined seed is not compared with its own seed
        best, best_ids = CellIndex(ctx.store, d.model, d.cells, d.probes).best_matches("seed_embeddings", vectors, own)
    else:
        best, best_ids = _best_matches(ctx, "SELECT id, embedding FROM seed_embeddings", vectors, own)
    return batch.with_columns(pl.Series("seed_similarity", best, dtype=pl.Float32),
                              pl.Series("seed_match", best_ids, dtype=pl.String))


def _embeddings(batch: pl.DataFrame, ctx: Context) -> np.ndarray:
    """The batch's embeddings: those a kept version's filter made of the same generations (gra_stream/
    carry.py, `reusable`) read back, the others embedded."""
    vectors = np.empty((batch.height, DIM), dtype=np.float32)
    todo = np.ones(batch.height, dtype=bool)
    donor = ctx.reusable.get("diversity")
    if donor:
        known = _kept_vectors(ctx, donor, batch["id"].to_list())
        if known.height:
            found = batch.select(pl.int_range(pl.len()).alias("row"), "id").join(known, on="id")
            rows = found["row"].to_numpy()
            vectors[rows] = found["embedding"].list.to_array(DIM).to_numpy()
            todo[rows] = False
    if todo.any():
        texts = batch["instruction"].filter(pl.Series(todo)).to_list()
        vectors[todo] = get_embedder(ctx.config.diversity.model).embed(texts)
    return vectors


def _kept_vectors(ctx: Context, donor: str, ids: list[str]) -> pl.DataFrame:
    """(id, embedding) of the rows of `ids` that the kept version `donor`'s diversity table has. Its
    segments' ids are read first, then the vectors of only the segments holding some of `ids`: a batch's
    candidates sit in one or two of them (a config change moves the walk's order little), where reading
    every segment's vectors would read the whole table for each batch."""
    params = {"ids": ids, "glob": str(ctx.store.kept_dir(donor) / "diversity" / "*.parquet")}
    files = [f for (f,) in ctx.con.sql(
        "SELECT DISTINCT d.filename FROM read_parquet($glob, filename = true, union_by_name = true) d "
        "SEMI JOIN (SELECT unnest($ids) AS id) b ON b.id = d.id", params=params).fetchall()]
    if not files:
        return pl.DataFrame(schema={"id": pl.String, "embedding": pl.List(pl.Float32)})
    return pl.from_arrow(ctx.con.sql(
        "SELECT d.id, d.embedding FROM read_parquet($files, union_by_name = true) d "
        "SEMI JOIN (SELECT unnest($ids) AS id) b ON b.id = d.id WHERE d.embedding IS NOT NULL",
        params={"ids": ids, "files": sorted(files)}).to_arrow_table())


WITHIN_BLOCK = 512  # rows of the batch whose similarities to the rows after them are computed at once


def later_similarities(vectors: np.ndarray) -> np.ndarray:
    """(n, n) float32 whose row i holds, from column i + 1 on, the cosine similarity of row i to each
    later row (the rest of the row is not filled): what the walk reads, half the products of the whole
    matrix, computed in the runner, where the walk runs."""
    n = len(vectors)
    out = np.empty((n, n), dtype=np.float32)
    for a in range(0, n, WITHIN_BLOCK):
        b = min(a + WITHIN_BLOCK, n)
        out[a:b, a:] = vectors[a:b] @ vectors[a:].T
    return out


@one_blas_thread()
def finish(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    """The walk, in descending committee mean, against everything kept before (and the seeds)."""
    d = ctx.config.diversity
    if not d.enabled:
        return pl.DataFrame({"id": batch["id"], "kept": [True] * batch.height, "similarity": [None] * batch.height,
                             "duplicate_of": [None] * batch.height, "embedding": [None] * batch.height},
                            schema_overrides={"similarity": pl.Float64, "duplicate_of": pl.String,
                                              "embedding": pl.List(pl.Float32)})
    vectors = batch["embedding"].list.to_array(DIM).to_numpy().astype(np.float32)
    if d.index == "ivf":  # the kept samples' cells, trained again as the table grows, here in order
        index = CellIndex(ctx.store, d.model, d.cells, d.probes)
        index.grow("diversity")
        best, best_ids = index.best_matches("diversity", vectors, [None] * batch.height)
    else:
        best, best_ids = _best_matches(ctx, "SELECT id, embedding FROM diversity WHERE kept", vectors,
                                       [None] * batch.height)
    if d.compare_seeds:
        seed_best, seed_ids = batch["seed_similarity"].to_numpy(), batch["seed_match"].to_list()
        for i in np.flatnonzero(seed_best > best):
            best[i], best_ids[i] = seed_best[i], seed_ids[i]
    # Within the batch: row i's best match among the rows kept before it in the walk. Each kept row raises
    # the running best of every later row (n^2 / 2, no Python loop per pair); the first kept row with the
    # highest similarity wins, as in a walk that compares one by one.
    within = later_similarities(vectors)
    best_within = np.full(batch.height, -np.inf, dtype=np.float32)
    best_within_row = np.full(batch.height, -1)
    ids = batch["id"].to_list()
    kept, similarity, duplicate_of = [], [], []
    for i in range(len(ids)):  # already in descending committee mean
        score, match = float(best[i]), best_ids[i]
        if best_within[i] > score:
            score, match = float(best_within[i]), ids[best_within_row[i]]
        keep = score < d.threshold
        kept.append(keep)
        similarity.append(score if match else None)
        duplicate_of.append(None if keep else match)
        if keep:
            later, running = within[i, i + 1:], best_within[i + 1:]
            raised = later > running
            running[raised] = later[raised]
            best_within_row[i + 1:][raised] = i
    return pl.DataFrame({"id": ids, "kept": kept, "similarity": similarity, "duplicate_of": duplicate_of,
                         "embedding": batch["embedding"]},
                        schema={"id": pl.String, "kept": pl.Boolean, "similarity": pl.Float64,
                                "duplicate_of": pl.String, "embedding": pl.List(pl.Float32)})


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return finish(prepare(batch, ctx), ctx)


def walk_batch(config) -> int:
    return config.diversity.walk_batch


# It reads only the seeds, so its pass starts with its wave's first, beside the LLM stages; the filter's
# pass waits for it.
SEEDS_STAGE = Stage("embed", "seed_embeddings", ("id", "instruction"), seeds_pending, embed_seeds,
                    batch_size=embed_batch, after=())

STAGE = Stage("diversity", "diversity", ("id", "instruction", "seed_id", "kind", "score"), pending, run,
              ordered=True, prepare=prepare, finish=finish, setup=setup, batch_size=walk_batch,
              after=("adjudicate", "embed"))
