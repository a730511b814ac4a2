"""Finalize: gather the kept samples (accepted by the committee or kept by the adjudicator, diverse
enough, annotated) with their provenance into `samples`."""
import polars as pl

from gra_stream.stages.base import Context, Stage
from gra_stream.waves import Scope


def pending(config, scope: Scope = Scope()) -> str:
    return f"""
    SELECT g.id, g.seed_id, g.anchor_id, g.round, g.kind, g.instruction, g.response, g.domain,
           coalesce(a.keywords, g.keywords) AS keywords, coalesce(a.summary, left(g.instruction, 150)) AS summary,
           v.mean AS score, CASE WHEN v.decision = 'accept' THEN 'committee' ELSE 'adjudicator' END AS decided_by,
           g.generator, g.reviewers, g.adjudicator, a.model AS annotator
    FROM diversity d JOIN generations g ON g.id = d.id JOIN verdicts v ON v.id = d.id
    JOIN annotations a ON a.id = d.id
    ANTI JOIN samples s ON s.id = d.id
    WHERE d.kept AND {scope.seeds('g.seed_id')} ORDER BY g.id
    """


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return batch


STAGE = Stage("finalize", "samples", ("id", "instruction", "response", "score", "decided_by"), pending, run)
