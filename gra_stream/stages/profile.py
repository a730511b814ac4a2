"""Profile seeds: a pool model assigns each seed its domain, 3 keywords and a one-line summary."""
import polars as pl

from gra_stream import reply_schemas
from gra_stream.committee import deal_roles
from gra_stream.ids import seed_int
from gra_stream.llm import Call, ask, clip, load_prompt, render
from gra_stream.stages import Context, Stage, table_frame


def pending(config, rounds_open: int = 1) -> str:
    return "SELECT s.* FROM seeds s ANTI JOIN profiles p ON p.id = s.id ORDER BY s.id"


def profile_rows(batch: pl.DataFrame, ctx: Context, *, role: str) -> pl.DataFrame:
    """One profile call per row (instruction, input, response), by a model dealt from the pool per row."""
    config = ctx.config
    system, template = load_prompt("system", config.prompts_dir), load_prompt("profile", config.prompts_dir)
    calls = []
    for row in batch.iter_rows(named=True):
        model, _, _ = deal_roles(ctx.pool.names(), 1, run_seed=config.run_seed, task_id=f"{role}:{row['id']}")
        instruction = row["instruction"] + (f"\n\n{row['input']}" if row["input"] else "")
        user = render(template, {"instruction": clip(instruction, 1500), "response": clip(row["response"], 1500)})
        calls.append(Call(model, system, user, reply_schemas.PROFILE, reply_schemas.MAX_TOKENS["profile"],
                          seed_int(config.run_seed, role, row["id"])))
    rows = []
    for row, call, reply in zip(batch.iter_rows(named=True), calls, ask(ctx.pool, calls, max_reasks=config.max_reasks)):
        data = reply.data or {}
        rows.append({"id": row["id"], "domain": data.get("domain"), "keywords": data.get("keywords"),
                     "summary": data.get("summary"), **reply.call_columns(call.model)})
    return table_frame(rows, "annotations" if role == "annotate" else "profiles")


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return profile_rows(batch, ctx, role="profile")


STAGE = Stage("profile", "profiles", ("id", "instruction", "input", "response"), pending, run, llm=True)
