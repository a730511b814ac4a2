"""Review: each dealt reviewer checks the instruction (reasonable, complete, clear: pass/fail) and scores
the response on six 0-10 dimensions, with strengths and weaknesses. One row per reviewer in `reviews`."""
from fractions import Fraction

import polars as pl

from gra_stream import reply_schemas
from gra_stream.ids import content_id, seed_int
from gra_stream.llm import Call, ask, clip, load_prompt, render
from gra_stream.schemas import CHECKS, SCORE_DIMS
from gra_stream.stages import Context, Stage


def pending(config) -> str:
    return ("SELECT g.id, g.instruction, g.response, g.reviewers FROM generations g "
            "JOIN gates x ON x.id = g.id AND x.passed "
            "ANTI JOIN (SELECT DISTINCT generation_id FROM reviews) r ON r.generation_id = g.id ORDER BY g.id")


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config, system, template = ctx.config, load_prompt("system"), load_prompt("review")
    calls, keys = [], []
    for row in batch.iter_rows(named=True):
        # The sample comes first and is identical for every reviewer: vLLM's prefix cache reuses it.
        user = render(template, {"instruction": clip(row["instruction"], 2000), "response": clip(row["response"], 4000)})
        for index, model in enumerate(row["reviewers"]):
            calls.append(Call(model, system, user, reply_schemas.REVIEW, reply_schemas.MAX_TOKENS["review"],
                              seed_int(config.run_seed, "review", row["id"], index)))
            keys.append((row["id"], index))
    rows = []
    for (generation_id, index), call, reply in zip(keys, calls, ask(ctx.pool, calls, max_reasks=config.max_reasks)):
        data = reply.data or {}
        scores = [data.get(d) for d in SCORE_DIMS]
        mean = float(Fraction(sum(scores), len(scores))) if reply.ok else None
        rows.append({"id": content_id(generation_id, index), "generation_id": generation_id, "reviewer_index": index,
                     **{c: data.get(c) for c in CHECKS}, **dict(zip(SCORE_DIMS, scores)), "mean": mean,
                     "strengths": data.get("strengths"), "weaknesses": data.get("weaknesses"),
                     **reply.call_columns(call.model)})
    return pl.DataFrame(rows, infer_schema_length=None)


STAGE = Stage("review", "reviews", ("id", "instruction", "response", "reviewers"), pending, run, llm=True)
