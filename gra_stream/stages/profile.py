"""Profile seeds: a pool model assigns each seed its domain, 3 keywords and a one-line summary."""
import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import deal_many
from gra_stream.ids import seed_ints
from gra_stream.llm import Calls, ask
from gra_stream.prompts import clip_column, load_prompt, or_missing, render_column
from gra_stream.stages.base import Context, Stage, columns_frame
from gra_stream.waves import Scope


def pending(config, scope: Scope = Scope()) -> str:
    return f"SELECT s.* FROM seeds s ANTI JOIN profiles p ON p.id = s.id WHERE {scope.seeds('s.id')} ORDER BY s.id"


def profile_prompts(batch: pl.DataFrame, template: str) -> list[str]:
    """The profile prompt of each row (instruction, input, response): the input follows the instruction."""
    instruction = pl.when(pl.col("input") != "").then(pl.concat_str("instruction", pl.lit("\n\n"), "input")
                                                      ).otherwise(pl.col("instruction"))
    return batch.select(render_column(template, {"instruction": clip_column(instruction, 1500),
                                                 "response": clip_column(or_missing(pl.col("response")), 1500)})
                        ).to_series().to_list()


def profile_rows(batch: pl.DataFrame, ctx: Context, *, role: str) -> pl.DataFrame:
    """One profile call per row (instruction, input, response), by a model dealt from the pool per row."""
    config = ctx.config
    ids = batch["id"].to_list()
    models = [deal[0] for deal in deal_many(ctx.pool.names(), 1, run_seed=config.run_seed,
                                            task_ids=[f"{role}:{i}" for i in ids])]
    calls = Calls(models, profile_prompts(batch, load_prompt("profile", config.prompts_dir)),
                  seed_ints(ids, before=(config.run_seed, role)), load_prompt("system", config.prompts_dir),
                  reply_schemas.PROFILE, reply_schemas.MAX_TOKENS["profile"])
    replies = ask(ctx.pool, calls, max_reasks=config.max_reasks)
    return columns_frame({"id": ids, "domain": replies.field("domain"), "keywords": replies.field("keywords"),
                          "summary": replies.field("summary"), **replies.call_columns(models)},
                         "annotations" if role == "annotate" else "profiles")


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return profile_rows(batch, ctx, role="profile")


STAGE = Stage("profile", "profiles", ("id", "instruction", "input", "response"), pending, run, llm=True)
