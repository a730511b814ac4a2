"""Generate: per task, a dealt generator model sees two examples of a domain (keywords and summaries)
and writes 3 new keywords, an instruction and a response.

Tasks are anchored on profiled seeds (`tasks_per_seed` each), so adding seeds adds only their tasks.
A task's id is a hash of (run seed, seed id, task index); its second example is the seed k+1 places
after the anchor in id order within the same domain; its roles are dealt from the task id.
"""
import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import deal_roles
from gra_stream.ids import seed_int
from gra_stream.llm import Call, ask, load_prompt, render
from gra_stream.stages import Context, Stage


def pending(config) -> str:
    return f"""
    WITH p AS (SELECT id, domain, keywords, summary FROM profiles WHERE status = 'ok'),
    ranked AS (SELECT *, row_number() OVER (PARTITION BY domain ORDER BY id) - 1 AS rank,
                         count(*) OVER (PARTITION BY domain) AS n FROM p),
    tasks AS (SELECT left(sha256(concat({config.run_seed}::VARCHAR, chr(31), r.id, chr(31), k::VARCHAR)), 16) AS id,
                     r.id AS seed_id, r.domain, r.keywords AS keywords_1, r.summary AS summary_1,
                     r.domain AS d, (r.rank + 1 + k) % r.n AS other_rank
              FROM ranked r, range({config.tasks_per_seed}) t(k))
    SELECT t.id, t.seed_id, t.domain, t.keywords_1, t.summary_1, o.keywords AS keywords_2,
           o.summary AS summary_2, [t.seed_id, o.id] AS example_ids
    FROM tasks t JOIN ranked o ON o.domain = t.d AND o.rank = t.other_rank
    ANTI JOIN generations g ON g.id = t.id
    ORDER BY t.id
    """


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    config, system, template = ctx.config, load_prompt("system"), load_prompt("generate")
    deals, calls = [], []
    for row in batch.iter_rows(named=True):
        deal = deal_roles(ctx.pool.names(), config.committee.reviewers, run_seed=config.run_seed, task_id=row["id"])
        deals.append(deal)
        user = render(template, {"domain": row["domain"], "keywords_1": ", ".join(row["keywords_1"]),
                                 "summary_1": row["summary_1"], "keywords_2": ", ".join(row["keywords_2"]),
                                 "summary_2": row["summary_2"]})
        calls.append(Call(deal[0], system, user, reply_schemas.GENERATE, reply_schemas.MAX_TOKENS["generate"],
                          seed_int(config.run_seed, "generate", row["id"])))
    replies = ask(ctx.pool, calls, max_reasks=config.max_reasks)
    rows = []
    for row, (generator, reviewers, adjudicator), reply in zip(batch.iter_rows(named=True), deals, replies):
        data = reply.data or {}
        rows.append({"id": row["id"], "seed_id": row["seed_id"], "example_ids": row["example_ids"],
                     "domain": row["domain"], "generator": generator, "reviewers": reviewers,
                     "adjudicator": adjudicator, "keywords": data.get("keywords"),
                     "instruction": data.get("instruction"), "response": data.get("response"),
                     **reply.call_columns(generator)})
    return pl.DataFrame(rows, infer_schema_length=None)


STAGE = Stage("generate", "generations", ("id", "seed_id", "domain", "keywords_1", "summary_1", "keywords_2",
                                          "summary_2", "example_ids"), pending, run, llm=True)
