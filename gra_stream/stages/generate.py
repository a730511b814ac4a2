"""Generate: per task, a dealt generator model writes a new sample.

Synthesis tasks are anchored on the pool: in round r, every profiled seed and every sample kept in
rounds before r anchors `tasks_per_seed` tasks, of which at most `tasks_per_round` are taken, in task-id
order (a random subset). With waves (gra_stream/waves.py), the pool of wave w holds the seeds of waves
up to w and what they made, so a wave's examples are a function of what came before it. Round r opens
only after round r - 1 has finished every stage (the runner's pass r), so accepted samples of round r
join the example pool of round r + 1. The generator sees two
examples of the anchor's domain, the anchor and the item k + 1 places after it in id order within
that domain, by their keywords and summaries, and writes 3 keywords, an instruction and a response. Refinement tasks (mode refinement or integrated) ask the generator to rewrite a seed's own
response. A task's id hashes (run seed, anchor, task index, round), and its roles are dealt from that id,
so adding seeds adds only their tasks and a resumed run deals the same roles.
"""
import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import deal_many
from gra_stream.ids import seed_ints
from gra_stream.llm import Calls, Replies, ask
from gra_stream.prompts import clip_column, load_prompt, or_missing, render_column
from gra_stream.stages.base import Context, Stage, columns_frame
from gra_stream.waves import Scope


def pending(config, scope: Scope = Scope()) -> str:
    synthesis = config.mode in ("synthesis", "integrated")
    refine = config.mode in ("refinement", "integrated")
    cap = config.tasks_per_round
    return f"""
    WITH pool AS NOT MATERIALIZED (  -- read where used: the keywords and summaries are joined last, so they
        -- stay out of the ranking and the anti-join
        SELECT id, id AS seed_id, domain, keywords, summary, 0 AS round FROM profiles
        WHERE status = 'ok' AND {scope.seeds('id')}
        UNION ALL
        SELECT id, seed_id, domain, keywords, summary, round FROM samples
        WHERE kind = 'synthesis' AND {scope.seeds('seed_id')}),
    ranked AS MATERIALIZED (  -- round r's pool: the profiled seeds and the samples of rounds before r, per domain;
        -- ranked once for the tasks and their second examples (narrow: DuckDB spills it under the drain's limit)
        SELECT p.id, p.seed_id, p.domain, r.round AS task_round, row_number() OVER (PARTITION BY r.round, p.domain ORDER BY p.id) - 1 AS rank,
               count(*) OVER (PARTITION BY r.round, p.domain) AS n
        FROM pool p, range(1, {min(scope.rounds_open, config.rounds) + 1}) r(round) WHERE p.round < r.round),
    synth AS (
        SELECT left(sha256(concat_ws(chr(31), {config.run_seed}::VARCHAR, a.id, k::VARCHAR, a.task_round::VARCHAR)), 16) AS id,
               a.id AS anchor_id, a.seed_id, a.task_round AS round, 'synthesis' AS kind, a.domain,
               (a.rank + 1 + k) % a.n AS other_rank
        FROM ranked a, range({config.tasks_per_seed}) t(k)
        WHERE {str(synthesis).lower()}),
    synth_pending AS (
        SELECT s.* FROM synth s ANTI JOIN generations g ON g.id = s.id),
    done AS (SELECT round, count(*) AS n FROM generations WHERE kind = 'synthesis' GROUP BY round),
    synth_capped AS (
        SELECT p.* FROM synth_pending p LEFT JOIN done d ON d.round = p.round
        QUALIFY {cap} = 0 OR row_number() OVER (PARTITION BY p.round ORDER BY p.id) <= {cap} - coalesce(d.n, 0))
    SELECT t.id, t.anchor_id, t.seed_id, t.round, t.kind, t.domain, x1.keywords AS keywords_1, x1.summary AS summary_1,
           x2.keywords AS keywords_2, x2.summary AS summary_2, [t.anchor_id, o.id] AS example_ids,
           NULL::VARCHAR AS seed_instruction, NULL::VARCHAR AS seed_response
    FROM synth_capped t JOIN ranked o ON o.task_round = t.round AND o.domain = t.domain AND o.rank = t.other_rank
    JOIN pool x1 ON x1.id = t.anchor_id JOIN pool x2 ON x2.id = o.id
    UNION ALL
    SELECT r.id, r.seed_id, r.seed_id, 1, 'refine', p.domain, p.keywords, p.summary, NULL, NULL, [r.seed_id],
           concat_ws(chr(10) || chr(10), s.instruction, nullif(s.input, '')), s.response
    FROM (SELECT left(sha256(concat_ws(chr(31), {config.run_seed}::VARCHAR, id, 'refine')), 16) AS id, id AS seed_id
          FROM profiles WHERE {str(refine).lower()} AND status = 'ok' AND {scope.seeds('id')}) r
    JOIN profiles p ON p.id = r.seed_id JOIN seeds s ON s.id = r.seed_id
    ANTI JOIN generations g ON g.id = r.id
    ORDER BY id
    """


def _prompts(batch: pl.DataFrame, prompts: dict[str, str]) -> list[str]:
    synthesis = render_column(prompts["generate"], {
        "domain": pl.col("domain"), "keywords_1": pl.col("keywords_1").list.join(", "), "summary_1": pl.col("summary_1"),
        "keywords_2": pl.col("keywords_2").list.join(", "), "summary_2": pl.col("summary_2")})
    refine = render_column(prompts["refine"], {"domain": pl.col("domain"),
                                               "instruction": clip_column(pl.col("seed_instruction"), 2000),
                                               "response": clip_column(or_missing(pl.col("seed_response")), 3000)})
    return batch.select(pl.when(pl.col("kind") == "refine").then(refine).otherwise(synthesis)).to_series().to_list()


def _ask(batch: pl.DataFrame, generators: list[str], ctx: Context) -> Replies:
    """One call per task: synthesis tasks and refinements have their own schemas, so two batches of calls."""
    config = ctx.config
    prompts = {name: load_prompt(name, config.prompts_dir) for name in ("system", "generate", "refine")}
    users, kinds = _prompts(batch, prompts), batch["kind"].to_list()
    seeds = seed_ints(batch["id"].to_list(), before=(config.run_seed, "generate"))
    replies = Replies(batch.height)
    for kind, schema in (("synthesis", reply_schemas.GENERATE), ("refine", reply_schemas.REFINE)):
        rows = [i for i, k in enumerate(kinds) if k == kind]
        if not rows:
            continue
        calls = Calls([generators[i] for i in rows], [users[i] for i in rows], [seeds[i] for i in rows],
                      prompts["system"], schema, reply_schemas.MAX_TOKENS["generate"])
        part = ask(ctx.pool, calls, max_reasks=config.max_reasks)
        if len(rows) == batch.height:
            return part
        replies.scatter(rows, part)
    return replies


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config = ctx.config
    deals = deal_many(ctx.pool.names(), config.committee.reviewers, run_seed=config.run_seed,
                      task_ids=batch["id"].to_list())
    generators = [d[0] for d in deals]
    replies = _ask(batch, generators, ctx)
    instructions = [None if data is None else seed if kind == "refine" else data["instruction"]
                    for seed, kind, data in zip(batch["seed_instruction"].to_list(), batch["kind"].to_list(), replies.data)]
    return columns_frame({
        **{c: batch[c] for c in ("id", "anchor_id", "seed_id", "round", "kind", "example_ids", "domain")},
        "generator": generators, "reviewers": [d[1] for d in deals], "adjudicator": [d[2] for d in deals],
        "keywords": replies.field("keywords"), "instruction": instructions, "response": replies.field("response"),
        **replies.call_columns(generators)}, "generations")


STAGE = Stage("generate", "generations", ("id", "anchor_id", "seed_id", "round", "kind", "domain", "keywords_1",
                                          "summary_1", "keywords_2", "summary_2", "example_ids", "seed_instruction",
                                          "seed_response"), pending, run, llm=True, streams=True,
              after=("profile",))
