"""Review: each dealt reviewer checks the instruction (reasonable, complete, clear: pass/fail) and scores
the response on six 0-10 dimensions, with strengths and weaknesses. One row per reviewer in `reviews`.

Decision-preserving short-circuit (committee.short_circuit): reviewers are asked one after another, and
a sample whose verdict is already certain gets no more review calls; its remaining reviewers are rows
with status 'skipped'. A verdict is certain when a reviewer failed an instruction check (the rule
rejects on any fail), when too few reviews can still parse to reach min_reviews, or when even perfect
scores from every remaining reviewer cannot lift the mean of the parsed reviews to tau. In each case
the full protocol rejects too, so decisions are identical (tests/test_short_circuit.py).
"""
from collections import defaultdict

import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import exact
from gra_stream.config import Committee
from gra_stream.ids import content_id, seed_int
from gra_stream.llm import Calls, Replies, ask
from gra_stream.prompts import clip_column, load_prompt, render_column
from gra_stream.schemas import CHECKS, SCORE_DIMS
from gra_stream.stages.base import Context, Stage, columns_frame
from gra_stream.waves import Scope


def pending(config, scope: Scope = Scope()) -> str:
    return ("SELECT g.id, g.instruction, g.response, g.reviewers FROM generations g "
            "JOIN gates x ON x.id = g.id AND x.passed "
            "ANTI JOIN (SELECT DISTINCT generation_id FROM reviews) r ON r.generation_id = g.id "
            f"WHERE {scope.seeds('g.seed_id')} ORDER BY g.id")


OUT_OF_REACH = "the mean cannot reach tau"  # why reviewers are skipped where the rule can only say low_score
SKIPPED = "not asked: "                    # the error of a skipped review, before its reason


def certain_reject(totals: list[int], check_failed: bool, remaining: int, c: Committee) -> str:
    """Why the verdict is already a rejection whatever the remaining reviewers say, or ''. `totals` are
    the parsed reviews' score totals (a reviewer's mean is its total over the score dimensions)."""
    if check_failed:
        return "an instruction check failed"
    if len(totals) + remaining < c.min_reviews:
        return "too few reviews can parse"
    # the committee mean with perfect remaining scores, sum(totals / D) + 10 * remaining over
    # len(totals) + remaining reviewers, below tau = p / q: in integers, exactly
    tau, dims = exact(c.tau), len(SCORE_DIMS)
    if totals and (sum(totals) + 10 * dims * remaining) * tau.denominator < tau.numerator * dims * (len(totals) + remaining):
        return OUT_OF_REACH
    return ""


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config = ctx.config
    template = load_prompt("review", config.prompts_dir)
    ids, reviewers = batch["id"].to_list(), batch["reviewers"].to_list()
    # The sample comes first and is identical for every reviewer: vLLM's prefix cache reuses it.
    prompts = batch.select(render_column(template, {"instruction": clip_column(pl.col("instruction"), 2000),
                                                    "response": clip_column(pl.col("response"), 4000)})).to_series().to_list()
    n = config.committee.reviewers
    # Without the short-circuit every reviewer is asked at once: one large batch per model.
    rounds = [list(range(n))] if not config.committee.short_circuit else [[i] for i in range(n)]
    totals: list[list[int]] = [[] for _ in ids]
    failed = [False] * len(ids)
    open_ = list(range(len(ids)))       # samples whose verdict is not yet certain
    out: dict[str, list] = defaultdict(list)
    for indices in rounds:
        todo = [(g, i) for g in open_ for i in indices]
        calls = Calls([reviewers[g][i] for g, i in todo], [prompts[g] for g, _ in todo],
                      [seed_int(config.run_seed, "review", ids[g], i) for g, i in todo],
                      load_prompt("system", config.prompts_dir), reply_schemas.REVIEW, reply_schemas.MAX_TOKENS["review"])
        replies = ask(ctx.pool, calls, max_reasks=config.max_reasks)
        _asked_rows(out, [ids[g] for g, _ in todo], [i for _, i in todo], calls.models, replies)
        for (g, _), data in zip(todo, replies.data):
            if data is not None:
                totals[g].append(sum(data[d] for d in SCORE_DIMS))
                failed[g] |= not all(data[c] for c in CHECKS)
        remaining = n - 1 - indices[-1]
        if config.committee.short_circuit and remaining:
            still_open = []
            for g in open_:
                why = certain_reject(totals[g], failed[g], remaining, config.committee)
                if why:
                    _skipped_rows(out, ids[g], range(n - remaining, n), reviewers[g], why)
                else:
                    still_open.append(g)
            open_ = still_open
    return columns_frame(out, "reviews")


# what `reviewed_again` reads of a reviews table, and the rows of it that are carried
REPLAYED = ("generation_id", "reviewer_index", "status", "attempts", "error", *SCORE_DIMS, *CHECKS)
_ASKED = (pl.col("status") != "skipped") & (pl.col("attempts") == 1) & ~pl.col("error").str.starts_with("no reply")


def replay(kept: pl.DataFrame, c: Committee) -> pl.DataFrame:
    """The rows `run` makes under committee settings `c` for the generations in `kept`, the review rows of
    an earlier config whose requests were the same (only the keys that choose which reviewers are asked
    differed): the reviews it asks are taken as they are, the rest are skipped for `c`'s reason. A
    generation is left out (`reviewed_again`) when `c` asks a reviewer that `kept` skipped, or one whose
    review took more than one attempt: an attempt that got no reply is not in the call cache, so `run`
    would send it again, and a row does not say which of its attempts those were."""
    settled, _ = _walk(kept, c)
    out: dict[str, list] = defaultdict(list)      # the skipped rows
    models = dict(kept.group_by("generation_id").agg(pl.col("model").sort_by("reviewer_index")).iter_rows())
    for g, (taken, why) in settled.items():
        if why:
            _skipped_rows(out, g, range(taken, c.reviewers), models[g], why)
    take = {g: taken for g, (taken, _) in settled.items()}
    carried = kept.filter(_ASKED & pl.col("generation_id").replace_strict(take, default=0).gt(pl.col("reviewer_index")))
    skipped = columns_frame(out, "reviews") if out else carried.clear()
    return pl.concat([carried, skipped.select(carried.columns).cast(carried.schema)])


def reviewed_again(kept: pl.DataFrame, c: Committee) -> dict[str, int]:
    """The generations of `kept` that `replay` leaves out, each with the first reviewer whose request
    `run` sends again under `c` (the later ones may be asked too). `kept` needs the columns REPLAYED."""
    return _walk(kept, c)[1]


def _walk(kept: pl.DataFrame, c: Committee) -> tuple[dict[str, tuple[int, str]], dict[str, int]]:
    """The review rounds of `run` under `c`, on the replies in `kept`: (generation -> (reviewers asked,
    why the rest are skipped or '')) where those replies settle the verdict, (generation -> the first
    reviewer without a usable reply) where they do not."""
    answers: dict[str, dict[int, tuple[int | None, bool]]] = defaultdict(dict)
    for g, i, total, checks in kept.filter(_ASKED).select(
            "generation_id", "reviewer_index", pl.sum_horizontal(SCORE_DIMS).alias("total"),
            pl.all_horizontal(CHECKS).alias("checks")).iter_rows():
        answers[g][i] = (None, False) if checks is None else (total, not checks)
    settled: dict[str, tuple[int, str]] = {}
    unsettled = dict.fromkeys(kept["generation_id"].unique().to_list(), 0)
    for g, got in answers.items():
        totals: list[int] = []
        failed = False
        for i in range(c.reviewers):
            if i not in got:
                unsettled[g] = i
                break
            total, fail = got[i]
            if total is not None:
                totals.append(total)
            failed |= fail
            remaining = c.reviewers - 1 - i
            why = certain_reject(totals, failed, remaining, c) if c.short_circuit and remaining else ""
            if why or not remaining:
                settled[g] = (i + 1, why)
                del unsettled[g]
                break
    return settled, unsettled


def _asked_rows(out: dict[str, list], generation_ids: list[str], indices: list[int], models: list[str],
                replies: Replies) -> None:
    out["id"] += [content_id(g, i) for g, i in zip(generation_ids, indices)]
    out["generation_id"] += generation_ids
    out["reviewer_index"] += indices
    for key in (*CHECKS, *SCORE_DIMS, "strengths", "weaknesses"):
        out[key] += replies.field(key)
    out["mean"] += [None if d is None else sum(d[k] for k in SCORE_DIMS) / len(SCORE_DIMS) for d in replies.data]
    for key, values in replies.call_columns(models).items():
        out[key] += values


def _skipped_rows(out: dict[str, list], generation_id: str, indices: range, models: list[str], why: str) -> None:
    """The rows of reviewers not asked because the verdict was already certain (status 'skipped')."""
    k = len(indices)
    out["id"] += [content_id(generation_id, i) for i in indices]
    out["generation_id"] += [generation_id] * k
    out["reviewer_index"] += list(indices)
    for key in (*CHECKS, *SCORE_DIMS, "mean", "strengths", "weaknesses"):
        out[key] += [None] * k
    columns = {"model": [models[i] for i in indices], "status": "skipped", "error": SKIPPED + why, "raw": "",
               "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0, "attempts": 0, "truncated": False,
               "retries": 0, "wait_s": 0.0}
    for key, value in columns.items():
        out[key] += value if isinstance(value, list) else [value] * k


STAGE = Stage("review", "reviews", ("id", "instruction", "response", "reviewers"), pending, run, llm=True)
