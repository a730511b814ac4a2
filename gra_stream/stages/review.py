"""Review: each dealt reviewer checks the instruction (reasonable, complete, clear: pass/fail) and scores
the response on six 0-10 dimensions, with strengths and weaknesses. One row per reviewer in `reviews`.

Decision-preserving short-circuit (committee.short_circuit): reviewers are asked one after another, and
a sample whose verdict is already certain gets no more review calls; its remaining reviewers are rows
with status 'skipped'. A verdict is certain when a reviewer failed an instruction check (the rule
rejects on any fail), when too few reviews can still parse to reach min_reviews, or when even perfect
scores from every remaining reviewer cannot lift the mean of the parsed reviews to tau. In each case
the full protocol rejects too, so decisions are identical (tests/test_short_circuit.py).
"""
from fractions import Fraction

import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import exact, reviewer_mean
from gra_stream.ids import content_id, seed_int
from gra_stream.llm import Call, Reply, ask, clip, load_prompt, render
from gra_stream.schemas import CHECKS, SCORE_DIMS
from gra_stream.stages import Context, Stage, table_frame


def pending(config, rounds_open: int = 1) -> str:
    return ("SELECT g.id, g.instruction, g.response, g.reviewers FROM generations g "
            "JOIN gates x ON x.id = g.id AND x.passed "
            "ANTI JOIN (SELECT DISTINCT generation_id FROM reviews) r ON r.generation_id = g.id ORDER BY g.id")


def certain_reject(means: list[Fraction], check_failed: bool, remaining: int, config) -> str:
    """Why the verdict is already a rejection whatever the remaining reviewers say, or ''."""
    c = config.committee
    if check_failed:
        return "an instruction check failed"
    if len(means) + remaining < c.min_reviews:
        return "too few reviews can parse"
    if means and (sum(means) + 10 * remaining) / (len(means) + remaining) < exact(c.tau):
        return "the mean cannot reach tau"
    return ""


def _row(generation_id: str, index: int, model: str, reply: Reply | None, skipped_because: str = "") -> dict:
    data = (reply.data if reply else None) or {}
    scores = [data.get(d) for d in SCORE_DIMS]
    mean = float(reviewer_mean(scores)) if reply and reply.ok else None
    calls = reply.call_columns(model) if reply else {
        **Reply(None, "", f"not asked: {skipped_because}").call_columns(model), "status": "skipped", "raw": ""}
    return {"id": content_id(generation_id, index), "generation_id": generation_id, "reviewer_index": index,
            **{c: data.get(c) for c in CHECKS}, **dict(zip(SCORE_DIMS, scores)), "mean": mean,
            "strengths": data.get("strengths"), "weaknesses": data.get("weaknesses"), **calls}


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config, system, template = ctx.config, load_prompt("system", ctx.config.prompts_dir), load_prompt("review", ctx.config.prompts_dir)
    rows = list(batch.iter_rows(named=True))
    # The sample comes first and is identical for every reviewer: vLLM's prefix cache reuses it.
    prompts = {r["id"]: render(template, {"instruction": clip(r["instruction"], 2000),
                                          "response": clip(r["response"], 4000)}) for r in rows}
    n = config.committee.reviewers
    # Without the short-circuit every reviewer is asked at once: one large batch per model.
    rounds = [list(range(n))] if not config.committee.short_circuit else [[i] for i in range(n)]
    means = {r["id"]: [] for r in rows}
    failed = {r["id"]: False for r in rows}
    decided = {r["id"]: "" for r in rows}
    out = []
    for indices in rounds:
        todo = [(r, i) for r in rows for i in indices if not decided[r["id"]]]
        calls = [Call(r["reviewers"][i], system, prompts[r["id"]], reply_schemas.REVIEW,
                      reply_schemas.MAX_TOKENS["review"], seed_int(config.run_seed, "review", r["id"], i))
                 for r, i in todo]
        for (r, i), call, reply in zip(todo, calls, ask(ctx.pool, calls, max_reasks=config.max_reasks)):
            out.append(_row(r["id"], i, call.model, reply))
            if reply.ok:
                means[r["id"]].append(reviewer_mean([reply.data[d] for d in SCORE_DIMS]))
                failed[r["id"]] |= not all(reply.data[c] for c in CHECKS)
        if config.committee.short_circuit:
            remaining = n - 1 - indices[-1]
            for r in rows:
                if not decided[r["id"]] and remaining:
                    decided[r["id"]] = certain_reject(means[r["id"]], failed[r["id"]], remaining, config)
                    if decided[r["id"]]:
                        out += [_row(r["id"], i, r["reviewers"][i], None, decided[r["id"]])
                                for i in range(n - remaining, n)]
    return table_frame(out, "reviews")


STAGE = Stage("review", "reviews", ("id", "instruction", "response", "reviewers"), pending, run, llm=True)
