"""Adjudicate: where reviewers disagree (mean >= tau, std > delta), a model not otherwise used in the
task reads the sample and all reviews, re-scores it, and the sample is kept only if its mean >= tau."""
from fractions import Fraction

import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import exact
from gra_stream.ids import seed_int
from gra_stream.llm import Call, ask, clip, load_prompt, render
from gra_stream.schemas import SCORE_DIMS
from gra_stream.stages import Context, Stage, table_frame


def pending(config, rounds_open: int = 1) -> str:
    return """
    SELECT g.id, g.instruction, g.response, g.adjudicator,
           list(printf('Reviewer %d: scores %d/%d/%d/%d/%d/%d (mean %.2f). Strengths: %s. Weaknesses: %s.',
                       r.reviewer_index + 1, r.correctness, r.clarity, r.completeness, r.relevance, r.coherence,
                       r.ethics, r.mean, r.strengths, r.weaknesses) ORDER BY r.reviewer_index) AS reviews
    FROM verdicts v JOIN generations g ON g.id = v.id
    JOIN reviews r ON r.generation_id = v.id AND r.status = 'ok'
    ANTI JOIN adjudications a ON a.id = v.id
    WHERE v.decision = 'adjudicate'
    GROUP BY g.id, g.instruction, g.response, g.adjudicator ORDER BY g.id
    """


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config, system, template = ctx.config, load_prompt("system", ctx.config.prompts_dir), load_prompt("adjudicate", ctx.config.prompts_dir)
    calls = []
    for row in batch.iter_rows(named=True):
        user = render(template, {"instruction": clip(row["instruction"], 2000), "response": clip(row["response"], 4000),
                                 "reviews": "\n".join(clip(r, 600) for r in row["reviews"])})
        calls.append(Call(row["adjudicator"], system, user, reply_schemas.ADJUDICATE,
                          reply_schemas.MAX_TOKENS["adjudicate"], seed_int(config.run_seed, "adjudicate", row["id"])))
    rows = []
    for row, call, reply in zip(batch.iter_rows(named=True), calls, ask(ctx.pool, calls, max_reasks=config.max_reasks)):
        data = reply.data or {}
        scores = [data.get(d) for d in SCORE_DIMS]
        mean = Fraction(sum(scores), len(scores)) if reply.ok else None
        rows.append({"id": row["id"], **dict(zip(SCORE_DIMS, scores)), "mean": None if mean is None else float(mean),
                     "keep": None if mean is None else mean >= exact(config.committee.tau),
                     "comment": data.get("comment"), **reply.call_columns(call.model)})
    return table_frame(rows, "adjudications")


STAGE = Stage("adjudicate", "adjudications", ("id", "instruction", "response", "adjudicator", "reviews"),
              pending, run, llm=True)
