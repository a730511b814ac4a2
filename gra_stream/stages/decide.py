"""Decide: apply the committee rule to each generation's reviews (no model call).

The rule needs only the mean and the population variance of the reviewers' means, so SQL hands over
per generation the count of parsed reviews, the sum of their score totals and the sum of the totals
squared: fixed-size aggregates that DuckDB can spill, where lists of every review's scores for a
million generations could not be grouped under the runner's memory limit. The arithmetic stays exact."""
from math import sqrt

import polars as pl

from gra_stream.committee import committee_stats, reviewer_mean, rule_from_stats, stats_from_sums
from gra_stream.schemas import CHECKS, SCORE_DIMS
from gra_stream.stages.base import Context, Stage, table_frame
from gra_stream.stages.review import OUT_OF_REACH, SKIPPED
from gra_stream.waves import Scope


def pending(config, scope: Scope = Scope()) -> str:
    return f"""
    SELECT generation_id AS id,
           count(*) FILTER (WHERE status = 'ok') AS reviews_ok,
           CAST(sum(total) FILTER (WHERE status = 'ok') AS BIGINT) AS total,
           CAST(sum(total * total) FILTER (WHERE status = 'ok') AS BIGINT) AS squares,
           bool_or(NOT ({" AND ".join(CHECKS)})) FILTER (WHERE status = 'ok') AS check_failed,
           bool_or(status = 'skipped' AND error = '{SKIPPED + OUT_OF_REACH}') AS out_of_reach
    FROM (SELECT *, {" + ".join(SCORE_DIMS)} AS total FROM reviews) reviews
    ANTI JOIN verdicts v ON v.id = reviews.generation_id
    {"" if scope.below is None else
     f"WHERE generation_id IN (SELECT id FROM generations WHERE {scope.seeds('seed_id')})"}
    GROUP BY generation_id ORDER BY generation_id
    """


def decide_one(scores: list[list[int]] | None, check_failed: bool | None, config, out_of_reach: bool = False) -> dict:
    """The verdict from each parsed review's scores (what the review stage and the benchmarks hold)."""
    means = [reviewer_mean(s) for s in scores or []]
    return _verdict(len(means), committee_stats(means) if means else None, check_failed, out_of_reach, config)


def decide_sums(reviews_ok: int, total: int | None, squares: int | None, check_failed: bool | None,
                out_of_reach: bool | None, config) -> dict:
    """The same verdict from the sums the pending query aggregates."""
    stats = stats_from_sums(reviews_ok, total, squares, len(SCORE_DIMS)) if reviews_ok else None
    return _verdict(reviews_ok, stats, check_failed, out_of_reach, config)


def _verdict(n: int, stats, check_failed: bool | None, out_of_reach: bool | None, config) -> dict:
    """`out_of_reach`: the short-circuit skipped reviewers since tau was out of reach; the rule then says
    low_score on the reviews asked, as it does on every review, even where they are fewer than min_reviews."""
    c = config.committee
    if check_failed:
        decision, reason = "reject", "instruction_check_failed"
        mu, variance = stats
    elif n < c.min_reviews and not out_of_reach:
        decision, reason, mu, variance = "reject", "insufficient_reviews", None, None
    else:
        decision, reason, mu, variance = rule_from_stats(*stats, tau=c.tau, delta=c.delta)
    return {"n_reviews": n, "mean": None if mu is None else float(mu),
            "std": None if variance is None else sqrt(variance), "decision": decision, "reason": reason}


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    rows = [{"id": r["id"], **decide_sums(r["reviews_ok"], r["total"], r["squares"], r["check_failed"],
                                          r["out_of_reach"], ctx.config)}
            for r in batch.iter_rows(named=True)]
    return table_frame(rows, "verdicts")


STAGE = Stage("decide", "verdicts", ("id", "reviews_ok", "total", "squares", "check_failed", "out_of_reach"),
              pending, run)
