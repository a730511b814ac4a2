"""Generate: per task, a dealt generator model writes a new sample.

Synthesis tasks are anchored on the pool: in round r, every profiled seed and every sample kept in
rounds before r anchors `tasks_per_seed` tasks, of which at most `tasks_per_round` are taken, in task-id
order (a random subset). Round r opens only after round r - 1 has finished every stage (the runner's
pass r), so accepted samples of round r join the example pool of round r + 1. The generator sees two
examples of the anchor's domain, the anchor and the item k + 1 places after it in id order within
that domain, by their keywords and summaries, and writes 3 keywords, an instruction and a response. Refinement tasks (mode refinement or integrated) ask the generator to rewrite a seed's own
response. A task's id hashes (run seed, anchor, task index, round), and its roles are dealt from that id,
so adding seeds adds only their tasks and a resumed run deals the same roles.
"""
import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import deal_roles
from gra_stream.ids import seed_int
from gra_stream.llm import Call, ask, clip, load_prompt, render
from gra_stream.stages import Context, Stage, table_frame


def pending(config, rounds_open: int = 1) -> str:
    synthesis = config.mode in ("synthesis", "integrated")
    refine = config.mode in ("refinement", "integrated")
    cap = config.tasks_per_round
    return f"""
    WITH pool AS (
        SELECT id, id AS seed_id, domain, keywords, summary, 0 AS round FROM profiles WHERE status = 'ok'
        UNION ALL
        SELECT id, seed_id, domain, keywords, summary, round FROM samples WHERE kind = 'synthesis'),
    ranked AS (SELECT *, row_number() OVER (PARTITION BY domain ORDER BY id) - 1 AS rank,
                         count(*) OVER (PARTITION BY domain) AS n FROM pool),
    synth AS (
        SELECT left(sha256(concat_ws(chr(31), {config.run_seed}::VARCHAR, a.id, k::VARCHAR, r.round::VARCHAR)), 16) AS id,
               a.id AS anchor_id, a.seed_id, r.round, 'synthesis' AS kind, a.domain,
               a.keywords AS keywords_1, a.summary AS summary_1, (a.rank + 1 + k) % a.n AS other_rank
        FROM ranked a, range({config.tasks_per_seed}) t(k), range(1, {min(rounds_open, config.rounds) + 1}) r(round)
        WHERE {str(synthesis).lower()} AND a.round < r.round),
    synth_pending AS (
        SELECT s.* FROM synth s ANTI JOIN generations g ON g.id = s.id),
    done AS (SELECT round, count(*) AS n FROM generations WHERE kind = 'synthesis' GROUP BY round),
    synth_capped AS (
        SELECT p.* FROM synth_pending p LEFT JOIN done d ON d.round = p.round
        QUALIFY {cap} = 0 OR row_number() OVER (PARTITION BY p.round ORDER BY p.id) <= {cap} - coalesce(d.n, 0))
    SELECT t.id, t.anchor_id, t.seed_id, t.round, t.kind, t.domain, t.keywords_1, t.summary_1,
           o.keywords AS keywords_2, o.summary AS summary_2, [t.anchor_id, o.id] AS example_ids,
           NULL::VARCHAR AS seed_instruction, NULL::VARCHAR AS seed_response
    FROM synth_capped t JOIN ranked o ON o.domain = t.domain AND o.rank = t.other_rank
    UNION ALL
    SELECT r.id, r.seed_id, r.seed_id, 1, 'refine', p.domain, p.keywords, p.summary, NULL, NULL, [r.seed_id],
           concat_ws(chr(10) || chr(10), s.instruction, nullif(s.input, '')), s.response
    FROM (SELECT left(sha256(concat_ws(chr(31), {config.run_seed}::VARCHAR, id, 'refine')), 16) AS id, id AS seed_id
          FROM profiles WHERE {str(refine).lower()} AND status = 'ok') r
    JOIN profiles p ON p.id = r.seed_id JOIN seeds s ON s.id = r.seed_id
    ANTI JOIN generations g ON g.id = r.id
    ORDER BY id
    """


def _call(row: dict, generator: str, ctx: Context, prompts: dict) -> Call:
    config = ctx.config
    seed = seed_int(config.run_seed, "generate", row["id"])
    if row["kind"] == "refine":
        user = render(prompts["refine"], {"domain": row["domain"], "instruction": clip(row["seed_instruction"], 2000),
                                          "response": clip(row["seed_response"], 3000)})
        return Call(generator, prompts["system"], user, reply_schemas.REFINE, reply_schemas.MAX_TOKENS["generate"], seed)
    user = render(prompts["generate"], {"domain": row["domain"], "keywords_1": ", ".join(row["keywords_1"]),
                                        "summary_1": row["summary_1"], "keywords_2": ", ".join(row["keywords_2"]),
                                        "summary_2": row["summary_2"]})
    return Call(generator, prompts["system"], user, reply_schemas.GENERATE, reply_schemas.MAX_TOKENS["generate"], seed)


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config = ctx.config
    prompts = {name: load_prompt(name, config.prompts_dir) for name in ("system", "generate", "refine")}
    rows = list(batch.iter_rows(named=True))
    deals = [deal_roles(ctx.pool.names(), config.committee.reviewers, run_seed=config.run_seed, task_id=r["id"])
             for r in rows]
    calls = [_call(r, deal[0], ctx, prompts) for r, deal in zip(rows, deals)]
    out = []
    for row, (generator, reviewers, adjudicator), reply in zip(rows, deals, ask(ctx.pool, calls, max_reasks=config.max_reasks)):
        data = reply.data or {}
        instruction = row["seed_instruction"] if row["kind"] == "refine" else data.get("instruction")
        out.append({"id": row["id"], "anchor_id": row["anchor_id"], "seed_id": row["seed_id"], "round": row["round"],
                    "kind": row["kind"], "example_ids": row["example_ids"], "domain": row["domain"],
                    "generator": generator, "reviewers": reviewers, "adjudicator": adjudicator,
                    "keywords": data.get("keywords"), "instruction": instruction if reply.ok else None,
                    "response": data.get("response"), **reply.call_columns(generator)})
    return table_frame(out, "generations")


STAGE = Stage("generate", "generations", ("id", "anchor_id", "seed_id", "round", "kind", "domain", "keywords_1",
                                          "summary_1", "keywords_2", "summary_2", "example_ids", "seed_instruction",
                                          "seed_response"), pending, run, llm=True)
