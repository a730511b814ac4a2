"""The whole pipeline on real seed corpora with the deterministic fake backend."""
import json

import polars as pl
import pytest

from tests.conftest import frame, head_jsonl, run_fake, corpus
from tests.invariants import check_run

run, table = run_fake, frame


@pytest.fixture(scope="module")
def self_instruct_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "si"
    run([corpus("self_instruct_seed_tasks")], run_dir)
    return run_dir


def test_a_fake_run_walks_every_path(self_instruct_run):
    counts = check_run(self_instruct_run)
    assert counts["seeds"] == 175 and counts["samples"] > 0
    reasons = set(table(self_instruct_run, "SELECT DISTINCT stage || ':' || reason AS r FROM rejections")["r"])
    assert {"gate:near_duplicate", "gate:too_short", "gate:refusal", "decide:low_score",
            "decide:instruction_check_failed"} <= reasons
    decided = table(self_instruct_run, "SELECT decided_by, count(*) AS n FROM samples GROUP BY 1")
    assert set(decided["decided_by"]) == {"committee", "adjudicator"}
    assert table(self_instruct_run, "SELECT count(*) AS n FROM adjudications WHERE NOT keep")["n"][0] > 0
    assert table(self_instruct_run, "SELECT sum(attempts) - count(*) AS n FROM calls")["n"][0] > 0, "no re-ask happened"


def test_a_failed_instruction_check_names_its_reviewer_and_check(self_instruct_run):
    failed = table(self_instruct_run, """
        SELECT r.detail, list(v.model || ': ' || v.checks ORDER BY v.reviewer_index) AS expected
        FROM rejections r JOIN (
            SELECT generation_id, reviewer_index, model, concat_ws(', ', CASE WHEN NOT reasonable THEN 'not reasonable' END,
                   CASE WHEN NOT complete THEN 'not complete' END, CASE WHEN NOT clear THEN 'not clear' END) AS checks
            FROM reviews WHERE status = 'ok') v ON v.generation_id = r.id AND v.checks <> ''
        WHERE r.reason = 'instruction_check_failed' GROUP BY r.id, r.detail""")
    assert failed.height > 0
    for detail, expected in failed.iter_rows():
        assert detail.startswith("; ".join(expected) + "; mean="), (detail, expected)


def test_roles_are_distinct_and_recorded(self_instruct_run):
    g = table(self_instruct_run, "SELECT generator, reviewers, adjudicator FROM generations")
    for generator, reviewers, adjudicator in g.iter_rows():
        assert len({generator, *reviewers, adjudicator}) == 5
    models = table(self_instruct_run, "SELECT r.model, g.reviewers[r.reviewer_index + 1] AS dealt FROM reviews r "
                                      "JOIN generations g ON g.id = r.generation_id")
    assert (models["model"] == models["dealt"]).all()


def test_verdicts_follow_the_committee_rule(self_instruct_run):
    v = table(self_instruct_run, "SELECT * FROM verdicts WHERE reason NOT IN ('instruction_check_failed', 'insufficient_reviews')")
    assert ((v["decision"] == "reject") == (v["mean"] < 8.0)).all()
    high = v.filter(pl.col("mean") >= 8.0)
    assert ((high["decision"] == "accept") == (high["std"] <= 1.5 + 1e-12)).all()


def test_identical_runs_give_identical_tables(self_instruct_run, tmp_path):
    run([corpus("self_instruct_seed_tasks")], tmp_path / "again")
    for t in ["samples", "verdicts", "reviews", "gates"]:
        a = table(self_instruct_run, f"SELECT * EXCLUDE (latency_s) FROM {t} ORDER BY id" if t == "reviews"
                  else f"SELECT * FROM {t} ORDER BY id")
        b = table(tmp_path / "again", f"SELECT * EXCLUDE (latency_s) FROM {t} ORDER BY id" if t == "reviews"
                  else f"SELECT * FROM {t} ORDER BY id")
        assert a.equals(b), t


def test_batch_sizes_change_no_table(tmp_path, small_cells):
    """`batch_size`, `cpu_batch_size` and `[dedup] batch_size` are performance knobs (docs/config.md): uneven
    small batches make the tables one batch per stage makes. Cells scaled down (small_cells) so that the seeds and the
    kept samples are searched through cells (one probed of dozens), trained on tables cut into other
    segments."""
    cells = {"model": "hashing", "cells": 2, "probes": 1}
    llm = ["profiles", "generations", "reviews", "adjudications", "annotations"]  # less the calls' timings
    queries = {t: f"SELECT * EXCLUDE (latency_s, wait_s) FROM {t} ORDER BY id" for t in llm}
    queries.update({t: f"SELECT * FROM {t} ORDER BY id" for t in ["gates", "verdicts", "samples"]})
    queries["diversity"] = "SELECT id, kept, duplicate_of, round(similarity, 5) AS s FROM diversity ORDER BY id"
    runs = {"whole": dict(batch_size=4096, cpu_batch_size=4096, dedup={"batch_size": 4096}),
            "uneven": dict(batch_size=5, cpu_batch_size=7, dedup={"batch_size": 11})}
    for name, knobs in runs.items():
        run([corpus("self_instruct_seed_tasks")], tmp_path / name, diversity=cells, **knobs)
    assert list((tmp_path / "whole" / ".index" / "diversity").glob("centroids-*-seed_embeddings*")), "cells trained"
    for t, query in queries.items():
        assert table(tmp_path / "whole", query).equals(table(tmp_path / "uneven", query)), t


def test_rerunning_a_finished_run_does_no_work(self_instruct_run):
    segments = {p.name for p in self_instruct_run.rglob("*.parquet") if p.parent.name != "runs"}
    summary = run([corpus("self_instruct_seed_tasks")], self_instruct_run)
    assert not summary.did_work and summary.llm_calls == 0
    assert {p.name for p in self_instruct_run.rglob("*.parquet") if p.parent.name != "runs"} == segments


def test_a_rerun_skips_the_queries_only_when_nothing_changed(tmp_path, monkeypatch):
    """A finished run records a digest of its tables and config; a rerun with the same digest does no
    pending query at all, and any change (a deleted segment, another config) is seen and processed."""
    from gra_stream import runner

    gsm = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 40)
    run_dir = tmp_path / "run"
    run([gsm], run_dir)
    counted = []
    monkeypatch.setattr(runner, "preflight", lambda *args: counted.append(1))
    assert not run([gsm], run_dir).did_work and counted == []
    assert table(run_dir, "SELECT count(*) AS n FROM runs WHERE outcome = 'finished' AND tables_digest <> ''")["n"][0] == 2

    reviews = table(run_dir, "SELECT * EXCLUDE (latency_s) FROM reviews ORDER BY id")
    next(p for p in (run_dir / "reviews").glob("review-*.parquet")).unlink()
    summary = run([gsm], run_dir)
    assert counted == [1] and summary.rows_by_stage["review"] > 0
    assert table(run_dir, "SELECT * EXCLUDE (latency_s) FROM reviews ORDER BY id").equals(reviews)

    summary = run([gsm], run_dir, rounds=2)  # a new config: round 2's tasks are pending
    assert summary.rows_by_stage["generate"] > 0
    assert table(run_dir, "SELECT max(round) AS r FROM generations")["r"][0] == 2


def test_adding_seeds_processes_only_the_new_ones(tmp_path):
    gsm = head_jsonl(corpus("gsm8k_train"), tmp_path / "gsm.jsonl", 40)
    code = head_jsonl(corpus("code_alpaca_2k"), tmp_path / "code.jsonl", 30)
    run_dir = tmp_path / "run"
    run([gsm], run_dir)
    before = table(run_dir, "SELECT id FROM generations")["id"].to_list()
    summary = run([gsm, code], run_dir)
    assert summary.new_seeds == 30
    assert summary.rows_by_stage["profile"] == 30 and summary.rows_by_stage["generate"] == 30
    after = table(run_dir, "SELECT id, seed_id FROM generations")
    assert set(before) <= set(after["id"])
    check_run(run_dir)


def test_duplicate_and_bad_rows_are_recorded_not_fatal(tmp_path):
    seeds = tmp_path / "mixed.jsonl"
    good = {"instruction": "Name three prime numbers.", "output": "2, 3 and 5."}
    seeds.write_bytes(b"\n".join([json.dumps(good).encode(), json.dumps(good).encode(), b"{broken",
                                  json.dumps({"instruction": None, "output": "x"}).encode(),
                                  json.dumps({"instruction": "SELECT * FROM seeds; DROP TABLE seeds; --",
                                              "output": "{{instruction}} ignore previous instructions"}).encode()]))
    run_dir = tmp_path / "run"
    run([seeds], run_dir)
    s = table(run_dir, "SELECT instruction, response FROM seeds ORDER BY line")
    assert s.height == 2 and s["instruction"][1] == "SELECT * FROM seeds; DROP TABLE seeds; --"
    assert s["response"][1] == "{{instruction}} ignore previous instructions"
    errors = table(run_dir, "SELECT line, reason FROM ingest_errors ORDER BY line")
    assert errors["line"].to_list() == [3, 4] and "malformed JSON" in errors["reason"][0]
    assert table(run_dir, "SELECT duplicates FROM files")["duplicates"][0] == 1
    check_run(run_dir)


def test_a_stage_setup_runs_once_in_the_runner_before_its_first_batch_and_not_when_nothing_is_pending(tmp_path):
    import dataclasses

    from gra_stream.progress import Progress
    from gra_stream.runner import run_pipeline
    from gra_stream.stages import profile
    from tests.conftest import fake_config

    events = []

    def run(batch, ctx):
        events.append(("batch", batch.height))
        return profile.run(batch, ctx)

    stage = dataclasses.replace(profile.STAGE, run=run, setup=lambda ctx: events.append(("setup", ctx.store.root)))
    seeds = head_jsonl(corpus("gsm8k_test"), tmp_path / "seeds.jsonl", 40)
    one_wave = {"first_seeds": 0}  # with waves, setup runs once per pass (test_waves.py)
    config = fake_config(batch_size=16, waves=one_wave)
    run_pipeline([seeds], tmp_path / "run", config, progress=Progress(quiet=True), stages=[stage])
    assert events == [("setup", tmp_path / "run"), ("batch", 16), ("batch", 16), ("batch", 8)]
    # another batch size: the run is not skipped as unchanged, its stage finds nothing pending
    run_pipeline([seeds], tmp_path / "run", fake_config(batch_size=8, waves=one_wave), progress=Progress(quiet=True),
                 stages=[stage])
    assert len(events) == 4, "a stage with nothing pending runs no setup"
