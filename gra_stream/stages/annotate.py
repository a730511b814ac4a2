"""Annotate: a random pool model writes the domain, 3 keywords and a one-line summary of each kept
sample (the profile prompt), so the sample can serve as a seed of the next round."""
import polars as pl

from gra_stream.stages.base import Context, Stage
from gra_stream.stages.profile import profile_rows
from gra_stream.waves import Scope


def pending(config, scope: Scope = Scope()) -> str:
    return ("SELECT g.id, g.instruction, '' AS input, g.response FROM diversity d JOIN generations g ON g.id = d.id "
            f"ANTI JOIN annotations a ON a.id = d.id WHERE d.kept AND {scope.seeds('g.seed_id')} ORDER BY g.id")


def run(batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
    return profile_rows(batch, ctx, role="annotate")


STAGE = Stage("annotate", "annotations", ("id", "instruction", "input", "response"), pending, run, llm=True)
