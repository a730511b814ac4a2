"""The gate stage: SQL filters first, then MinHash near-duplicates against everything that passed before."""
import polars as pl

from gra_stream.backends import ModelPool
from gra_stream.sql_filters import load_filters
from gra_stream.stages import Context
from gra_stream.stages import gate
from gra_stream.store import Store
from tests.conftest import fake_config

BASE = "Write a detailed step by step guide to planting tomatoes in a small garden during early spring"


def batch(rows):
    return pl.DataFrame([{"seed_id": "s", "domain": "language", **r} for r in rows])


def context(run_dir):
    store = Store(run_dir)
    store.init()
    config = fake_config()
    return Context(config, ModelPool(config), store.connect(), load_filters(config)), store


def test_near_duplicates_are_found_within_a_batch_and_across_runs(tmp_path):
    ctx, store = context(tmp_path / "run")
    response = "Choose a sunny spot, loosen the soil, plant seedlings deep and water them regularly."
    first = gate.run(batch([{"id": "a", "instruction": BASE, "response": response},
                            {"id": "b", "instruction": BASE + " please", "response": response},
                            {"id": "c", "instruction": "Explain how vaccines train the immune system", "response": response}]), ctx)
    store.write_segment("gates", "first", first)
    got = {r["id"]: (r["passed"], r["reason"], r["duplicate_of"]) for r in first.iter_rows(named=True)}
    assert got == {"a": (True, "", None), "b": (False, "near_duplicate", "a"), "c": (True, "", None)}
    # a later batch (or a later run over the same directory) is compared with what passed before
    ctx2, _ = context(tmp_path / "run")
    second = gate.run(batch([{"id": "d", "instruction": "Please " + BASE, "response": response},
                             {"id": "e", "instruction": "Write a haiku about snow falling on a quiet town", "response": response}]), ctx2)
    got = {r["id"]: (r["passed"], r["reason"], r["duplicate_of"]) for r in second.iter_rows(named=True)}
    assert got == {"d": (False, "near_duplicate", "a"), "e": (True, "", None)}


def test_filtered_rows_are_not_minhashed(tmp_path):
    ctx, _ = context(tmp_path / "run")
    out = gate.run(batch([{"id": "r", "instruction": BASE, "response": "I'm sorry, but I cannot help with that."},
                          {"id": "ok", "instruction": BASE, "response": "Dig, plant, water and wait for the sun."}]), ctx)
    rows = {r["id"]: r for r in out.iter_rows(named=True)}
    assert rows["r"]["reason"] == "refusal" and rows["r"]["minhash"] is None
    assert rows["ok"]["passed"], "a filtered row must not count as the original of a near-duplicate"
