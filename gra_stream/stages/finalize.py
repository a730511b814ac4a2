"""Finalize: gather the kept samples (accepted by the committee, or kept by the adjudicator) with their
provenance into `samples`."""
import polars as pl

from gra_stream.stages import Context, Stage


def pending(config) -> str:
    return """
    WITH kept AS (
        SELECT id, mean AS score, 'committee' AS decided_by FROM verdicts WHERE decision = 'accept'
        UNION ALL
        SELECT v.id, v.mean, 'adjudicator' FROM verdicts v JOIN adjudications a ON a.id = v.id
        WHERE v.decision = 'adjudicate' AND a.status = 'ok' AND a.keep)
    SELECT g.id, g.seed_id, g.instruction, g.response, g.domain, g.keywords, k.score, k.decided_by,
           g.generator, g.reviewers, g.adjudicator
    FROM kept k JOIN generations g ON g.id = k.id ANTI JOIN samples s ON s.id = k.id ORDER BY g.id
    """


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return batch


STAGE = Stage("finalize", "samples", ("id", "instruction", "response", "score", "decided_by"), pending, run)
