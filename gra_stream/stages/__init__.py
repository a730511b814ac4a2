"""The pipeline's stages, in order. A stage is a pure function over one batch:

    run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame

Its pending input is a SQL query over the run's tables (rows of the input with no output yet, ordered by
id), so resuming, re-running and adding seeds are the same code path. Reading, batching, committing,
progress and accounting live once, in the runner; where batches run (this process, or a Ray cluster)
is the executor's business (gra_stream/executors/).

An `ordered` stage reads what its own earlier batches committed (near-duplicates against everything kept
so far), so its batches run one after another, in id order, under every executor. Such a stage may split
its work: `prepare` (per row, no lookups: filters, signatures, embeddings) can run ahead in other
processes, and `finish` (the part that reads earlier batches) runs in order; `run` is always
`finish(prepare(batch))`. A stage may also have a `setup`, run once in the runner before its first batch,
for work every batch needs and no batch should repeat (the diversity filter trains the seeds' cells there).
"""
from __future__ import annotations

from gra_stream.stages.base import Context, Stage, columns_frame, table_frame

__all__ = ["Context", "Stage", "all_stages", "columns_frame", "table_frame"]


def all_stages() -> list[Stage]:
    from gra_stream.stages import (adjudicate, annotate, decide, diversity, finalize, gate, generate, profile,
                                   review)

    return [profile.STAGE, diversity.SEEDS_STAGE, generate.STAGE, gate.STAGE, review.STAGE, decide.STAGE,
            adjudicate.STAGE, diversity.STAGE, annotate.STAGE, finalize.STAGE]
