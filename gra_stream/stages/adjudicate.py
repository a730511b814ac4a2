"""Adjudicate: where reviewers disagree (mean >= tau, std > delta), a model not otherwise used in the
task reads the sample and all reviews, re-scores it, and the sample is kept only if its mean >= tau."""
from fractions import Fraction

import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import exact
from gra_stream.ids import seed_ints
from gra_stream.llm import Calls, ask
from gra_stream.prompts import clip_column, load_prompt, render_column
from gra_stream.schemas import SCORE_DIMS
from gra_stream.stages.base import Context, Stage, columns_frame
from gra_stream.waves import Scope


def pending(config, scope: Scope = Scope()) -> str:
    return f"""
    SELECT g.id, g.instruction, g.response, g.adjudicator,
           list(printf('Reviewer %d: scores %d/%d/%d/%d/%d/%d (mean %.2f). Strengths: %s. Weaknesses: %s.',
                       r.reviewer_index + 1, r.correctness, r.clarity, r.completeness, r.relevance, r.coherence,
                       r.ethics, r.mean, r.strengths, r.weaknesses) ORDER BY r.reviewer_index) AS reviews
    FROM verdicts v JOIN generations g ON g.id = v.id
    JOIN reviews r ON r.generation_id = v.id AND r.status = 'ok'
    ANTI JOIN adjudications a ON a.id = v.id
    WHERE v.decision = 'adjudicate' AND {scope.seeds('g.seed_id')}
    GROUP BY g.id, g.instruction, g.response, g.adjudicator ORDER BY g.id
    """


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config = ctx.config
    reviews = pl.col("reviews").list.eval(clip_column(pl.element(), 600)).list.join("\n")
    users = batch.select(render_column(load_prompt("adjudicate", config.prompts_dir), {
        "instruction": clip_column(pl.col("instruction"), 2000), "response": clip_column(pl.col("response"), 4000),
        "reviews": reviews})).to_series().to_list()
    ids, models = batch["id"].to_list(), batch["adjudicator"].to_list()
    calls = Calls(models, users, seed_ints(ids, before=(config.run_seed, "adjudicate")),
                  load_prompt("system", config.prompts_dir), reply_schemas.ADJUDICATE, reply_schemas.MAX_TOKENS["adjudicate"])
    replies = ask(ctx.pool, calls, max_reasks=config.max_reasks)
    totals = [None if d is None else sum(d[k] for k in SCORE_DIMS) for d in replies.data]
    tau = exact(config.committee.tau)
    return columns_frame({
        "id": ids, **{d: replies.field(d) for d in SCORE_DIMS},
        "mean": [None if t is None else t / len(SCORE_DIMS) for t in totals],
        "keep": [None if t is None else Fraction(t, len(SCORE_DIMS)) >= tau for t in totals],
        "comment": replies.field("comment"), **replies.call_columns(models)}, "adjudications")


STAGE = Stage("adjudicate", "adjudications", ("id", "instruction", "response", "adjudicator", "reviews"),
              pending, run, llm=True)
