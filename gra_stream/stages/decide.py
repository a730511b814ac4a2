"""Decide: apply the committee rule to each generation's reviews (no model call)."""
from math import sqrt

import polars as pl

from gra_stream.committee import committee_rule, committee_stats, reviewer_mean
from gra_stream.stages import Context, Stage


def pending(config, rounds_open: int = 1) -> str:
    checks = "reasonable AND complete AND clear"
    return f"""
    SELECT generation_id AS id,
           list([correctness, clarity, completeness, relevance, coherence, ethics] ORDER BY reviewer_index)
             FILTER (WHERE status = 'ok') AS scores,
           bool_or(NOT ({checks})) FILTER (WHERE status = 'ok') AS check_failed
    FROM reviews ANTI JOIN verdicts v ON v.id = reviews.generation_id
    GROUP BY generation_id ORDER BY generation_id
    """


def decide_one(scores: list[list[int]] | None, check_failed: bool | None, config) -> dict:
    c = config.committee
    means = [reviewer_mean(s) for s in scores or []]
    if check_failed:
        decision, reason = "reject", "instruction_check_failed"
        mu, variance = committee_stats(means)
    elif len(means) < c.min_reviews:
        decision, reason, mu, variance = "reject", "insufficient_reviews", None, None
    else:
        decision, reason, mu, variance = committee_rule(means, tau=c.tau, delta=c.delta)
    return {"n_reviews": len(means), "mean": None if mu is None else float(mu),
            "std": None if variance is None else sqrt(variance), "decision": decision, "reason": reason}


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    rows = [{"id": r["id"], **decide_one(r["scores"], r["check_failed"], ctx.config)} for r in batch.iter_rows(named=True)]
    return pl.DataFrame(rows, infer_schema_length=None)


STAGE = Stage("decide", "verdicts", ("id", "scores", "check_failed"), pending, run)
